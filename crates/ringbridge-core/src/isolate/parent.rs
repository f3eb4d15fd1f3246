//! The application's side: [`ProcessKernel`], a [`Kernel`] whose runner is a kernel host
//! process. The rings are shared memory, so the host end of the protocol (JavaScript, or a
//! [`crate::host::Session`]) works on them exactly as with an in-process kernel; only launch,
//! wake, doorbell and join cross the socket.
#![forbid(unsafe_code)]

use std::io::IoSlice;
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rustix::net::{socketpair, AddressFamily, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType};

use super::wire::{self, tag, LaunchRequest};
use super::HostCommand;
use crate::backend::dispatch::record_error;
use crate::backend::{Kernel, Launched, Notify};
use crate::protocol::{kernel_error, KernelState};
use crate::sync::Ordering;
use crate::transport::Region;
use crate::{Error, ErrorCode};

/// How long a launch may take: the host starts, opens a context and (first time on a machine)
/// compiles the kernel with NVRTC.
pub const LAUNCH_LIMIT: Duration = Duration::from_secs(120);
/// How long `join` waits for the host's report (the host itself bounds its kernel's stop).
pub const JOIN_LIMIT: Duration = Duration::from_secs(20);
/// How long an exiting host gets before it is killed.
const EXIT_LIMIT: Duration = Duration::from_secs(5);

/// A ring kernel run by a kernel host process.
pub struct ProcessKernel {
    /// The regions it serves: one, or a route's stages (first first).
    regions: Vec<Arc<Region>>,
    ctl: Arc<OwnedFd>,
    child: Arc<Mutex<Child>>,
    reader: Option<JoinHandle<()>>,
    reports: Mutex<Receiver<Result<(), Error>>>,
    joined: bool,
}

fn unavailable(reason: String) -> Error {
    Error::BackendUnavailable { backend: "kernel host", reason }
}

impl ProcessKernel {
    /// Starts `command` as the kernel host of `regions` (each from [`Region::alloc_shared`]) and
    /// has it launch `requests[i]` over `regions[i]`: one kernel, or a route's stages (spec §14)
    /// in one host, hence one context (a fault in one stage ends the route, never half of it).
    ///
    /// # Errors
    /// The host's own launch error (same code and text as in-process); [`Error::BackendUnavailable`]
    /// when the host cannot be started or exits before answering; [`Error::Timeout`] after
    /// [`LAUNCH_LIMIT`].
    pub fn spawn(command: &HostCommand, requests: &[LaunchRequest], regions: Vec<Arc<Region>>, notify: Notify) -> Result<(Self, Vec<Launched>), Error> {
        if requests.is_empty() || requests.len() != regions.len() {
            return Err(Error::Protocol(format!("a kernel host needs one region per launch ({} requests, {} regions)", requests.len(), regions.len())));
        }
        let mut packets = Vec::with_capacity(regions.len());
        for (i, (request, region)) in requests.iter().zip(&regions).enumerate() {
            let shm = region.shared_memory().ok_or_else(|| {
                Error::Protocol("a kernel host needs the region in shared memory (Region::alloc_shared)".into())
            })?;
            let request = LaunchRequest { following: (requests.len() - 1 - i) as u32, ..request.clone() };
            packets.push((shm.fd(), request.encode()?));
        }
        let (mine, theirs) = socketpair(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None)
            .map_err(|e| unavailable(format!("socketpair failed: {e}")))?;
        let mut host = Command::new(&command.program);
        host.args(&command.args).stdin(Stdio::from(theirs));
        if std::env::var_os("CUDA_MODULE_LOADING").is_none() {
            // Lazily loaded modules wait for every running kernel of the context: with
            // persistent kernels (a route's stages, design.md) that wait never ends.
            host.env("CUDA_MODULE_LOADING", "EAGER");
        }
        let child = host.spawn().map_err(|e| unavailable(format!("cannot start the kernel host '{}': {e}", command.program.display())));
        // The Command holds the host's end of the socket: close ours now, so a host that exits
        // reads as closed, not as silent.
        drop(host);
        let child = child?;
        let child = Arc::new(Mutex::new(child));
        // A host that exits at once (not a kernel host at all) closes its end before or while
        // it is sent to: both read as "exited before it launched".
        let sent = packets.iter().try_for_each(|(fd, packet)| send_region(&mine, *fd).and_then(|()| wire::send(&mine, packet)));
        let answer = match sent {
            Ok(()) => (0..requests.len()).map(|_| first_answer(&mine, &child, &notify)).collect::<Result<Vec<_>, _>>(),
            Err(e) => Err(exited_early(&child, &e.to_string())),
        };
        let launched = match answer {
            Ok(l) => l,
            Err(e) => {
                reap(&child, EXIT_LIMIT);
                return Err(e);
            }
        };
        let ctl = Arc::new(mine);
        let (tx, reports) = mpsc::channel();
        let reader = {
            let (ctl, child, regions) = (Arc::clone(&ctl), Arc::clone(&child), regions.clone());
            thread::Builder::new()
                .name("ringbridge-kernel-host-reader".into())
                .spawn(move || read_reports(&ctl, &child, &regions, &tx, &notify))
                .map_err(|e| Error::Protocol(format!("cannot spawn the kernel host reader: {e}")))?
        };
        Ok((Self { regions, ctl, child, reader: Some(reader), reports: Mutex::new(reports), joined: false }, launched))
    }
}

