//! Ports for test servers, picked so that concurrent tests cannot steal them.
//!
//! A port taken by binding port 0 comes from the kernel's ephemeral range
//! (32768-60999 by default), the same range every outgoing client connection
//! draws its source port from. Between our pick and the server's own bind, a
//! client of a concurrent test can take it. Ports below that range are never
//! handed out as source ports, so they only collide with each other: each
//! test process walks its own stripe of them (chosen by pid) with a counter,
//! and skips any port that is in use now.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// The first port handed out; below it live well-known services.
const LOW_PORT: u32 = 10_000;
/// How many ports lie between `LOW_PORT` and the ephemeral range.
const SPAN_PORTS: u32 = 22_000;

/// A port nobody listens on right now, outside the ephemeral range.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let stripe = std::process::id().wrapping_mul(2_003) % SPAN_PORTS;
    for _ in 0..SPAN_PORTS {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW_PORT + (stripe + step) % SPAN_PORTS) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {LOW_PORT} and {}", LOW_PORT + SPAN_PORTS);
}
