//! Printing shared by the client commands: JSON strings, Go-style durations
//! and byte sizes as etcdctl shows them, durations read from flags, and the
//! client configuration every client command builds from the global flags.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;

use super::CliError;
use crate::client::{Client, ClientError, Config, any_https, parse_endpoints};
use crate::flags::{Parsed, process_env};
use crate::tls::ClientFiles;

/// Where the client commands connect when neither `--endpoints` nor
/// `EMBER_ENDPOINTS` says otherwise.
pub const DEFAULT_ENDPOINTS: &str = "127.0.0.1:7379";

/// The client configuration from `--endpoints`, `--dial-timeout`,
/// `--command-timeout` and the TLS flags (each also from `EMBER_<FLAG>`).
pub fn client_config(parsed: &Parsed) -> Result<Config, CliError> {
    let list = parsed.value("endpoints", process_env).unwrap_or(DEFAULT_ENDPOINTS.to_string());
    let endpoints = parse_endpoints(&list).map_err(|error| CliError::Usage(error.to_string()))?;
    let mut config = Config::new(endpoints);
    config.tls = client_tls(parsed, any_https(&list))?;
    if let Some(text) = parsed.value("dial-timeout", process_env) {
        config.dial_timeout = flag_duration("dial-timeout", &text)?;
    }
    if let Some(text) = parsed.value("command-timeout", process_env) {
        config.command_timeout = flag_duration("command-timeout", &text)?;
    }
    config.credentials = super::auth::credentials(parsed)?;
    Ok(config)
}

/// The TLS configuration of `--cacert`, `--cert`, `--key` and
/// `--insecure-skip-tls-verify`; `None` (plain TCP) when none is given and
/// no endpoint is `https://`.
fn client_tls(parsed: &Parsed, https: bool) -> Result<Option<Arc<ClientConfig>>, CliError> {
    let path = |flag| parsed.value(flag, process_env).map(PathBuf::from);
    let insecure = parsed.switch("insecure-skip-tls-verify", process_env)?;
    let files = ClientFiles {
        ca: path("cacert"),
        cert: path("cert"),
        key: path("key"),
        insecure_skip_verify: insecure,
    };
    if files == ClientFiles::default() {
        if https {
            let reason = "https:// endpoints need --cacert (or --insecure-skip-tls-verify)";
            return Err(CliError::Usage(reason.to_string()));
        }
        return Ok(None);
    }
    if insecure {
        eprintln!(
            "WARNING: --insecure-skip-tls-verify: the server's certificate is not checked; \
             anyone on the network path can read and change this traffic"
        );
    }
    let config = files.load().map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(Some(config))
}

/// A client connected to the first reachable endpoint.
pub fn connect(parsed: &Parsed) -> Result<Client, CliError> {
    Client::connect(client_config(parsed)?).map_err(failed)
}

/// A failed client call, as the one line the command prints.
pub fn failed(error: ClientError) -> CliError {
    CliError::Failed(error.to_string())
}

/// A failed write, as the one line the command prints. A write that may
/// have been applied all the same (its answer lost, or the server's
/// deadline passed first) says so and exits apart from a failure.
pub fn write_failed(error: ClientError) -> CliError {
    if !error.outcome_unknown() {
        return failed(error);
    }
    let error = match error {
        ClientError::Server { endpoint, error } => {
            ClientError::OutcomeUnknown { endpoint, cause: error.to_string() }
        }
        other => other,
    };
    CliError::OutcomeUnknown(error.to_string())
}

/// A duration flag: `500ms`, `2s`, `1.5s`, `1m`, or a bare number of
/// seconds, as etcdctl's timeouts are written.
pub fn flag_duration(flag: &'static str, text: &str) -> Result<Duration, CliError> {
    let bad = || {
        CliError::Usage(format!(
            "invalid value {text:?} for --{flag}: expected a duration like 500ms, 2s or 1m"
        ))
    };
    let (number, unit_secs) = if let Some(number) = text.strip_suffix("ms") {
        (number, 0.001)
    } else if let Some(number) = text.strip_suffix('s') {
        (number, 1.0)
    } else if let Some(number) = text.strip_suffix('m') {
        (number, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    let secs = value * unit_secs;
    if !secs.is_finite() || secs <= 0.0 || secs > 86_400.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A numeric flag, or its default when absent.
pub fn flag_number<T: std::str::FromStr>(
    parsed: &Parsed,
    flag: &'static str,
    default: T,
) -> Result<T, CliError> {
    match parsed.value(flag, process_env) {
        None => Ok(default),
        Some(text) => text
            .parse()
            .map_err(|_| CliError::Usage(format!("invalid value {text:?} for --{flag}"))),
    }
}

/// `text` as a JSON string literal, escaped as Go's `json.Marshal` (so
/// etcdctl) escapes it: `<`, `>` and `&` too, so the text is safe inside
/// HTML, and the line and paragraph separators U+2028 and U+2029, which
/// end a line in JavaScript.
pub fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}') => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A duration the way Go prints one (`812.5µs`, `2.046381ms`, `1.5s`), as
/// etcdctl's health lines show it.
pub fn go_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    let (value, unit) = match nanos {
        0..1_000 => return format!("{nanos}ns"),
        1_000..1_000_000 => (nanos as f64 / 1e3, "µs"),
        1_000_000..1_000_000_000 => (nanos as f64 / 1e6, "ms"),
        _ => (nanos as f64 / 1e9, "s"),
    };
    let text = format!("{value:.6}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}{unit}")
}

/// Bytes in SI units as etcdctl prints sizes: `4.1 kB`, `25 MB`.
pub fn si_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    if bytes < 10 {
        return format!("{bytes} B");
    }
    let exponent = ((bytes as f64).log10() / 3.0).floor() as usize;
    let exponent = exponent.min(UNITS.len() - 1);
    let value = bytes as f64 / 1000f64.powi(exponent as i32);
    if value < 10.0 {
        format!("{value:.1} {}", UNITS[exponent])
    } else {
        format!("{value:.0} {}", UNITS[exponent])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_etcdctl() {
        assert_eq!(flag_duration("t", "500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(flag_duration("t", "2s").unwrap(), Duration::from_secs(2));
        assert_eq!(flag_duration("t", "1m").unwrap(), Duration::from_secs(60));
        assert_eq!(flag_duration("t", "3").unwrap(), Duration::from_secs(3));
        for bad in ["", "0s", "-1s", "fast", "1h", "NaNs"] {
            assert!(flag_duration("t", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_print_like_go() {
        assert_eq!(go_duration(Duration::from_nanos(812)), "812ns");
        assert_eq!(go_duration(Duration::from_nanos(812_500)), "812.5µs");
        assert_eq!(go_duration(Duration::from_nanos(2_046_381)), "2.046381ms");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
    }

    #[test]
    fn sizes_and_strings() {
        assert_eq!(si_bytes(0), "0 B");
        assert_eq!(si_bytes(4096), "4.1 kB");
        assert_eq!(si_bytes(25_000_000), "25 MB");
        assert_eq!(json_string("a\"b\\\n\u{1}"), r#""a\"b\\\n\u0001""#);
        assert_eq!(json_string("<a>&\u{2028}é"), r#""\u003ca\u003e\u0026\u2028é""#);
    }
}