/// Sends the `F` packet with the memfd attached.
fn send_region(ctl: &OwnedFd, memfd: std::os::fd::BorrowedFd<'_>) -> Result<(), Error> {
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [memfd];
    control.push(SendAncillaryMessage::ScmRights(&fds));
    rustix::net::sendmsg(ctl, &[IoSlice::new(&[tag::REGION])], &mut control, SendFlags::NOSIGNAL)
        .map(drop)
        .map_err(|e| unavailable(format!("sending the region to the kernel host failed: {e}")))
}

/// Waits (bounded) for `L` or `E`; doorbells before it are passed on.
fn first_answer(ctl: &OwnedFd, child: &Mutex<Child>, notify: &Notify) -> Result<Launched, Error> {
    let deadline = Instant::now() + LAUNCH_LIMIT;
    loop {
        if !wire::readable_within(ctl, deadline.saturating_duration_since(Instant::now()))? {
            kill(child);
            return Err(Error::Timeout { what: "the kernel host to launch the kernel", millis: LAUNCH_LIMIT.as_millis() as u64 });
        }
        // A reset (the host exited with our packets unread) is an early exit like a close.
        match wire::recv(ctl).map_err(|e| exited_early(child, &e.to_string()))? {
            Some(p) if p.first() == Some(&tag::LAUNCHED) => return wire::decode_launched(&p),
            Some(p) if p.first() == Some(&tag::ERROR) => return Err(wire::decode_error(&p)),
            Some(p) if p == [tag::DOORBELL] => notify(),
            Some(p) => return Err(Error::Protocol(format!("unexpected packet {:?} from the kernel host", String::from_utf8_lossy(&p)))),
            None => return Err(exited_early(child, "no answer")),
        }
    }
}

