//! systemd notification (`sd_notify`) without libsystemd.
//!
//! systemd passes a datagram socket in `$NOTIFY_SOCKET`: a filesystem path, or
//! an abstract socket name written with a leading `@` (Linux only; the `@`
//! stands for the leading NUL byte of the kernel's name). Each notification is
//! one datagram of `KEY=VALUE` lines. The node sends:
//!
//! - `READY=1` once it serves clients (for `Type=notify` units),
//! - `WATCHDOG=1` from the loop at half of `$WATCHDOG_USEC`, so that one late
//!   iteration does not get the service killed,
//! - `STOPPING=1` when a shutdown begins,
//! - `STATUS=...` as a one-line human summary shown by `systemctl status`.
//!
//! When `$NOTIFY_SOCKET` is unset every call is a no-op: the same binary runs
//! under systemd, under another supervisor or in a terminal.
//!
//! The environment is read through a function the caller passes in (usually
//! `flags::process_env`), so tests need not touch the process environment.
//! `WatchdogTimer` tells the loop when the next `WATCHDOG=1` is due, with
//! time passed in like everywhere else in the loop.

use std::fmt;
use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

/// The longest `STATUS=` text sent. systemd truncates long status lines in its
/// own output anyway; the cap keeps a datagram far below the socket's limit.
pub const STATUS_TEXT_BYTES_MAX: usize = 256;

/// Why a notification could not be set up or sent.
#[derive(Debug)]
pub enum NotifyError {
    /// `$NOTIFY_SOCKET` names something that is not a usable socket address.
    BadSocketName(String),
    /// `$WATCHDOG_USEC` is not a positive integer.
    BadWatchdogUsec(String),
    /// The datagram could not be sent.
    Io(io::Error),
}

impl fmt::Display for NotifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotifyError::BadSocketName(name) => write!(f, "invalid NOTIFY_SOCKET {name:?}"),
            NotifyError::BadWatchdogUsec(text) => write!(f, "invalid WATCHDOG_USEC {text:?}"),
            NotifyError::Io(err) => write!(f, "sd_notify failed: {err}"),
        }
    }
}

impl std::error::Error for NotifyError {}

/// A connection to systemd's notification socket, or nothing.
#[derive(Debug)]
pub struct Notifier {
    /// `None` when `$NOTIFY_SOCKET` is unset: every send is a no-op.
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// A notifier that never sends anything.
    pub fn disabled() -> Notifier {
        Notifier { target: None }
    }

    /// Reads `$NOTIFY_SOCKET` through `env`. Unset or empty disables it.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Notifier, NotifyError> {
        match env("NOTIFY_SOCKET") {
            None => Ok(Notifier::disabled()),
            Some(name) if name.is_empty() => Ok(Notifier::disabled()),
            Some(name) => Notifier::to_socket(&name),
        }
    }

    /// A notifier sending to the socket `name` (a path, or `@abstract`).
    pub fn to_socket(name: &str) -> Result<Notifier, NotifyError> {
        let address = socket_address(name)?;
        let socket = UnixDatagram::unbound().map_err(NotifyError::Io)?;
        // A blocked notification must never stall the loop; systemd reads
        // its socket promptly, and a lost WATCHDOG=1 is retried next period.
        socket.set_nonblocking(true).map_err(NotifyError::Io)?;
        Ok(Notifier { target: Some((socket, address)) })
    }

    /// Whether notifications go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// `READY=1`: start-up is complete and the node serves clients.
    pub fn ready(&self) -> Result<(), NotifyError> {
        self.send("READY=1")
    }

    /// `WATCHDOG=1`: the loop is alive.
    pub fn watchdog(&self) -> Result<(), NotifyError> {
        self.send("WATCHDOG=1")
    }

    /// `STOPPING=1`: a clean shutdown has begun.
    pub fn stopping(&self) -> Result<(), NotifyError> {
        self.send("STOPPING=1")
    }

    /// `STATUS=text`, on one line and at most `STATUS_TEXT_BYTES_MAX` bytes.
    pub fn status(&self, text: &str) -> Result<(), NotifyError> {
        self.send(&status_line(text))
    }

    /// Sends one raw notification datagram (`KEY=VALUE` lines).
    pub fn send(&self, state: &str) -> Result<(), NotifyError> {
        let Some((socket, address)) = &self.target else { return Ok(()) };
        socket.send_to_addr(state.as_bytes(), address).map_err(NotifyError::Io)?;
        Ok(())
    }
}

