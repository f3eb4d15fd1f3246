//! The application's side: [`ProcessKernel`], a [`Kernel`] whose runner is a kernel host
//! process. The rings are shared memory, so the host end of the protocol (JavaScript, or a
//! [`crate::host::Session`]) works on them exactly as with an in-process kernel; only launch,
//! wake, doorbell and join cross the socket.
//!
//! Liveness: [`HostMonitor::status`] says whether the host runs, is stopped (SIGSTOP, a
//! debugger) or exited, and how long ago it last showed progress. A join never waits on a host
//! that cannot answer: it gives up, kills the host and says why, once the host has been seen
//! stopped for [`JoinLimits::stopped`] or has not reported within [`JoinLimits::report`].
//!
//! Signals: the host runs in a process group of its own and ignores SIGINT, SIGTERM and SIGHUP
//! ([`super::child::serve_stdin`]), so a Ctrl-C or a service manager's stop reaches the parent
//! only, which drains and stops its kernels; a parent that exits or dies closes the control
//! socket, and the host stops its kernel and exits (it is never orphaned).
#![forbid(unsafe_code)]

use std::io::IoSlice;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering as Plain};
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
/// How long a launch waits on a host that is stopped (SIGSTOP, a debugger) before it gives up.
pub const LAUNCH_STOPPED_LIMIT: Duration = Duration::from_secs(10);
/// How long `join` waits for the host's report by default (the host itself bounds its
/// kernel's stop).
pub const JOIN_LIMIT: Duration = Duration::from_secs(20);
/// How long `join` waits by default on a host that is stopped before it gives up on it.
pub const STOPPED_LIMIT: Duration = Duration::from_secs(1);
/// How long an exiting host gets before it is killed.
const EXIT_LIMIT: Duration = Duration::from_secs(5);
/// How often a waiting launch or join looks at the host's state.
const WATCH_TICK: Duration = Duration::from_millis(25);

/// How long [`ProcessKernel::join_within`] waits before it kills the host and reports why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JoinLimits {
    /// For the host's report that its kernel stopped, in all.
    pub report: Duration,
    /// For a host seen stopped (SIGSTOP, SIGTSTP, a debugger): a stopped host reports nothing.
    pub stopped: Duration,
}

impl Default for JoinLimits {
    /// [`JOIN_LIMIT`] and [`STOPPED_LIMIT`].
    fn default() -> Self {
        Self { report: JOIN_LIMIT, stopped: STOPPED_LIMIT }
    }
}

/// What a kernel host process is doing, as the operating system sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostState {
    /// Running or sleeping: it can answer.
    Running,
    /// Stopped by a signal (SIGSTOP, SIGTSTP…) or a tracer: it answers nothing until continued.
    Stopped,
    /// Gone (exited, killed or crashed).
    Exited,
}

impl HostState {
    /// `running`, `stopped` or `exited`.
    pub const fn as_str(self) -> &'static str {
        match self {
            HostState::Running => "running",
            HostState::Stopped => "stopped",
            HostState::Exited => "exited",
        }
    }
}

/// A snapshot of a kernel host's liveness ([`HostMonitor::status`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostStatus {
    /// The host's process id.
    pub pid: u32,
    /// Running, stopped or exited.
    pub state: HostState,
    /// The state letter of `/proc/<pid>/stat` (`R`, `S`, `D`, `T`, `t`…) while the process exists.
    pub proc_state: Option<char>,
    /// How it ended (`exit status: 0`, `signal: 9 (SIGKILL)`), once it has.
    pub exit: Option<String>,
    /// While stopped: for how long it has been seen stopped (since the first look that found it
    /// stopped; looks are taken by `status` calls and by a waiting launch or join).
    pub stopped_for: Option<Duration>,
    /// Time since the host last showed progress: a packet to the parent (doorbell, report) or a
    /// message handled by one of its kernels (seen at a look). An idle kernel shows none; it is
    /// `state` that tells a stopped host from an idle one.
    pub since_progress: Duration,
}

/// What the parent knows of its host process; shared by the kernel, its reader thread and any
/// [`HostMonitor`].
struct Host {
    pid: u32,
    child: Mutex<Child>,
    born: Instant,
    /// Milliseconds after `born` of the last progress seen.
    progress_ms: AtomicU64,
    /// Messages handled by every stage at the last look.
    processed: AtomicU64,
    /// Milliseconds after `born`, plus one, of the first look that found the host stopped since
    /// it last ran; 0 while it runs.
    stopped_since: AtomicU64,
    regions: Vec<Arc<Region>>,
}

impl Host {
    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    /// A sign of life: a packet from the host.
    fn touch(&self) {
        self.progress_ms.store(self.now_ms(), Plain::Relaxed);
    }

