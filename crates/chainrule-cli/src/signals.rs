//! Ctrl-C (SIGINT) and SIGTERM during training: finish the current step, save a
//! checkpoint, exit cleanly. A second signal exits at once.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(signal: libc::c_int) {
    if STOP.swap(true, Ordering::SeqCst) {
        // SAFETY: _exit is async-signal-safe; the user asked twice.
        unsafe { libc::_exit(128 + signal) };
    }
}

/// Routes SIGINT and SIGTERM to the stop flag.
pub fn install() {
    #[cfg(unix)]
    // SAFETY: the handler only stores to an atomic (async-signal-safe) or calls _exit.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

/// The flag training polls between steps.
pub fn stop_flag() -> &'static AtomicBool {
    &STOP
}
