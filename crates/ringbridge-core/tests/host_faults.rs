//! Faults of a kernel host (process isolation on the CPU backend, no GPU needed), driven through
//! [`ProcessKernel`] directly: a host that is stopped (SIGSTOP) is reported as stopped and a
//! join gives up on it, naming it, instead of waiting 20 s; a stopped host that is continued
//! loses and duplicates nothing; a host killed with messages in flight is a fault the join
//! reports; the host ignores the signals of a Ctrl-C or a service stop and has a process group
//! of its own; a parent that exits or is killed takes its host with it.
//!
//! Each test is bounded: every wait has a deadline and fails naming what it waited for.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ringbridge_core::backend::{request_terminate, Isolation, Kernel, LaunchSpec};
use ringbridge_core::isolate::parent::{HostMonitor, HostState, JoinLimits, ProcessKernel};
use ringbridge_core::isolate::wire::LaunchRequest;
use ringbridge_core::isolate::HostCommand;
use ringbridge_core::protocol::{kernel_error, FrameHeader, KernelState, RingConfig};
use ringbridge_core::ring::{Consumer, PopError, Producer, PushError};
use ringbridge_core::transport::{Region, RegionRing};
use ringbridge_core::{Error, ErrorCode, Ordering};

const LIMIT: Duration = Duration::from_secs(20);

fn host() -> HostCommand {
    HostCommand::new(env!("CARGO_BIN_EXE_ringbridge-kernel-host"))
}

/// A kernel host serving `echo`, and the host's two ring ends, polled (no doorbell): every
/// wait loop wakes the kernel whenever it announced sleep, so no wake can be lost.
struct Harness {
    kernel: ProcessKernel,
    region: Arc<Region>,
    tx: Producer<RegionRing>,
    rx: Consumer<RegionRing>,
}

impl Harness {
    fn launch(capacity: u32) -> Self {
        let command = host();
        let spec = LaunchSpec { isolation: Isolation::Process(&command), ..LaunchSpec::new("cpu", "echo") };
        let ring = RingConfig { capacity, slot_size: 64 };
        let region = Region::alloc_shared(ring, ring).expect("shared region");
        let (kernel, launched) = ProcessKernel::spawn(&command, &[LaunchRequest::of(&spec)], vec![Arc::clone(&region)], Box::new(|| {}))
            .expect("launch through a kernel host");
        assert_eq!(launched[0].backend.name, "cpu");
        Self { kernel, tx: Producer::new(region.input()), rx: Consumer::new(region.output()), region }
    }

    fn monitor(&self) -> HostMonitor {
        self.kernel.monitor()
    }

    fn pid(&self) -> u32 {
        self.monitor().pid()
    }

    fn nudge(&self) {
        if self.region.control().kernel_sleeping.load(Ordering::SeqCst) == 1 {
            self.kernel.wake();
        }
    }

    /// Publishes message `id` if there is room.
    fn try_send(&mut self, id: u64) -> bool {
        let header = FrameHeader { length: 0, type_id: 1, flags: 0, correlation_id: id };
        match self.tx.push(header, &id.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes()) {
            Ok(()) => {
                self.nudge();
                true
            }
            Err(PushError::Full) => false,
            Err(e) => panic!("push {id}: {e:?}"),
        }
    }

    /// Takes one reply if published: its id, after checking its payload.
    fn try_recv(&mut self) -> Option<u64> {
        let r = self.rx.pop_with(|h, p| (h.correlation_id, u64::from_le_bytes(p.try_into().expect("8-byte payload"))));
        self.rx.release();
        match r {
            Ok((id, value)) => {
                assert_eq!(value, id.wrapping_mul(0x9e37_79b9_7f4a_7c15), "reply {id} corrupt");
                Some(id)
            }
            Err(PopError::Empty) => None,
            Err(e) => panic!("reply frame: {e:?}"),
        }
    }

