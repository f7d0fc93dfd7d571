//! SIGTERM and SIGINT ask the loop to stop.
//!
//! The handler only sets a flag: that is all a signal handler may safely do.
//! The signal also interrupts the loop's `epoll_wait`, so the loop sees the
//! flag at once rather than at its next timeout.

#![allow(unsafe_code)] // installing a signal handler through libc

use std::sync::atomic::{AtomicBool, Ordering};

static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_signal: libc::c_int) {
    STOP_REQUESTED.store(true, Ordering::SeqCst);
}

/// Installs the handler for SIGTERM and SIGINT.
pub fn install() {
    let handler = on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler is async-signal-safe (one atomic store) and
        // lives for the whole program; `signal` has no other preconditions.
        unsafe {
            libc::signal(signal, handler);
        }
    }
}

/// Whether a stop signal arrived.
pub fn stop_requested() -> bool {
    STOP_REQUESTED.load(Ordering::SeqCst)
}
