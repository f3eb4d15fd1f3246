//! Process isolation on the CPU backend (no GPU needed): the kernel runs in a kernel host
//! process (`ringbridge-kernel-host`) over shared memory, and a host that crashes is a fault
//! the parent reports — after which the next launch works.

use std::time::Duration;

use ringbridge_core::backend::{Isolation, LaunchSpec};
use ringbridge_core::host::Session;
use ringbridge_core::isolate::HostCommand;
use ringbridge_core::protocol::{kernel_error, KernelState, RingConfig};
use ringbridge_core::{Error, ErrorCode, Ordering};

const LIMIT: Duration = Duration::from_secs(10);

fn host() -> HostCommand {
    HostCommand::new(env!("CARGO_BIN_EXE_ringbridge-kernel-host"))
}

fn launch_isolated(command: &HostCommand, handler: &str, capacity: u32) -> Result<Session, Error> {
    let spec = LaunchSpec { isolation: Isolation::Process(command), ..LaunchSpec::new("cpu", handler) };
    let ring = RingConfig { capacity, slot_size: 64 };
    Session::launch_spec(&spec, ring, ring)
}

/// Streams `count` numbered messages through an echo kernel and checks every reply's order
/// and payload (an in-flight window keeps both rings busy).
fn stream_echo(session: &mut Session, count: u64) {
    let mut next_reply = 0u64;
    for i in 0..count {
        session.send(1, i, &i.to_le_bytes(), LIMIT).unwrap_or_else(|e| panic!("send {i}: {e}"));
        while session.pending_replies() > 0 || i + 1 - next_reply >= 48 {
            let (id, value) = session
                .recv_with(LIMIT, |h, p| (h.correlation_id, u64::from_le_bytes(p.try_into().unwrap())))
                .unwrap_or_else(|e| panic!("reply {next_reply}: {e}"));
            assert_eq!((id, value), (next_reply, next_reply), "reply out of order or corrupt");
            next_reply += 1;
        }
    }
    while next_reply < count {
        let id = session.recv_with(LIMIT, |h, _| h.correlation_id).unwrap();
        assert_eq!(id, next_reply);
        next_reply += 1;
    }
}

#[test]
#[cfg_attr(miri, ignore = "starts a kernel host process (socketpair, memfd, fork/exec): foreign calls Miri cannot run")]
fn echo_through_a_kernel_host_loses_nothing() {
    let command = host();
    let mut session = launch_isolated(&command, "echo", 64).unwrap();
    assert_eq!(session.launched().backend.name, "cpu");
    assert_eq!(session.launched().transport, "shared-memory");
    stream_echo(&mut session, 200_000);
    let end = session.terminate(true, LIMIT).unwrap();
    assert_eq!((end.undelivered, end.replies.len()), (0, 0));
}

#[test]
#[cfg_attr(miri, ignore = "starts a kernel host process (socketpair, memfd, fork/exec): foreign calls Miri cannot run")]
fn a_crashing_host_is_a_fault_and_the_next_launch_works() {
    let command = host();
    let mut session = launch_isolated(&command, "trap", 8).unwrap();
    session.send(1, 7, b"boom", LIMIT).unwrap();
    let err = session.recv_with(LIMIT, |_, _| ()).expect_err("a reply from a crashed host");
    assert_eq!(err.code(), ErrorCode::Closed, "{err}");
    let cb = session.region().control();
    assert_eq!(cb.state.load(Ordering::Acquire), KernelState::Terminated as u32);
    assert_eq!(cb.error_code.load(Ordering::Acquire), kernel_error::HANDLER_FAULT);
    let err = session.terminate(false, LIMIT).expect_err("terminate of a crashed host");
    assert_eq!(err.code(), ErrorCode::KernelError);
    assert!(err.to_string().contains("kernel host process died"), "{err}");

    // The fault ended that host only: a new launch gets a new host and works.
    let mut again = launch_isolated(&command, "echo", 8).unwrap();
    stream_echo(&mut again, 1_000);
    again.terminate(true, LIMIT).unwrap();
}

#[test]
#[cfg_attr(miri, ignore = "starts a kernel host process (socketpair, memfd, fork/exec): foreign calls Miri cannot run")]
fn launch_errors_cross_the_process_boundary_with_their_code() {
    let command = host();
    let err = launch_isolated(&command, "no-such-handler", 8).err().expect("unknown handler launched");
    assert_eq!(err.code(), ErrorCode::UnknownHandler, "{err}");
    assert!(err.to_string().contains("no-such-handler"), "{err}");

    let err = launch_isolated(&HostCommand::new("/nonexistent/ringbridge-kernel-host"), "echo", 8).err().expect("launched");
    assert_eq!(err.code(), ErrorCode::BackendUnavailable);
    assert!(err.to_string().contains("/nonexistent/ringbridge-kernel-host"), "{err}");

    // A program that is not a kernel host exits without answering.
    let err = launch_isolated(&HostCommand::new("/bin/true"), "echo", 8).err().expect("launched");
    assert_eq!(err.code(), ErrorCode::BackendUnavailable);
    assert!(err.to_string().contains("exited"), "{err}");
}

#[test]
fn the_trap_handler_is_refused_in_process() {
    let ring = RingConfig { capacity: 8, slot_size: 64 };
    let err = Session::launch("cpu", "trap", ring, ring).err().expect("trap launched in-process");
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    assert!(err.to_string().contains("isolation 'process'"), "{err}");
}

#[test]
#[cfg_attr(miri, ignore = "starts a kernel host process (socketpair, memfd, fork/exec): foreign calls Miri cannot run")]
fn a_dropped_session_stops_its_host() {
    let command = host();
    let mut session = launch_isolated(&command, "echo", 8).unwrap();
    stream_echo(&mut session, 100);
    // Dropping without terminate joins the host (abandon) instead of leaving it running.
    let started = std::time::Instant::now();
    drop(session);
    assert!(started.elapsed() < LIMIT);
}

#[test]
#[cfg_attr(miri, ignore = "opens a file, which Miri's isolation forbids")]
fn a_descriptor_mmap_refuses_is_an_os_error() {
    // mmap(MAP_SHARED, PROT_WRITE) of a file opened read-only fails with EACCES (root too: it
    // checks the open mode): a failed system call, named with its errno, not a protocol
    // violation (it was PROTOCOL before issue #11).
    let path = std::env::temp_dir().join(format!("ringbridge-read-only-{}", std::process::id()));
    std::fs::write(&path, [0u8; 4096]).expect("write a page");
    let file = std::fs::File::open(&path).expect("open read-only");
    let _ = std::fs::remove_file(&path);
    let err = ringbridge_core::isolate::shm::SharedMemory::map(file.into()).err().expect("mapped a read-only file for writing");
    assert_eq!(err.code(), ErrorCode::Os, "{err}");
    assert!(err.to_string().contains("mmap"), "{err}");
}
