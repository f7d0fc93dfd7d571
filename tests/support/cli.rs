//! The `ember` binary as the tests run it: arguments in, exit code and
//! captured output back, so a test checks exactly what an operator or a
//! script would see.
//!
//! `node` runs commands against real `ember serve` processes, `fake`
//! against the in-process fake server of `client_fake`; they differ only in
//! the timeouts that suit each. `Running` is a command that runs until it is
//! interrupted (watch, keep-alive).

use std::io::{ErrorKind, Write};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use super::process::{Reaped, lines_of, signal, wait_exit};

/// `ember` itself, with the variables that would point it at other servers
/// or another output format cleared, so the environment the tests run in
/// cannot change what they see.
fn command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ember"));
    command.env_remove("EMBER_ENDPOINTS").env_remove("EMBER_W");
    command
}

/// Runs `ember` with `args` and `stdin` as its input.
pub fn run_with_stdin(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = command()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ember");
    let mut input = child.stdin.take().expect("stdin");
    // A command that fails before it reads (a usage error) closes the pipe;
    // its exit code and output are what the test checks.
    if let Err(e) = input.write_all(stdin) {
        assert_eq!(e.kind(), ErrorKind::BrokenPipe, "write ember's stdin: {e}");
    }
    drop(input);
    child.wait_with_output().expect("ember output")
}

pub fn run(args: &[&str]) -> Output {
    run_with_stdin(args, b"")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `ember --endpoints <endpoints> <flags> <args>`.
fn at(endpoints: &str, flags: &[&str], args: &[&str], stdin: &[u8]) -> Output {
    let all: Vec<&str> =
        ["--endpoints", endpoints].iter().chain(flags).chain(args).copied().collect();
    run_with_stdin(&all, stdin)
}

/// A command that runs until it is interrupted; killed on drop.
pub struct Running {
    process: Reaped,
    /// Its stdout, a line at a time.
    pub lines: Receiver<String>,
}

impl Running {
    /// `ember --endpoints <endpoints> <args>`.
    pub fn start(endpoints: &str, args: &[&str]) -> Running {
        let child = command()
            .args(["--endpoints", endpoints])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ember starts");
        let mut process = Reaped(child);
        let lines = lines_of(&mut process.0);
        Running { process, lines }
    }

    /// Ctrl-C: SIGINT, then its exit status, or `None` if it still runs
    /// after `timeout`.
    pub fn interrupt(&mut self, timeout: Duration) -> Option<ExitStatus> {
        signal(&self.process.0, "-INT");
        wait_exit(&mut self.process.0, timeout)
    }
}

/// Commands against real `ember serve` processes.
pub mod node {
    use super::super::cluster::Cluster;
    use super::*;

    /// How long a new node may take to elect itself: a few election timeouts.
    const LEADER_WAIT: Duration = Duration::from_secs(10);

    /// One started node and its endpoint, once it answers as leader.
    pub fn single(test: &str) -> (Cluster, String) {
        let cluster = Cluster::start(test, 1, &[]);
        cluster.wait_leader(LEADER_WAIT);
        let endpoint = cluster.endpoints()[0].clone();
        (cluster, endpoint)
    }

    /// On loopback a dial succeeds at once or never; a write may wait for
    /// an election, which takes a few election timeouts at worst.
    const TIMEOUT_FLAGS: &[&str] = &["--dial-timeout", "1s", "--command-timeout", "5s"];

    pub fn ember_with_stdin(endpoints: &str, args: &[&str], stdin: &[u8]) -> Output {
        at(endpoints, TIMEOUT_FLAGS, args, stdin)
    }

    pub fn ember(endpoints: &str, args: &[&str]) -> Output {
        ember_with_stdin(endpoints, args, b"")
    }

    /// Runs a command that must succeed; its stdout.
    pub fn ok(endpoints: &str, args: &[&str]) -> String {
        let output = ember(endpoints, args);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{args:?}: {}{}",
            stdout(&output),
            stderr(&output)
        );
        String::from_utf8(output.stdout).expect("ember prints UTF-8")
    }
}

/// Commands against the in-process fake server.
pub mod fake {
    use super::*;

    /// The fake answers at once or not at all; the command timeout is left
    /// to each test (some pass their own).
    const TIMEOUT_FLAGS: &[&str] = &["--dial-timeout", "500ms"];

    pub fn ember_with_stdin(endpoints: &str, args: &[&str], stdin: &[u8]) -> Output {
        at(endpoints, TIMEOUT_FLAGS, args, stdin)
    }

    pub fn ember(endpoints: &str, args: &[&str]) -> Output {
        ember_with_stdin(endpoints, args, b"")
    }
}

/// The `EMBER_X="v"` lines `ember member add` prints, as (name, value).
pub fn env_lines(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.starts_with("EMBER_"))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}