/// The reader thread: doorbells to `notify`, the join report to `reports`; a host that goes
/// away without a report crashed, and its kernel's status words are taken over.
fn read_reports(ctl: &OwnedFd, child: &Mutex<Child>, regions: &[Arc<Region>], reports: &mpsc::Sender<Result<(), Error>>, notify: &Notify) {
    let mut reported = false;
    let mut buf = Vec::new();
    loop {
        match wire::recv_into(ctl, &mut buf) {
            Ok(Some(n)) if buf[..n] == [tag::DOORBELL] => notify(),
            Ok(Some(n)) => {
                let p = &buf[..n];
                let report = match p.first() {
                    Some(&tag::DONE) if p.len() == 1 => Ok(()),
                    Some(&tag::ERROR) => Err(wire::decode_error(p)),
                    _ => Err(Error::Protocol(format!("unexpected packet {:?} from the kernel host", String::from_utf8_lossy(p)))),
                };
                reported = true;
                let _ = reports.send(report);
                notify();
            }
            Ok(None) | Err(_) => break,
        }
    }
    if !reported {
        let status = reap(child, EXIT_LIMIT);
        let why = format!("the kernel host process died ({}) while its kernel ran", describe(status));
        for region in regions {
            take_over(region);
        }
        let _ = reports.send(Err(Error::Remote { code: ErrorCode::KernelError, message: why }));
        notify();
    }
}

/// A host that died writes nothing more: like a faulted GPU kernel, its status words are taken
/// over so every waiter sees TERMINATED and HANDLER_FAULT (spec §12).
fn take_over(region: &Region) {
    let cb = region.control();
    // ORDERING: (K8) acquire pairs with the host's last release of state.
    if cb.state.load(Ordering::Acquire) != KernelState::Terminated as u32 {
        record_error(cb, kernel_error::HANDLER_FAULT);
        // ORDERING: (K8) release, as the kernel's own state change would be.
        cb.state.store(KernelState::Terminated as u32, Ordering::Release);
    }
}

fn exited_early(child: &Mutex<Child>, detail: &str) -> Error {
    let status = reap(child, EXIT_LIMIT);
    unavailable(format!("the kernel host exited ({}) before it launched the kernel ({detail})", describe(status)))
}

fn kill(child: &Mutex<Child>) {
    let _ = child.lock().unwrap_or_else(|e| e.into_inner()).kill();
}

/// Waits up to `limit` for the host to exit, then kills it; its exit status if known.
fn reap(child: &Mutex<Child>, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    let mut child = child.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(2)),
            Ok(None) => {
                let _ = child.kill();
                return child.wait().ok();
            }
            Err(_) => return None,
        }
    }
}

fn describe(status: Option<ExitStatus>) -> String {
    status.map_or_else(|| "exit status unknown".to_owned(), |s| s.to_string())
}

impl Kernel for ProcessKernel {
    fn region(&self) -> &Arc<Region> {
        &self.regions[0]
    }

    fn regions(&self) -> Vec<Arc<Region>> {
        self.regions.clone()
    }

    fn host_pid(&self) -> Option<u32> {
        Some(self.child.lock().unwrap_or_else(|e| e.into_inner()).id())
    }

    fn wake(&self) {
        wire::send_nowait(&self.ctl.as_fd(), &[tag::WAKE]);
    }

    fn join(&mut self) -> Result<(), Error> {
        if std::mem::replace(&mut self.joined, true) {
            return Ok(());
        }
        // A host that already died has its report (or crash) queued; the send just fails.
        let _ = wire::send(&self.ctl.as_fd(), &[tag::JOIN]);
        let reports = self.reports.get_mut().unwrap_or_else(|e| e.into_inner());
        let result = match reports.recv_timeout(JOIN_LIMIT) {
            Ok(report) => report,
            Err(RecvTimeoutError::Timeout) => {
                // Killing the host destroys its context, which stops its kernel.
                kill(&self.child);
                Err(Error::Timeout { what: "the kernel host to stop its kernel", millis: JOIN_LIMIT.as_millis() as u64 })
            }
            Err(RecvTimeoutError::Disconnected) => Err(Error::Protocol("the kernel host reader ended without a report".into())),
        };
        reap(&self.child, EXIT_LIMIT);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        result
    }
}

impl Drop for ProcessKernel {
    fn drop(&mut self) {
        // Stops and reaps the host before the shared region can go away; errors have nowhere
        // to go here (`join` reported them if anyone asked).
        let _ = self.join();
    }
}
