//! The kernel host's signal dispositions: it leaves shutdown to its parent.
//!
//! A Ctrl-C (SIGINT to the terminal's foreground process group), a service manager's stop
//! (SIGTERM to every process of the service) or a hang-up (SIGHUP) is meant for the
//! application: its handler drains and terminates its kernels, which needs their hosts alive.
//! A host killed by it first would lose what was in flight. So the host ignores the three (and
//! SIGTTOU, see [`IGNORED`]); it still stops when told to (`j`), and when the parent exits or
//! dies (the control socket closes), and SIGKILL ends it as ever.
//!
//! `std` has no call to set a signal disposition and `rustix` keeps `sigaction` for runtime
//! implementers, so this module declares the C library's `signal` itself (the only `unsafe` of
//! `isolate` outside `shm.rs`).

use std::os::raw::c_int;

/// The signals a kernel host ignores: SIGHUP, SIGINT, SIGTERM (the same numbers on every Linux
/// architecture), and SIGTTOU: the host has a process group of its own, so under a terminal
/// with `stty tostop` a write to stderr (a warning) would stop it; ignored, the write proceeds.
#[cfg(not(any(target_arch = "mips", target_arch = "mips64", target_arch = "mips32r6", target_arch = "mips64r6")))]
pub const IGNORED: [(c_int, &str); 4] = [(1, "SIGHUP"), (2, "SIGINT"), (15, "SIGTERM"), (22, "SIGTTOU")];
/// As above; SIGTTOU is 27 on MIPS.
#[cfg(any(target_arch = "mips", target_arch = "mips64", target_arch = "mips32r6", target_arch = "mips64r6"))]
pub const IGNORED: [(c_int, &str); 4] = [(1, "SIGHUP"), (2, "SIGINT"), (15, "SIGTERM"), (27, "SIGTTOU")];

/// `SIG_IGN` as `sighandler_t`.
const SIG_IGN: usize = 1;
/// `SIG_ERR` as `sighandler_t`.
const SIG_ERR: usize = usize::MAX;

extern "C" {
    /// `sighandler_t signal(int signum, sighandler_t handler)` of the C library `std` links.
    fn signal(signum: c_int, handler: usize) -> usize;
}

/// Ignores [`IGNORED`] (SIGHUP, SIGINT, SIGTERM, SIGTTOU) in this process (a kernel host).
///
/// # Errors
/// The name of a signal whose disposition could not be set, with the OS error.
pub fn ignore_shutdown_signals() -> Result<(), String> {
    for (number, name) in IGNORED {
        // SAFETY: `signal` with SIG_IGN installs no handler code, touches no memory of ours and
        // is async-signal-safe; `number` is a valid, catchable signal on Linux.
        let previous = unsafe { signal(number, SIG_IGN) };
        if previous == SIG_ERR {
            return Err(format!("cannot ignore {name}: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}
