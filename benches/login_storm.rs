//! A login storm against a real `ember serve` with auth on, while a
//! legitimate client writes: many clients log in at once, most with a
//! wrong password, some with the right one, as a password-guessing
//! attack beside a fleet reconnecting.
//!
//! Prints `name=value` lines: the cost of one login's hash here (the
//! member's default PBKDF2 cost), the logins answered per second during
//! the storm (by outcome), the legitimate client's put latency (p50, p99,
//! max) before and during, and the member's longest loop iteration during
//! the storm (from the lines it logs every 10 s at debug level, the
//! windows that closed after the storm began). `EMBER_BIN` names the binary (default
//! `target/release/ember`); `EMBER_BENCH_STORM_CLIENTS` the storming
//! clients (default 64).

mod lone_member;

use lone_member::{Figures, LoneMember, figures};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, sleep};
use std::time::{Duration, Instant};

use ember::auth::password::{ITERATIONS_DEFAULT, SALT_BYTES, StoredPassword};
use ember::client::{Client, Config, Credentials};
use ember::proto::{
    self, AuthenticateRequest, ErrorCode, Permission, PermissionType, Request, UserAddRequest,
};

/// The member's loop-time log interval (`LOOP_TIME_LOG_INTERVAL`).
/// Legitimate puts per latency sample.
const SAMPLE_OPS: usize = 300;
/// How long the storm runs before and while the sample is taken.
const STORM_WARMUP: Duration = Duration::from_secs(2);
/// One storming client in this many logs in with the right password.
const RIGHT_PASSWORD_ONE_IN: usize = 8;

fn main() {
    let bin = std::env::var("EMBER_BIN").unwrap_or_else(|_| "target/release/ember".into());
    let clients: usize =
        std::env::var("EMBER_BENCH_STORM_CLIENTS").ok().and_then(|n| n.parse().ok()).unwrap_or(64);
    let dir = std::env::temp_dir().join(format!("ember-login-storm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = 19_000 + (std::process::id() % 500) as u16 * 2;
    let endpoint = format!("127.0.0.1:{port}");

    let stored = StoredPassword::derive(b"pw", [7; SALT_BYTES], ITERATIONS_DEFAULT);
    let started = Instant::now();
    let _ = std::hint::black_box(stored.verify(b"pw"));
    println!("login_storm_pbkdf2_iterations={ITERATIONS_DEFAULT}");
    println!("login_storm_hash_ms={:.1}", started.elapsed().as_secs_f64() * 1e3);

    let mut node = LoneMember::spawn(&bin, &dir, port, "member");
    set_up(&endpoint);
    node.past_first_window();
    let mut writer = login(&endpoint, "writer", "writer-pw");
    let before = sample(&mut writer, "before");

    let stop = Arc::new(AtomicBool::new(false));
    let counts: Arc<[AtomicU64; 3]> = Arc::new(Default::default());
    let stormers: Vec<_> = (0..clients)
        .map(|i| {
            let (endpoint, stop, counts) = (endpoint.clone(), stop.clone(), counts.clone());
            let right = i % RIGHT_PASSWORD_ONE_IN == 0;
            thread::spawn(move || storm(&endpoint, right, &stop, &counts))
        })
        .collect();
    sleep(STORM_WARMUP);
    let storm_started = Instant::now();
    let windows_before = node.windows_logged();
    let counted_before: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let during = sample(&mut writer, "during");
    node.wait_window_end();
    let storm_secs = storm_started.elapsed().as_secs_f64();
    let counted: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    stop.store(true, Ordering::Relaxed);
    for stormer in stormers {
        let _ = stormer.join();
    }
    let longest_us = node.stop(windows_before);

    println!("login_storm_clients={clients}");
    for (n, outcome) in ["ok", "refused", "backoff_or_busy"].iter().enumerate() {
        let per_sec = (counted[n] - counted_before[n]) as f64 / storm_secs;
        println!("login_storm_logins_{outcome}_per_sec={per_sec:.0}");
    }
    for (when, f) in [("before", before), ("during", during)] {
        println!(
            "login_storm_{when}_put_us p50={} p99={} max={} failed={}",
            f.p50_us, f.p99_us, f.max_us, f.failed
        );
    }
    match longest_us {
        Some(us) => println!("login_storm_loop_longest_us={us}"),
        None => println!("login_storm_loop_longest_us=unknown"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Root; `writer`, who may write `legit/`; `victim`, whose password the
/// storm guesses; auth on.
fn set_up(endpoint: &str) {
    let mut admin = Client::connect(Config::new(vec![endpoint.to_string()])).unwrap();
    let mut run = |r: Request| admin.request(&r).unwrap_or_else(|e| panic!("{e}"));
    for name in ["root", "writer", "victim"] {
        let password = format!("{name}-pw");
        run(Request::UserAdd(UserAddRequest { name: name.into(), password, no_password: false }));
    }
    let grant = |user: &str, role: &str| {
        Request::UserGrantRole(proto::UserRoleRequest { user: user.into(), role: role.into() })
    };
    run(grant("root", "root"));
    run(Request::RoleAdd(proto::RoleRequest { role: "app".into() }));
    let (key, range_end) = (b"legit/".to_vec(), b"legit0".to_vec());
    let perm = Permission { perm_type: PermissionType::ReadWrite, key, range_end };
    run(Request::RoleGrantPermission(proto::RoleGrantPermissionRequest {
        role: "app".into(),
        perm,
    }));
    run(grant("writer", "app"));
    run(Request::AuthEnable);
}

fn login(endpoint: &str, user: &str, password: &str) -> Client {
    let mut config = Config::new(vec![endpoint.to_string()]);
    config.command_timeout = Duration::from_secs(5);
    config.credentials =
        Some(Credentials { user: user.into(), password: Some(password.into()), token: None });
    Client::connect(config).expect("log in")
}

/// Logs in over and over on one connection until stopped: as `writer`
/// with the right password, or as `victim` with a wrong one. Counts the
/// answers: accepted, refused, told to back off (or that the queue is
/// full).
fn storm(endpoint: &str, right: bool, stop: &AtomicBool, counts: &[AtomicU64; 3]) {
    let mut config = Config::new(vec![endpoint.to_string()]);
    config.command_timeout = Duration::from_secs(10);
    let Ok(mut client) = Client::connect(config) else { return };
    let (name, password) = match right {
        true => ("writer", "writer-pw"),
        false => ("victim", "guess"),
    };
    let request =
        Request::Authenticate(AuthenticateRequest { name: name.into(), password: password.into() });
    while !stop.load(Ordering::Relaxed) {
        let outcome = match client.request(&request) {
            Ok(_) => 0,
            Err(e) if e.code() == Some(ErrorCode::AuthFailed) => 1,
            Err(e) if e.code() == Some(ErrorCode::LoginBackoff) => 2,
            Err(_) => return,
        };
        counts[outcome].fetch_add(1, Ordering::Relaxed);
    }
}

/// The writer's puts, one at a time.
fn sample(client: &mut Client, tag: &str) -> Figures {
    let mut took = Vec::new();
    let mut failed = 0;
    for i in 0..SAMPLE_OPS {
        let key = format!("legit/{tag}/{i}");
        let started = Instant::now();
        match client.put(key.as_bytes(), b"ok") {
            Ok(_) => took.push(started.elapsed()),
            Err(_) => failed += 1,
        }
    }
    figures(took, failed)
}
