//! Process isolation: a ring kernel served by a *kernel host* process of its own.
//!
//! Why: a GPU kernel that traps (an out-of-bounds write, `__trap()`) leaves a *sticky* error:
//! CUDA refuses every later call in that process, and on driver 580 even a fresh context cannot
//! be created (measured on an H100). If the kernel ran in the host application's process, one
//! bad handler would end GPU work for the application's whole life. Run in a kernel host, a
//! trap ends that process only; the application sees the fault in the control block (state
//! TERMINATED, error HANDLER_FAULT), rejects what was waiting, and the next launch starts a
//! fresh host with a fresh context. One host per kernel (or per route: its stages write each
//! other's rings, so they share a host and fail together) also means one kernel's fault never
//! touches another's.
//!
//! How: the region lives in a memfd ([`shm::SharedMemory`]) both processes map, so the rings
//! are the same physical pages on both sides and nothing is copied between the processes; the
//! kernel host registers them with the GPU (`mapped`) or bridges them (`dma`) as if they were
//! its own. Only control travels over a `SOCK_SEQPACKET` socket pair (the host's stdin), one
//! message per packet (the [`wire`] format):
//!
//! | from   | packet                      | meaning                                            |
//! |--------|-----------------------------|----------------------------------------------------|
//! | parent | `F` + the memfd (SCM_RIGHTS) | the region                                         |
//! | parent | `launch\t…`                 | what to run ([`wire::LaunchRequest`]); its `following` more `F` + `launch` pairs: a route's stages |
//! | host   | `L…` (one per stage) / `E…` | launched (backend, transport, reasons) / failed     |
//! | host   | `!`                         | doorbell: the kernel published while the host waits |
//! | parent | `w`                         | wake a parked kernel (spec §8, D2)                  |
//! | parent | `j`                         | stop the kernel and report                          |
//! | host   | `D` / `E…`                  | the kernel stopped cleanly / with this error        |
//!
//! The socket doubles as a liveness signal both ways: the host stops its kernel (abandon) when
//! the parent's end closes, so a parent that exits or dies leaves nothing on the GPU; the parent
//! takes over the control block's status words when the host's end closes without a `D`/`E`,
//! so a host that crashed is a fault every waiter sees, never a silent hang.
//!
//! Shutdown is the parent's: the host runs in a process group of its own and ignores SIGINT,
//! SIGTERM and SIGHUP ([`signals`]), so a Ctrl-C or a service manager's stop leaves it serving
//! while the parent drains. A host that stops answering (SIGSTOP, a debugger) is seen in
//! [`parent::HostMonitor::status`], and a join gives up on it after
//! [`parent::JoinLimits::stopped`], killing it, instead of waiting.

pub mod child;
pub mod parent;
pub mod shm;
pub mod signals;
pub mod wire;

use std::ffi::OsString;
use std::path::PathBuf;

use crate::Error;

/// The error of a failed system call `call`: [`Error::ResourceExhausted`] when the system ran
/// out of something (`ENOMEM`, `ENOSPC`, `EMFILE`, `ENFILE`, `EAGAIN`), [`Error::Os`] with the
/// errno otherwise. For `map_err`.
pub(crate) fn os_error<E: Into<std::io::Error>>(call: &'static str) -> impl FnOnce(E) -> Error {
    use rustix::io::Errno;
    move |e| {
        let source: std::io::Error = e.into();
        match Errno::from_io_error(&source) {
            Some(Errno::NOMEM | Errno::NOSPC | Errno::MFILE | Errno::NFILE | Errno::AGAIN) => {
                Error::ResourceExhausted { what: call.to_owned(), reason: source.to_string() }
            }
            _ => Error::Os { call, source },
        }
    }
}

/// How to start a kernel host: a program that calls [`child::serve_stdin`].
///
/// Rust programs use the `ringbridge-kernel-host` binary of this crate; the Node.js package runs
/// its own addon in a child `node` (`ts/kernel-host.js`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostCommand {
    /// The executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
}

impl HostCommand {
    /// A program with no arguments.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self { program: program.into(), args: Vec::new() }
    }
}
