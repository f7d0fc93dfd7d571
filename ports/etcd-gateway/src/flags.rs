//! Command-line flags, with etcd's names where etcd has one.

use std::time::Duration;

use crate::backend::BackendConfig;

/// The largest gRPC message the gateway decodes: etcd's default request
/// limit (1.5 MiB) plus the 512 KiB it allows for gRPC's own framing.
/// Between the node's limit and this, a request gets etcd's "request is too
/// large"; beyond it, gRPC's own ResourceExhausted, as with etcd.
pub const GRPC_MESSAGE_BYTES_MAX: usize = (1536 + 512) * 1024;

pub const HELP: &str = "\
Usage: ember-etcd [flags]

Serves etcd's v3 gRPC API (KV, Watch, Lease, Cluster, Maintenance, Auth),
etcd's JSON API (POST /v3/kv/range and the rest) and GET /version, /health
on one port, in front of Ember members.

  --listen-client-urls ADDR   where etcd clients connect (default 127.0.0.1:2379)
  --advertise-client-urls URLS  the gateway's URLs as clients should dial them,
                              listed as every started member's client URLs
                              (default http:// and the listen address)
  --endpoints LIST            Ember members' client addresses, comma-separated
                              (default 127.0.0.1:7379)
  --etcd-version V            the etcd version reported by Status and /version
                              (default 3.5.13; Kubernetes enables features by it)
  --backend-connections N     pipelined connections for unary calls (default 1:
                              one connection batches best, so the member
                              commits more writes per fsync)
  --request-timeout-ms N      how long a request waits for its member before
                              the gateway gives up on that member's
                              connection; reads are tried on the next
                              endpoint (default 5000)
  --max-watch-streams N       concurrent Watch streams, each with its own
                              connection to a member (default 1024)
  --watch-buffer-frames N     frames one watch stream may have waiting (default 256)
  --max-concurrent-streams N  gRPC streams per client connection (default 1024)
  --max-token-connections N   connections bound to users' tokens: calls that
                              carry a token (etcd's `token` metadata, or the
                              JSON API's Authorization header) act as its
                              user on one of them; the least recently used
                              is closed first (default 64)
  -h, --help                  this text

Every flag also reads EMBER_ETCD_<FLAG> (upper case, '-' as '_').
";

#[derive(Clone, Debug)]
pub struct Settings {
    pub listen_addr: String,
    pub advertise_client_urls: Vec<String>,
    pub etcd_version: String,
    pub backend: BackendConfig,
    pub max_watch_streams: usize,
    pub max_concurrent_streams: u32,
    /// HTTP/2 pings to idle clients, and how long an answer may take.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
}

pub enum Parsed {
    Run(Box<Settings>),
    Help,
}

const FLAGS: &[&str] = &[
    "listen-client-urls",
    "advertise-client-urls",
    "endpoints",
    "etcd-version",
    "backend-connections",
    "max-watch-streams",
    "watch-buffer-frames",
    "request-timeout-ms",
    "max-concurrent-streams",
    "max-token-connections",
];

pub fn parse(args: &[String]) -> Result<Parsed, String> {
    let mut values: Vec<(&str, String)> = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(Parsed::Help);
        }
        let Some(flag) = arg.strip_prefix("--") else {
            return Err(format!("unexpected argument {arg:?}"));
        };
        let (name, value) = match flag.split_once('=') {
            Some((name, value)) => (name, value.to_string()),
            None => (flag, rest.next().ok_or(format!("--{flag} needs a value"))?.clone()),
        };
        let Some(&known) = FLAGS.iter().find(|&&known| known == name) else {
            return Err(format!("unknown flag --{name}"));
        };
        values.push((known, value));
    }
    Ok(Parsed::Run(Box::new(settings(&values)?)))
}

/// The value of `flag`: the command line, then the environment, then the default.
fn value(values: &[(&str, String)], flag: &str, default: &str) -> String {
    if let Some((_, value)) = values.iter().rev().find(|(name, _)| *name == flag) {
        return value.clone();
    }
    let variable = format!("EMBER_ETCD_{}", flag.to_uppercase().replace('-', "_"));
    std::env::var(variable).unwrap_or_else(|_| default.to_string())
}

fn count(values: &[(&str, String)], flag: &str, default: &str) -> Result<usize, String> {
    let text = value(values, flag, default);
    match text.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("--{flag} wants a positive number, not {text:?}")),
    }
}

fn settings(values: &[(&str, String)]) -> Result<Settings, String> {
    // One address, in the endpoint spellings etcd accepts: the gateway
    // listens on one port.
    let listen = value(values, "listen-client-urls", "127.0.0.1:2379");
    let listen_addr = ember::client::parse_endpoint(&listen)
        .map_err(|error| format!("--listen-client-urls: {error}"))?;
    let endpoints = ember::client::parse_endpoints(&value(values, "endpoints", "127.0.0.1:7379"))
        .map_err(|error| format!("--endpoints: {error}"))?;
    let max_concurrent_streams = count(values, "max-concurrent-streams", "1024")?;
    let advertised = value(values, "advertise-client-urls", &format!("http://{listen_addr}"));
    let advertise_client_urls = advertised
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(String::from)
        .collect();
    Ok(Settings {
        listen_addr,
        advertise_client_urls,
        etcd_version: value(values, "etcd-version", "3.5.13"),
        backend: BackendConfig {
            endpoints,
            links: count(values, "backend-connections", "1")?,
            max_in_flight: ember::client::IN_FLIGHT_MAX_DEFAULT,
            dial_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_millis(
                count(values, "request-timeout-ms", "5000")? as u64
            ),
            watch_buffer_frames: count(values, "watch-buffer-frames", "256")?,
            max_token_links: count(values, "max-token-connections", "64")?,
        },
        max_watch_streams: count(values, "max-watch-streams", "1024")?,
        max_concurrent_streams: u32::try_from(max_concurrent_streams).unwrap_or(u32::MAX),
        keepalive_interval: Duration::from_secs(30),
        keepalive_timeout: Duration::from_secs(10),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_take_both_spellings_and_refuse_strangers() {
        let Ok(Parsed::Run(settings)) =
            parse(&args(&["--listen-client-urls=http://0.0.0.0:2379", "--endpoints", "a:1,b:2"]))
        else {
            panic!("flags refused");
        };
        assert_eq!(settings.listen_addr, "0.0.0.0:2379");
        assert_eq!(settings.backend.endpoints, ["a:1", "b:2"]);
        assert!(parse(&args(&["--nope", "1"])).is_err());
        assert!(parse(&args(&["--backend-connections", "0"])).is_err());
        assert!(parse(&args(&["--endpoints"])).is_err());
    }
}