    fn kill(&self) {
        // A child already reaped is not signalled again (std keeps its status), so a reused pid
        // is never hit.
        let _ = self.child.lock().unwrap_or_else(|e| e.into_inner()).kill();
    }

    /// Looks at the process (never blocks for long: the child lock is only held for a
    /// `waitpid(WNOHANG)` and a read of `/proc/<pid>/stat`).
    fn status(&self) -> HostStatus {
        let (exit, letter) = {
            // Under the lock, the process cannot be reaped (and its pid reused) between the
            // `try_wait` and the `/proc` read.
            let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
            match child.try_wait() {
                Ok(Some(status)) => (Some(status.to_string()), None),
                Ok(None) => (None, proc_state(self.pid)),
                Err(e) => (Some(format!("exit status unknown ({e})")), None),
            }
        };
        let state = match (&exit, letter) {
            (Some(_), _) | (None, None | Some('Z' | 'X' | 'x')) => HostState::Exited,
            (None, Some('T' | 't')) => HostState::Stopped,
            (None, Some(_)) => HostState::Running,
        };
        let now = self.now_ms();
        let stopped_for = if state == HostState::Stopped {
            let _ = self.stopped_since.compare_exchange(0, now + 1, Plain::Relaxed, Plain::Relaxed);
            Some(Duration::from_millis((now + 1).saturating_sub(self.stopped_since.load(Plain::Relaxed))))
        } else {
            self.stopped_since.store(0, Plain::Relaxed);
            None
        };
        // ORDERING: a counter read for a progress report only; no memory is accessed through it.
        let processed = self.regions.iter().map(|r| r.control().messages_processed.load(Ordering::Relaxed)).fold(0u64, u64::wrapping_add);
        if self.processed.swap(processed, Plain::Relaxed) != processed {
            self.progress_ms.store(now, Plain::Relaxed);
        }
        let since_progress = Duration::from_millis(now.saturating_sub(self.progress_ms.load(Plain::Relaxed)));
        HostStatus { pid: self.pid, state, proc_state: letter, exit, stopped_for, since_progress }
    }
}

/// The state letter of `/proc/<pid>/stat` (after the command name, which may hold `)`).
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// Watches a kernel host from any thread, also while its [`ProcessKernel`] is being joined
/// elsewhere. Cheap to clone.
#[derive(Clone)]
pub struct HostMonitor(Arc<Host>);

impl HostMonitor {
    /// The host's process id.
    pub fn pid(&self) -> u32 {
        self.0.pid
    }

    /// Whether the host runs, is stopped or exited, and when it last showed progress.
    pub fn status(&self) -> HostStatus {
        self.0.status()
    }

    /// Kills the host (SIGKILL) now: its kernel stops, a waiting join returns at once with the
    /// host's death, and every waiter sees the kernel terminated with a fault.
    pub fn kill(&self) {
        self.0.kill();
    }
}