/// `STATUS=` followed by `text` with line breaks turned into spaces (a line
/// break would start a new assignment) and cut at a character boundary.
pub fn status_line(text: &str) -> String {
    let mut line = String::from("STATUS=");
    for c in text.chars().map(|c| if c == '\n' || c == '\r' { ' ' } else { c }) {
        if line.len() - "STATUS=".len() + c.len_utf8() > STATUS_TEXT_BYTES_MAX {
            break;
        }
        line.push(c);
    }
    line
}

/// The kernel address for `$NOTIFY_SOCKET`: `@name` is abstract, anything
/// else must be an absolute path (systemd always passes one).
fn socket_address(name: &str) -> Result<SocketAddr, NotifyError> {
    let bad = || NotifyError::BadSocketName(name.to_string());
    if let Some(abstract_name) = name.strip_prefix('@') {
        return abstract_address(abstract_name.as_bytes()).ok_or_else(bad);
    }
    if !name.starts_with('/') {
        return Err(bad());
    }
    SocketAddr::from_pathname(name).map_err(|_| bad())
}

#[cfg(target_os = "linux")]
fn abstract_address(name: &[u8]) -> Option<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    if name.is_empty() {
        return None;
    }
    SocketAddr::from_abstract_name(name).ok()
}

#[cfg(not(target_os = "linux"))]
fn abstract_address(_name: &[u8]) -> Option<SocketAddr> {
    None // Abstract socket names exist only on Linux.
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, or `None` when
/// no watchdog is configured or it is meant for another process
/// (`$WATCHDOG_PID` names a different pid, as after a fork).
pub fn watchdog_interval(
    env: impl Fn(&str) -> Option<String>,
    own_pid: u32,
) -> Result<Option<Duration>, NotifyError> {
    let Some(text) = env("WATCHDOG_USEC") else { return Ok(None) };
    if let Some(pid) = env("WATCHDOG_PID")
        && pid.trim().parse::<u32>().ok() != Some(own_pid)
    {
        return Ok(None);
    }
    let usec: u64 = text.trim().parse().map_err(|_| NotifyError::BadWatchdogUsec(text.clone()))?;
    if usec == 0 {
        return Err(NotifyError::BadWatchdogUsec(text));
    }
    Ok(Some(Duration::from_micros(usec / 2)))
}

/// When the loop owes systemd its next `WATCHDOG=1`. Pure: the loop passes
/// the time in and folds `next_timeout` into its poll timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchdogTimer {
    /// Half of `$WATCHDOG_USEC`, from `watchdog_interval`.
    pub interval: Duration,
    /// Invariant: at most `interval` after the last ping (or the start).
    next_at: Instant,
}

impl WatchdogTimer {
    /// The first ping is due at once: start-up itself may have been slow.
    pub fn new(interval: Duration, now: Instant) -> WatchdogTimer {
        WatchdogTimer { interval, next_at: now }
    }

    /// Whether a ping is due; if so, the next one is scheduled from `now`.
    pub fn poll(&mut self, now: Instant) -> bool {
        if now < self.next_at {
            return false;
        }
        self.next_at = now + self.interval;
        true
    }