    /// Streams ids `0..count` with up to `window` in flight and checks every reply comes back
    /// once, in order; `during` runs once, after `at` messages were sent.
    fn stream(&mut self, count: u64, window: u64, at: u64, during: impl FnOnce()) {
        let deadline = Instant::now() + LIMIT;
        let (mut sent, mut next) = (0u64, 0u64);
        let mut during = Some(during);
        while next < count {
            assert!(Instant::now() < deadline, "stream: {next} of {count} replies after {LIMIT:?} ({sent} sent)");
            if sent == at {
                if let Some(f) = during.take() {
                    f();
                }
            }
            let mut progress = false;
            while sent < count && sent - next < window && self.try_send(sent) {
                sent += 1;
                progress = true;
                if sent == at {
                    break;
                }
            }
            while let Some(id) = self.try_recv() {
                assert_eq!(id, next, "reply out of order, lost or duplicated");
                next += 1;
                progress = true;
            }
            self.nudge();
            if !progress {
                thread::sleep(Duration::from_micros(200));
            }
        }
        assert_eq!(self.try_recv(), None, "a reply beyond the last message (a duplicate)");
    }
}

fn signal(pid: u32, name: &str) {
    let ok = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status().expect("run kill").success();
    assert!(ok, "kill -{name} {pid} failed");
}

/// Polls `cond` until it holds; panics naming `what` after `limit`.
fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "still not true after {limit:?}: {what}");
        thread::sleep(Duration::from_millis(2));
    }
}

/// The state letter and process group of `/proc/<pid>/stat`, if the process exists.
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut rest = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let _ppid = rest.next()?;
    Some((state, rest.next()?.parse().ok()?))
}

/// Gone, or a zombie nobody reaps yet (a container's init may not): either way not serving.
fn gone(pid: u32) -> bool {
    proc_stat(pid).map_or(true, |(state, _)| matches!(state, 'Z' | 'X'))
}

#[test]
fn a_stopped_host_is_reported_and_a_join_gives_up_on_it_naming_it() {
    let mut h = Harness::launch(64);
    h.stream(1_000, 48, u64::MAX, || {});
    let monitor = h.monitor();
    let pid = monitor.pid();
    let running = monitor.status();
    assert_eq!((running.state, running.exit.as_deref(), running.stopped_for), (HostState::Running, None, None), "{running:?}");

    signal(pid, "STOP");
    wait_until(Duration::from_secs(5), "the host reported stopped", || monitor.status().state == HostState::Stopped);
    let stopped = monitor.status();
    assert!(matches!(stopped.proc_state, Some('T' | 't')), "{stopped:?}");
    assert!(stopped.stopped_for.is_some(), "{stopped:?}");
    // Messages in flight: the stopped host takes none of them.
    for id in 0..10 {
        assert!(h.try_send(10_000 + id));
    }

    let started = Instant::now();
    let limits = JoinLimits { report: Duration::from_secs(20), stopped: Duration::from_millis(300) };
    let err = h.kernel.join_within(limits).expect_err("a join of a stopped host succeeded");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "the join waited {took:?} on a stopped host");
    assert_eq!(err.code(), ErrorCode::Timeout, "{err}");
    let text = err.to_string();
    assert!(text.contains(&format!("pid {pid}")) && text.contains("stopped") && text.contains("killed"), "{text}");

    // Killed: exited by SIGKILL, and its kernel's status words taken over (every waiter sees it).
    let end = monitor.status();
    assert_eq!(end.state, HostState::Exited, "{end:?}");
    assert!(end.exit.as_deref().is_some_and(|e| e.contains("SIGKILL")), "{end:?}");
    assert!(gone(pid));
    let cb = h.region.control();
    assert_eq!(cb.state.load(Ordering::Acquire), KernelState::Terminated as u32);
    assert_eq!(cb.error_code.load(Ordering::Acquire), kernel_error::HANDLER_FAULT);
    // Idempotent: the report was given once.
    h.kernel.join_within(limits).expect("a second join");
}

#[test]
fn a_join_of_a_host_that_does_not_report_times_out_naming_it() {
    let mut h = Harness::launch(8);
    let pid = h.pid();
    signal(pid, "STOP");
    let started = Instant::now();
    // The report limit runs out before the stopped limit: the plain timeout, naming the state.
    let err = h
        .kernel
        .join_within(JoinLimits { report: Duration::from_millis(400), stopped: Duration::from_secs(60) })
        .expect_err("joined a stopped host");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert_eq!(err.code(), ErrorCode::Timeout, "{err}");
    let text = err.to_string();
    assert!(text.contains("timed out after 400 ms") && text.contains(&format!("pid {pid}, stopped")) && text.contains("killed"), "{text}");
    wait_until(Duration::from_secs(5), "the killed host to go", || gone(pid));
}