/// A ring kernel run by a kernel host process.
pub struct ProcessKernel {
    /// The regions it serves: one, or a route's stages (first first).
    regions: Vec<Arc<Region>>,
    ctl: Arc<OwnedFd>,
    host: Arc<Host>,
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
    /// Blocks until the host answers; call it off the JavaScript thread to keep a loop running.
    ///
    /// The host gets a process group of its own (so a terminal's Ctrl-C, sent to the
    /// foreground group, reaches the parent only) and ignores SIGINT, SIGTERM and SIGHUP once it
    /// serves; it stops when the parent's end of the control socket closes.
    ///
    /// # Errors
    /// The host's own launch error (same code and text as in-process); [`Error::BackendUnavailable`]
    /// when the host cannot be started or exits before answering; [`Error::Timeout`] after
    /// [`LAUNCH_LIMIT`]; an `ERR_RINGBRIDGE_TIMEOUT` naming the pid when the host is stopped for
    /// [`LAUNCH_STOPPED_LIMIT`] (it is killed).
    pub fn spawn(
        command: &HostCommand,
        requests: &[LaunchRequest],
        regions: Vec<Arc<Region>>,
        notify: Notify,
    ) -> Result<(Self, Vec<Launched>), Error> {
        if requests.is_empty() || requests.len() != regions.len() {
            return Err(Error::InvalidConfig {
                what: format!("a kernel host launch of {} requests over {} regions", requests.len(), regions.len()),
                value: None,
                expected: "one region per launch request, and at least one request".into(),
            });
        }
        let mut packets = Vec::with_capacity(regions.len());
        for (i, (request, region)) in requests.iter().zip(&regions).enumerate() {
            let shm = region.shared_memory().ok_or_else(|| Error::InvalidConfig {
                what: "the region of a kernel host launch".into(),
                value: None,
                expected: "a region in shared memory (Region::alloc_shared)".into(),
            })?;
            let request = LaunchRequest { following: (requests.len() - 1 - i) as u32, ..request.clone() };
            packets.push((shm.fd(), request.encode()?));
        }
        let (mine, theirs) = socketpair(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None)
            .map_err(|e| unavailable(format!("socketpair failed: {e}")))?;
        let mut command_line = Command::new(&command.program);
        command_line.args(&command.args).stdin(Stdio::from(theirs));
        // A group of its own: signals to the parent's group (Ctrl-C, a shell's job control)
        // leave the host to its parent, which stops it after draining (set before exec, so
        // there is no window while the host starts).
        command_line.process_group(0);
        if std::env::var_os("CUDA_MODULE_LOADING").is_none() {
            // Lazily loaded modules wait for every running kernel of the context: with
            // persistent kernels (a route's stages) that wait never ends.
            command_line.env("CUDA_MODULE_LOADING", "EAGER");
        }
        let child =
            command_line.spawn().map_err(|e| unavailable(format!("cannot start the kernel host '{}': {e}", command.program.display())));
        // The Command holds the host's end of the socket: close ours now, so a host that exits
        // reads as closed, not as silent.
        drop(command_line);
        let child = child?;
        let born = Instant::now();
        let host = Arc::new(Host {
            pid: child.id(),
            child: Mutex::new(child),
            born,
            progress_ms: AtomicU64::new(0),
            processed: AtomicU64::new(0),
            stopped_since: AtomicU64::new(0),
            regions: regions.clone(),
        });
        // A host that exits at once (not a kernel host at all) closes its end before or while
        // it is sent to: both read as "exited before it launched".
        let sent = packets.iter().try_for_each(|(fd, packet)| send_region(&mine, *fd).and_then(|()| wire::send(&mine, packet)));
        let answer = match sent {
            Ok(()) => (0..requests.len()).map(|_| first_answer(&mine, &host, &notify)).collect::<Result<Vec<_>, _>>(),
            Err(e) => Err(exited_early(&host, &e.to_string())),
        };
        let launched = match answer {
            Ok(l) => l,
            Err(e) => {
                reap(&host, EXIT_LIMIT);
                return Err(e);
            }
        };
        let ctl = Arc::new(mine);
        let (tx, reports) = mpsc::channel();
        let reader = {
            let (ctl, host) = (Arc::clone(&ctl), Arc::clone(&host));
            thread::Builder::new()
                .name("ringbridge-kernel-host-reader".into())
                .spawn(move || read_reports(&ctl, &host, &tx, &notify))
                .map_err(|e| Error::ResourceExhausted { what: "the kernel host reader thread".into(), reason: e.to_string() })?
        };
        Ok((Self { regions, ctl, host, reader: Some(reader), reports: Mutex::new(reports), joined: false }, launched))
    }

    /// A handle that watches the host (state, exit, progress) and can kill it, from any thread.
    pub fn monitor(&self) -> HostMonitor {
        HostMonitor(Arc::clone(&self.host))
    }

