//! One real member for the benches that attack a process: started from the
//! built binary with a debug log (its loop-time lines are read back), and
//! the latency figures those benches print.

// Each bench that includes this module uses only part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use ember::client::{Client, Config};

/// How often the member logs its longest loop iteration.
pub const LOOP_WINDOW: Duration = Duration::from_secs(10);

/// The log line that carries a window's longest iteration.
const WINDOW_LINE: &str = "longest loop iteration of the last";

pub struct LoneMember {
    pub child: Child,
    log: PathBuf,
    started: Instant,
}

impl LoneMember {
    /// Starts `bin serve` on `port` (peers on `port + 1`) with its data
    /// under `dir` and its log in `dir/<name>.log`; returns once it
    /// answers, or panics after 30 s.
    pub fn spawn(bin: &str, dir: &Path, port: u16, name: &str) -> LoneMember {
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(bin)
            .args(["--log-level", "debug", "serve", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--listen-client-urls", &format!("127.0.0.1:{port}")])
            .args(["--listen-peer-urls", &format!("127.0.0.1:{}", port + 1)])
            .stderr(std::fs::File::create(&log).unwrap())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn ember");
        let endpoint = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Client::connect(Config::new(vec![endpoint.clone()]))
            .and_then(|mut c| c.status())
            .is_err()
        {
            assert!(Instant::now() < deadline, "ember did not start");
            sleep(Duration::from_millis(50));
        }
        LoneMember { child, log, started: Instant::now() }
    }

    /// Waits for the member's first loop-time window (start-up: applying
    /// the log it recovered) to close, so later windows are the bench's.
    pub fn past_first_window(&self) {
        let boundary = self.started + LOOP_WINDOW + Duration::from_millis(500);
        sleep(boundary.saturating_duration_since(Instant::now()));
    }

    /// Waits for the window under way to be logged.
    pub fn wait_window_end(&self) {
        let windows = self.started.elapsed().as_millis() / LOOP_WINDOW.as_millis() + 1;
        let boundary = self.started + LOOP_WINDOW * windows as u32 + Duration::from_millis(500);
        sleep(boundary.saturating_duration_since(Instant::now()));
    }

    /// Loop-time windows logged so far.
    pub fn windows_logged(&self) -> usize {
        self.window_lines().len()
    }

    /// SIGTERMs the member and returns the longest iteration of the
    /// windows after the first `skip`.
    pub fn stop(&mut self, skip: usize) -> Option<u64> {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
            }
            sleep(Duration::from_millis(20));
        }
        let windows = self.window_lines().into_iter().skip(skip);
        windows.filter_map(|l| l.split_whitespace().rev().nth(1)?.parse().ok()).max()
    }

    fn window_lines(&self) -> Vec<String> {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines().filter(|l| l.contains(WINDOW_LINE)).map(String::from).collect()
    }
}

/// Latencies of one kind of request, in microseconds.
#[derive(Clone, Copy, Default)]
pub struct Figures {
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub failed: usize,
}

pub fn figures(mut took: Vec<Duration>, failed: usize) -> Figures {
    took.sort();
    let at = |q: f64| match took.is_empty() {
        true => 0,
        false => took[((took.len() - 1) as f64 * q) as usize].as_micros() as u64,
    };
    Figures { p50_us: at(0.5), p99_us: at(0.99), max_us: at(1.0), failed }
}
