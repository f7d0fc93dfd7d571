//! SIGTERM and SIGINT ask the loop to stop; SIGHUP asks it to load its
//! TLS certificates again.
//!
//! The handler only sets a flag: that is all a signal handler may safely do.
//! The signal also interrupts the loop's `epoll_wait`, so the loop sees the
//! flag at once rather than at its next timeout.

#![allow(unsafe_code)] // installing a signal handler through libc

use std::sync::atomic::{AtomicBool, Ordering};

static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);
static RELOAD_REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_signal: libc::c_int) {
    STOP_REQUESTED.store(true, Ordering::SeqCst);
}

extern "C" fn on_reload_signal(_signal: libc::c_int) {
    RELOAD_REQUESTED.store(true, Ordering::SeqCst);
}

/// Installs the handlers for SIGTERM, SIGINT and SIGHUP.
pub fn install() {
    let stop = on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    let reload = on_reload_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for (signal, handler) in [(libc::SIGTERM, stop), (libc::SIGINT, stop), (libc::SIGHUP, reload)] {
        // SAFETY: the handlers are async-signal-safe (one atomic store) and
        // live for the whole program; `signal` has no other preconditions.
        unsafe {
            libc::signal(signal, handler);
        }
    }
}

/// Whether SIGHUP arrived since the last call.
pub fn take_reload_request() -> bool {
    RELOAD_REQUESTED.swap(false, Ordering::SeqCst)
}

/// Whether a stop signal arrived.
pub fn stop_requested() -> bool {
    STOP_REQUESTED.load(Ordering::SeqCst)
}