#[test]
fn a_stopped_then_continued_host_loses_and_duplicates_nothing() {
    let mut h = Harness::launch(64);
    let monitor = h.monitor();
    let pid = monitor.pid();
    let seen_stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut pauser = None;
    h.stream(200_000, 48, 50_000, || {
        signal(pid, "STOP");
        let (monitor, seen) = (monitor.clone(), Arc::clone(&seen_stopped));
        pauser = Some(thread::spawn(move || {
            let until = Instant::now() + Duration::from_millis(500);
            while Instant::now() < until {
                if monitor.status().state == HostState::Stopped {
                    seen.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(20));
            }
            signal(pid, "CONT");
        }));
    });
    pauser.expect("the pause ran").join().expect("pauser thread");
    assert!(seen_stopped.load(std::sync::atomic::Ordering::Relaxed), "the monitor never saw the host stopped");
    let status = monitor.status();
    assert_eq!(status.state, HostState::Running, "{status:?}");
    assert!(status.since_progress < Duration::from_secs(5), "{status:?}");
    request_terminate(h.region.control(), true);
    h.kernel.join_within(JoinLimits::default()).expect("a clean stop after SIGCONT");
    assert_eq!(monitor.status().exit.as_deref(), Some("exit status: 0"));
}

#[test]
fn a_host_killed_with_messages_in_flight_is_a_fault_the_join_reports() {
    let mut h = Harness::launch(256);
    h.stream(500, 48, u64::MAX, || {});
    let monitor = h.monitor();
    let pid = monitor.pid();
    let mut sent = 0;
    while sent < 200 && h.try_send(1_000 + sent) {
        sent += 1;
    }
    signal(pid, "KILL");
    let cb = h.region.control();
    wait_until(Duration::from_secs(5), "the dead host's kernel to read terminated", || {
        cb.state.load(Ordering::Acquire) == KernelState::Terminated as u32
    });
    assert_eq!(cb.error_code.load(Ordering::Acquire), kernel_error::HANDLER_FAULT);
    let started = Instant::now();
    let err = h.kernel.join_within(JoinLimits::default()).expect_err("joined a killed host");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert_eq!(err.code(), ErrorCode::KernelError, "{err}");
    let text = err.to_string();
    assert!(text.contains("kernel host process died (signal: 9 (SIGKILL))") && text.contains(&format!("pid {pid}")), "{text}");
    let status = monitor.status();
    assert_eq!(status.state, HostState::Exited);
    assert!(status.exit.as_deref().is_some_and(|e| e.contains("SIGKILL")), "{status:?}");
    // Replies taken before the kill were checked by `stream`; the rest never come twice.
    let mut late = Vec::new();
    while let Some(id) = h.try_recv() {
        late.push(id);
    }
    let unique: std::collections::BTreeSet<_> = late.iter().collect();
    assert_eq!(unique.len(), late.len(), "duplicated replies {late:?}");
    assert!(late.iter().all(|id| (1_000..1_000 + sent).contains(id)), "{late:?}");
}

