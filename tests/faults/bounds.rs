//! Resource bounds of the members while a scenario runs: a thread samples
//! each live member's resident memory (`VmRSS` of /proc/<pid>/status) and
//! open descriptors (entries of /proc/<pid>/fd) every `SAMPLE_EVERY`, and
//! keeps the maxima. A leak shows as a maximum past the bound, since a
//! scenario of seconds at a few hundred writes a second never comes near.
//!
//! The bounds are generous on purpose: a member of this test holds a few
//! thousand small keys, a WAL map of a segment or two, and a few dozen
//! sockets. 128 MiB and 256 descriptors are several times what a healthy
//! member uses, and far below what a board would tolerate.

use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

pub use crate::support::cluster::Pids;

/// The most resident memory a member may use during a scenario.
pub const RSS_BYTES_MAX: u64 = 128 * 1024 * 1024;
/// The most file descriptors a member may hold open during a scenario.
pub const FDS_MAX: usize = 256;
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// The largest values seen across all members.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Maxima {
    pub rss_bytes: u64,
    pub fds: usize,
    pub samples: u64,
}

pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Maxima>,
}

impl Sampler {
    pub fn start(pids: Pids) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut maxima = Maxima::default();
            while !flag.load(Ordering::Relaxed) {
                let live: Vec<u32> = pids.lock().unwrap().iter().flatten().copied().collect();
                for pid in live {
                    sample(pid, &mut maxima);
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
            maxima
        });
        Sampler { stop, thread }
    }

    pub fn finish(self) -> Maxima {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the sampler does not panic")
    }
}

/// Adds one process's figures; a process that died in between is skipped.
fn sample(pid: u32, maxima: &mut Maxima) {
    let Some(rss_bytes) = rss_bytes(pid) else { return };
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else { return };
    maxima.rss_bytes = maxima.rss_bytes.max(rss_bytes);
    maxima.fds = maxima.fds.max(fds.count());
    maxima.samples += 1;
}

/// `VmRSS:   12345 kB` of /proc/<pid>/status, in bytes.
fn rss_bytes(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Why the maxima break a bound, if they do.
pub fn check(maxima: &Maxima) -> Result<(), String> {
    if maxima.samples == 0 {
        return Err("no member was ever sampled".to_string());
    }
    if maxima.rss_bytes > RSS_BYTES_MAX {
        return Err(format!("a member's RSS reached {} bytes", maxima.rss_bytes));
    }
    if maxima.fds > FDS_MAX {
        return Err(format!("a member held {} open files", maxima.fds));
    }
    Ok(())
}