    /// Time until the next ping is due.
    pub fn next_timeout(&self, now: Instant) -> Duration {
        self.next_at.saturating_duration_since(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let pairs: Vec<(String, String)> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn unset_socket_is_a_no_op() {
        let notifier = Notifier::from_env(env_of(&[])).unwrap();
        assert!(!notifier.is_enabled());
        notifier.ready().unwrap();
        let notifier = Notifier::from_env(env_of(&[("NOTIFY_SOCKET", "")])).unwrap();
        assert!(!notifier.is_enabled());
    }

    #[test]
    fn relative_paths_and_empty_abstract_names_are_refused() {
        for name in ["run/notify", "@"] {
            let err = Notifier::to_socket(name).unwrap_err();
            assert!(matches!(err, NotifyError::BadSocketName(_)), "{name}: {err}");
        }
    }

    #[test]
    fn watchdog_interval_is_half_the_timeout() {
        let env = env_of(&[("WATCHDOG_USEC", "3000000")]);
        assert_eq!(watchdog_interval(&env, 7).unwrap(), Some(Duration::from_millis(1500)));
        assert_eq!(watchdog_interval(env_of(&[]), 7).unwrap(), None);
    }

    #[test]
    fn watchdog_for_another_pid_is_ignored() {
        let env = env_of(&[("WATCHDOG_USEC", "1000"), ("WATCHDOG_PID", "41")]);
        assert_eq!(watchdog_interval(&env, 42).unwrap(), None);
        assert_eq!(watchdog_interval(&env, 41).unwrap(), Some(Duration::from_micros(500)));
    }

    #[test]
    fn the_watchdog_timer_pings_once_per_interval() {
        let start = Instant::now();
        let mut timer = WatchdogTimer::new(Duration::from_secs(5), start);
        assert!(timer.poll(start));
        assert!(!timer.poll(start + Duration::from_secs(4)));
        assert_eq!(timer.next_timeout(start + Duration::from_secs(4)), Duration::from_secs(1));
        assert!(timer.poll(start + Duration::from_secs(6)));
        assert!(!timer.poll(start + Duration::from_secs(10)));
        assert!(timer.poll(start + Duration::from_secs(11)));
    }

    #[test]
    fn bad_watchdog_values_are_errors() {
        for text in ["", "abc", "0", "-5"] {
            let env = env_of(&[("WATCHDOG_USEC", text)]);
            assert!(watchdog_interval(env, 1).is_err(), "{text:?}");
        }
    }

    #[test]
    fn status_lines_stay_on_one_line_and_bounded() {
        assert_eq!(status_line("a\nb"), "STATUS=a b");
        let long = "é".repeat(STATUS_TEXT_BYTES_MAX);
        let line = status_line(&long);
        assert!(line.len() <= "STATUS=".len() + STATUS_TEXT_BYTES_MAX);
        assert!(line.len() > "STATUS=".len() + STATUS_TEXT_BYTES_MAX - 2);
    }

    fn received(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn notifications_reach_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("ember-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let systemd = UnixDatagram::bind(&path).unwrap();
        let env = env_of(&[("NOTIFY_SOCKET", path.to_str().unwrap())]);
        let notifier = Notifier::from_env(env).unwrap();
        assert!(notifier.is_enabled());
        notifier.ready().unwrap();
        notifier.watchdog().unwrap();
        notifier.status("serving").unwrap();
        notifier.stopping().unwrap();
        assert_eq!(received(&systemd), "READY=1");
        assert_eq!(received(&systemd), "WATCHDOG=1");
        assert_eq!(received(&systemd), "STATUS=serving");
        assert_eq!(received(&systemd), "STOPPING=1");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn notifications_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("ember-notify-test-{}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let systemd = UnixDatagram::bind_addr(&address).unwrap();
        let socket_name = format!("@{name}");
        let env = env_of(&[("NOTIFY_SOCKET", socket_name.as_str())]);
        let notifier = Notifier::from_env(env).unwrap();
        notifier.ready().unwrap();
        notifier.stopping().unwrap();
        assert_eq!(received(&systemd), "READY=1");
        assert_eq!(received(&systemd), "STOPPING=1");
    }

    #[test]
    fn a_missing_socket_is_an_error_not_a_panic() {
        let notifier = Notifier::to_socket("/nonexistent/ember/notify.sock").unwrap();
        assert!(matches!(notifier.ready(), Err(NotifyError::Io(_))));
    }
}
