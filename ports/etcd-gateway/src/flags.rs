//! Command-line flags, with etcd's names where etcd has one.

use std::path::PathBuf;
use std::time::Duration;

use ember::tls::{ClientFiles, ServerFiles};

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

  --listen-client-urls ADDR   where etcd clients connect (default 127.0.0.1:2379);
                              https://ADDR serves TLS and needs --cert-file
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

TLS on the gateway's listener, as etcd's flags:
  --cert-file FILE            the gateway's certificate (PEM)
  --key-file FILE             its private key (PEM)
  --trusted-ca-file FILE      CA bundle client certificates must chain to
  --client-cert-auth          refuse clients without such a certificate
  --tls-min-version V         TLS1.2 or TLS1.3 (default TLS1.3): the oldest TLS
                              the listener takes (TLS 1.2: ECDHE, AEAD only)
  --tls-max-version V         TLS1.2 or TLS1.3 (default TLS1.3): the newest it
                              speaks
The certificate, key and CA files are loaded again on SIGHUP, and when they
change (looked at every minute).

TLS to members whose client port speaks it (https:// endpoints), as ember's:
  --cacert FILE               CA bundle the members' certificates must chain to
  --cert FILE, --key FILE     a certificate and key to show the members
  --insecure-skip-tls-verify  do not check the members' certificates (anyone on
                              the path can then read and change the traffic)

  -h, --help                  this text

Every flag also reads EMBER_ETCD_<FLAG> (upper case, '-' as '_').
";

#[derive(Clone, Debug)]
pub struct Settings {
    pub listen_addr: String,
    /// TLS on the listener (`https://` in `--listen-client-urls`).
    pub listener_tls: Option<ServerFiles>,
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
    "cert-file",
    "key-file",
    "trusted-ca-file",
    "client-cert-auth",
    "tls-min-version",
    "tls-max-version",
    "cacert",
    "cert",
    "key",
    "insecure-skip-tls-verify",
];

/// Flags that take no value: given alone they mean `true`.
const SWITCHES: &[&str] = &["client-cert-auth", "insecure-skip-tls-verify"];

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
            None if SWITCHES.contains(&flag) => (flag, "true".to_string()),
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

fn switch(values: &[(&str, String)], flag: &str) -> Result<bool, String> {
    match value(values, flag, "false").as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(format!("--{flag} is true or false, not {other:?}")),
    }
}

fn path(values: &[(&str, String)], flag: &str) -> Option<PathBuf> {
    Some(value(values, flag, "")).filter(|path| !path.is_empty()).map(PathBuf::from)
}

/// etcd's listener flags. TLS is served exactly when the listen URL says
/// `https://`; a certificate without it, or it without a certificate, is a
/// mistake the gateway refuses to start on rather than guess.
fn listener_tls(values: &[(&str, String)], https: bool) -> Result<Option<ServerFiles>, String> {
    let (cert, key) = (path(values, "cert-file"), path(values, "key-file"));
    let trusted_ca = path(values, "trusted-ca-file");
    let client_cert_auth = switch(values, "client-cert-auth")?;
    // The node's rule and parser: TLS 1.3 unless TLS 1.2 is asked for.
    let given = |flag| Some(value(values, flag, "")).filter(|v| !v.is_empty());
    let versions = ember::server::config::parse_tls_versions(
        given("tls-min-version"),
        given("tls-max-version"),
    )
    .map_err(|e| e.to_string())?;
    let (cert, key) = match (https, cert, key) {
        (false, None, None) if trusted_ca.is_none() && !client_cert_auth => return Ok(None),
        (false, ..) => {
            return Err("--cert-file, --key-file, --trusted-ca-file and --client-cert-auth \
                        need an https:// --listen-client-urls"
                .to_string());
        }
        (true, Some(cert), Some(key)) => (cert, key),
        (true, ..) => return Err("https:// needs --cert-file and --key-file".to_string()),
    };
    if client_cert_auth && trusted_ca.is_none() {
        return Err("--client-cert-auth needs --trusted-ca-file".to_string());
    }
    Ok(Some(ServerFiles { cert, key, trusted_ca, client_cert_auth, versions }))
}

