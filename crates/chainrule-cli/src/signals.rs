//! Ctrl-C (SIGINT) and SIGTERM during training: finish the current step, save a
//! checkpoint, exit cleanly. A second signal exits at once.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(signal: libc::c_int) {
    if STOP.swap(true, Ordering::SeqCst) {
        // SAFETY: _exit is async-signal-safe (exit, which runs destructors and
        // flushes, would not be); the user asked twice. Tested by
        // tests/interrupt.rs (a_second_signal_exits_at_once_with_the_signals_status).
        unsafe { libc::_exit(128 + signal) };
    }
}

/// Routes SIGINT and SIGTERM to the stop flag.
pub fn install() {
    #[cfg(unix)]
    // SAFETY: installing a handler is an FFI call with no safe form in std; the
    // handler only stores to an atomic (async-signal-safe) or calls _exit. Tested
    // by tests/interrupt.rs (a run stopped by SIGTERM saves and resumes).
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

/// The flag training polls between steps.
pub fn stop_flag() -> &'static AtomicBool {
    &STOP
}