#[test]
fn the_host_ignores_shutdown_signals_and_has_a_process_group_of_its_own() {
    let mut h = Harness::launch(64);
    let pid = h.pid();
    h.stream(100, 16, u64::MAX, || {});
    let (_, group) = proc_stat(pid).expect("host in /proc");
    assert_eq!(group, pid, "the host leads a process group of its own");
    let (_, ours) = proc_stat(std::process::id()).expect("self in /proc");
    assert_ne!(group, ours, "the host is outside the parent's process group");
    // SigIgn of /proc/<pid>/status: bit n-1 for signal n (SIGHUP 1, SIGINT 2, SIGTERM 15, SIGTTOU 22).
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("host status");
    let ignored = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .map(|m| u64::from_str_radix(m.trim(), 16).expect("hex mask"))
        .expect("SigIgn line");
    for n in [1, 2, 15, 22] {
        assert_ne!(ignored & (1 << (n - 1)), 0, "signal {n} not ignored by the host (SigIgn {ignored:#x})");
    }
    // What a Ctrl-C, a hang-up or a service manager's stop would send it: all ignored.
    for name in ["INT", "TERM", "HUP"] {
        signal(pid, name);
    }
    thread::sleep(Duration::from_millis(200));
    assert_eq!(h.monitor().status().state, HostState::Running);
    h.stream(1_000, 16, u64::MAX, || {});
    request_terminate(h.region.control(), true);
    h.kernel.join_within(JoinLimits::default()).expect("the host still stops when told to");
    assert_eq!(h.monitor().status().exit.as_deref(), Some("exit status: 0"));
}

#[test]
fn a_dropped_kernel_of_a_stopped_host_does_not_wait_long() {
    let h = Harness::launch(8);
    let pid = h.pid();
    signal(pid, "STOP");
    let started = Instant::now();
    drop(h);
    // Drop joins with the default limits: a stopped host is given up after STOPPED_LIMIT.
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    assert!(gone(pid));
}

/// Not a test on its own: the parent process of `a_parent_that_dies_takes_its_host_with_it`
/// (run by it with `RINGBRIDGE_FAULTS_PARENT` set): launches a host, prints its pid, then exits
/// or waits to be killed, as told.
#[test]
#[ignore = "helper process of the parent-death tests"]
fn parent_process() {
    let Ok(how) = std::env::var("RINGBRIDGE_FAULTS_PARENT") else { return };
    let mut h = Harness::launch(8);
    h.stream(100, 8, u64::MAX, || {});
    println!("HOSTPID={}", h.pid());
    if how == "exit" {
        // Exits with the kernel running and nothing joined (no destructor runs).
        std::process::exit(0);
    }
    thread::sleep(Duration::from_secs(60));
    std::process::exit(3);
}

fn host_of_a_parent_that(how: &str) -> (std::process::Child, u32) {
    let mut parent = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "parent_process", "--ignored", "--nocapture", "--test-threads=1"])
        .env("RINGBRIDGE_FAULTS_PARENT", how)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the parent process");
    let stdout = parent.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest's "test parent_process ... " may precede it on the same line.
            if let Some((_, pid)) = line.split_once("HOSTPID=") {
                let _ = tx.send(pid.trim().parse::<u32>().expect("pid"));
            }
        }
    });
    let pid = rx.recv_timeout(LIMIT).unwrap_or_else(|e| {
        let _ = parent.kill();
        panic!("the parent process printed no host pid: {e}")
    });
    (parent, pid)
}

#[test]
fn a_parent_that_exits_takes_its_host_with_it() {
    let (mut parent, pid) = host_of_a_parent_that("exit");
    let status = parent.wait().expect("parent exit");
    assert!(status.success(), "{status}");
    wait_until(Duration::from_secs(5), "the host of an exited parent to go", || gone(pid));
}

#[test]
fn a_parent_killed_with_sigkill_takes_its_host_with_it() {
    let (mut parent, pid) = host_of_a_parent_that("wait");
    assert!(!gone(pid), "the host runs while its parent does");
    parent.kill().expect("kill -9 the parent");
    let _ = parent.wait();
    wait_until(Duration::from_secs(5), "the host of a killed parent to go", || gone(pid));
}

#[test]
fn errors_name_what_was_wrong() {
    // A launch request for a region that is not shared memory is refused before a host starts.
    let command = host();
    let spec = LaunchSpec { isolation: Isolation::Process(&command), ..LaunchSpec::new("cpu", "echo") };
    let ring = RingConfig { capacity: 8, slot_size: 64 };
    let region = Region::alloc(ring, ring).expect("region");
    let err: Error = ProcessKernel::spawn(&command, &[LaunchRequest::of(&spec)], vec![region], Box::new(|| {}))
        .err()
        .expect("spawned over private memory");
    // A caller's mistake, not memory that breaks the protocol: INVALID_ARGUMENT since issue #11.
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    assert!(err.to_string().contains("shared memory"), "{err}");
}
