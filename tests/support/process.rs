//! Child processes of the tests: reaped on drop, their stdout read line by
//! line, their exit awaited with a bound.

use std::io::{BufRead, BufReader};
use std::process::{Child, ExitStatus};
use std::sync::mpsc::{Receiver, channel};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How often an exit is polled for: short against every wait the tests
/// bound, long enough not to spin.
const POLL_MS: u64 = 20;

/// Kills a child on drop, so a failing test leaves nothing running.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lines of a child's stdout as they come, read by a thread.
pub fn lines_of(child: &mut Child) -> Receiver<String> {
    let out = child.stdout.take().expect("piped stdout");
    let (send, receive) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if send.send(line).is_err() {
                return;
            }
        }
    });
    receive
}

/// The child's exit status once it exits, or `None` if it still runs after
/// `timeout` (it is left running).
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        sleep(Duration::from_millis(POLL_MS));
    }
}

/// Sends `signal` (`-TERM`, `-INT`, `-STOP`, ...) to the child.
pub fn signal(child: &Child, signal: &str) {
    let pid = child.id().to_string();
    let status = std::process::Command::new("kill").args([signal, &pid]).status().unwrap();
    assert!(status.success(), "kill {signal} {pid} failed");
}