    /// Stops the kernel (abandoning unless a terminate command was already given) and waits
    /// for the host's report, at most `limits.report`, and at most `limits.stopped` while the
    /// host is seen stopped; a host that does not answer in time is killed (SIGKILL: it is
    /// being stopped anyway). Then reaps the host. Idempotent (later calls return `Ok`).
    ///
    /// # Errors
    /// The host's report of its kernel's failure; the host's death
    /// (`ERR_RINGBRIDGE_KERNEL_ERROR`, "the kernel host process died (…)"); an
    /// `ERR_RINGBRIDGE_TIMEOUT` naming the pid and the state when it was given up on.
    pub fn join_within(&mut self, limits: JoinLimits) -> Result<(), Error> {
        if std::mem::replace(&mut self.joined, true) {
            return Ok(());
        }
        let started = Instant::now();
        let deadline = started + limits.report;
        let reports = self.reports.get_mut().unwrap_or_else(|e| e.into_inner());
        let mut asked = false;
        let result = loop {
            if !asked {
                // Never blocks: the socket of a stopped host may be full of wakes. A host that
                // is gone has its crash report queued by the reader.
                asked = wire::try_send(&self.ctl.as_fd(), &[tag::JOIN]) != wire::TrySend::Full;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match reports.recv_timeout(WATCH_TICK.min(left)) {
                Ok(report) => break report,
                // The reader reports on every way out but a panic.
                Err(RecvTimeoutError::Disconnected) => break Err(Error::ThreadPanicked { thread: "kernel host reader" }),
                Err(RecvTimeoutError::Timeout) => {}
            }
            let status = self.host.status();
            if let Some(stopped) = status.stopped_for.filter(|s| *s >= limits.stopped) {
                // Killing the host destroys its context, which stops its kernel.
                self.host.kill();
                break Err(stopped_error(&status, stopped, limits.stopped, "join (stopping its kernel)"));
            }
            if Instant::now() >= deadline {
                self.host.kill();
                break Err(Error::Remote {
                    code: ErrorCode::Timeout,
                    message: format!(
                        "timed out after {} ms waiting for the kernel host (pid {}, {}{}) to stop its kernel; it was killed (SIGKILL)",
                        limits.report.as_millis(),
                        status.pid,
                        status.state.as_str(),
                        status.proc_state.map_or_else(String::new, |c| format!(", /proc state '{c}'")),
                    ),
                });
            }
        };
        reap(&self.host, EXIT_LIMIT);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        result
    }
}

fn stopped_error(status: &HostStatus, stopped: Duration, limit: Duration, waiting: &str) -> Error {
    Error::Remote {
        code: ErrorCode::Timeout,
        message: format!(
            "the kernel host (pid {}) is stopped (/proc state '{}': SIGSTOP, SIGTSTP or a debugger) and answers nothing: \
             seen stopped for {} ms while {waiting} waited (limit {} ms); it was killed (SIGKILL)",
            status.pid,
            status.proc_state.unwrap_or('T'),
            stopped.as_millis(),
            limit.as_millis(),
        ),
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
fn first_answer(ctl: &OwnedFd, host: &Host, notify: &Notify) -> Result<Launched, Error> {
    let deadline = Instant::now() + LAUNCH_LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if !wire::readable_within(ctl, WATCH_TICK.min(left))? {
            let status = host.status();
            if let Some(stopped) = status.stopped_for.filter(|s| *s >= LAUNCH_STOPPED_LIMIT) {
                host.kill();
                return Err(stopped_error(&status, stopped, LAUNCH_STOPPED_LIMIT, "the launch"));
            }
            if left.is_zero() {
                host.kill();
                return Err(Error::Timeout { what: "the kernel host to launch the kernel", millis: LAUNCH_LIMIT.as_millis() as u64 });
            }
            continue;
        }
        // A reset (the host exited with our packets unread) is an early exit like a close.
        match wire::recv(ctl).map_err(|e| exited_early(host, &e.to_string()))? {
            Some(p) if p.first() == Some(&tag::LAUNCHED) => return wire::decode_launched(&p),
            Some(p) if p.first() == Some(&tag::ERROR) => return Err(wire::decode_error(&p)),
            Some(p) if p == [tag::DOORBELL] => notify(),
            Some(p) => return Err(Error::Protocol(format!("unexpected packet {:?} from the kernel host", String::from_utf8_lossy(&p)))),
            None => return Err(exited_early(host, "no answer")),
        }
    }
}

/// The reader thread: doorbells to `notify`, the join report to `reports`; a host that goes
/// away without a report crashed, and its kernel's status words are taken over.
fn read_reports(ctl: &OwnedFd, host: &Host, reports: &mpsc::Sender<Result<(), Error>>, notify: &Notify) {
    let mut reported = false;
    let mut buf = Vec::new();
    loop {
        match wire::recv_into(ctl, &mut buf) {
            Ok(Some(n)) if buf[..n] == [tag::DOORBELL] => {
                host.touch();
                notify();
            }
            Ok(Some(n)) => {
                host.touch();
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
        let status = reap(host, EXIT_LIMIT);
        let why = format!("the kernel host process died ({}) while its kernel ran (kernel host pid {})", describe(status), host.pid);
        for region in &host.regions {
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

fn exited_early(host: &Host, detail: &str) -> Error {
    let status = reap(host, EXIT_LIMIT);
    unavailable(format!("the kernel host (pid {}) exited ({}) before it launched the kernel ({detail})", host.pid, describe(status)))
}

/// Waits up to `limit` for the host to exit, then kills it; its exit status if known. The child
/// lock is taken per look, so [`Host::status`] never waits behind a reap.
fn reap(host: &Host, limit: Duration) -> Option<ExitStatus> {
    let deadline = crate::host::deadline_after(limit);
    loop {
        {
            let mut child = host.child.lock().unwrap_or_else(|e| e.into_inner());
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {}
                Ok(None) => {
                    let _ = child.kill();
                    return child.wait().ok();
                }
                Err(_) => return None,
            }
        }
        thread::sleep(Duration::from_millis(2));
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
        Some(self.host.pid)
    }

    fn wake(&self) {
        wire::send_nowait(&self.ctl.as_fd(), &[tag::WAKE]);
    }

    fn join(&mut self) -> Result<(), Error> {
        self.join_within(JoinLimits::default())
    }
}

impl Drop for ProcessKernel {
    fn drop(&mut self) {
        // Stops and reaps the host before the shared region can go away; errors have nowhere
        // to go here (`join` reported them if anyone asked).
        let _ = self.join_within(JoinLimits::default());
    }
}
