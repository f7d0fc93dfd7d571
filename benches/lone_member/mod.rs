//! One real member for the benches that attack a process: started from the
//! built binary with a debug log (the benches read its loop-time lines),
//! and waited for until it answers a status request.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use ember::client::{Client, Config};

/// Starts `bin serve` on `port` (peers on `port + 1`) with its data under
/// `dir` and its log in `log`; returns once it answers, or panics after
/// 30 s.
pub fn spawn(bin: &str, dir: &Path, port: u16, log: &Path) -> Child {
    let child = Command::new(bin)
        .args(["--log-level", "debug", "serve", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--listen-client-urls", &format!("127.0.0.1:{port}")])
        .args(["--listen-peer-urls", &format!("127.0.0.1:{}", port + 1)])
        .stderr(std::fs::File::create(log).unwrap())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn ember");
    let endpoint = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Client::connect(Config::new(vec![endpoint.clone()])).and_then(|mut c| c.status()).is_err()
    {
        assert!(Instant::now() < deadline, "ember did not start");
        sleep(Duration::from_millis(50));
    }
    child
}