/// ember's client flags for members whose client port speaks TLS.
fn member_tls(values: &[(&str, String)], https: bool) -> Result<crate::link::MemberTls, String> {
    let files = ClientFiles {
        ca: path(values, "cacert"),
        cert: path(values, "cert"),
        key: path(values, "key"),
        insecure_skip_verify: switch(values, "insecure-skip-tls-verify")?,
    };
    if files == ClientFiles::default() {
        if https {
            return Err("https:// endpoints need --cacert (or --insecure-skip-tls-verify)".into());
        }
        return Ok(None);
    }
    if files.insecure_skip_verify {
        eprintln!(
            "ember-etcd: WARNING: --insecure-skip-tls-verify: the members' certificates are not \
             checked; anyone on the network path can read and change this traffic"
        );
    }
    files.load().map(Some).map_err(|error| error.to_string())
}

fn settings(values: &[(&str, String)]) -> Result<Settings, String> {
    // One address, in the endpoint spellings etcd accepts: the gateway
    // listens on one port.
    let listen = value(values, "listen-client-urls", "127.0.0.1:2379");
    let listen_addr = ember::client::parse_endpoint(&listen)
        .map_err(|error| format!("--listen-client-urls: {error}"))?;
    let listener_tls = listener_tls(values, ember::client::any_https(&listen))?;
    let endpoints_text = value(values, "endpoints", "127.0.0.1:7379");
    let endpoints = ember::client::parse_endpoints(&endpoints_text)
        .map_err(|error| format!("--endpoints: {error}"))?;
    let member_tls = member_tls(values, ember::client::any_https(&endpoints_text))?;
    let max_concurrent_streams = count(values, "max-concurrent-streams", "1024")?;
    let scheme = if listener_tls.is_some() { "https" } else { "http" };
    let advertised = value(values, "advertise-client-urls", &format!("{scheme}://{listen_addr}"));
    let advertise_client_urls = advertised
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(String::from)
        .collect();
    Ok(Settings {
        listen_addr,
        listener_tls,
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
            member_tls,
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

    #[test]
    fn tls_is_served_exactly_when_the_url_says_https() {
        let https_without_cert = args(&["--listen-client-urls", "https://127.0.0.1:1"]);
        assert!(parse(&https_without_cert).is_err());
        let cert_without_https = args(&["--cert-file", "c.pem", "--key-file", "k.pem"]);
        assert!(parse(&cert_without_https).is_err());
        let auth_without_ca = args(&[
            "--listen-client-urls=https://127.0.0.1:1",
            "--cert-file=c.pem",
            "--key-file=k.pem",
            "--client-cert-auth",
        ]);
        assert!(parse(&auth_without_ca).is_err());
        let Ok(Parsed::Run(settings)) = parse(&args(&[
            "--listen-client-urls=https://127.0.0.1:1",
            "--cert-file=c.pem",
            "--key-file=k.pem",
            "--trusted-ca-file=ca.pem",
            "--client-cert-auth",
        ])) else {
            panic!("TLS flags refused");
        };
        let files = settings.listener_tls.expect("TLS on the listener");
        assert!(files.client_cert_auth);
        assert_eq!(settings.advertise_client_urls, ["https://127.0.0.1:1"]);
        let tls = ["--listen-client-urls=https://127.0.0.1:1", "--cert-file=c", "--key-file=k"];
        for (version, ok) in [("TLS1.2", true), ("TLS1.3", true), ("TLS1.1", false)] {
            let flags = args(&[&tls[..], &["--tls-min-version", version]].concat());
            assert_eq!(parse(&flags).is_ok(), ok, "{version}");
        }
        let capped = args(&[&tls[..], &["--tls-max-version", "TLS1.2"]].concat());
        assert!(parse(&capped).is_err(), "a maximum below the default minimum");
        let https_members = args(&["--endpoints", "https://127.0.0.1:2"]);
        assert!(parse(&https_members).is_err(), "https:// members need a CA");
    }
}
