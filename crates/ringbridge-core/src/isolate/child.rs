//! The kernel host's side: receive the region, launch the kernel, relay doorbells and wakes,
//! stop it when told to or when the parent goes away.
#![forbid(unsafe_code)]

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};

use super::os_error;
use super::shm::SharedMemory;
use super::wire::{self, tag, LaunchRequest};
use crate::backend::{self, LaunchSpec};
use crate::transport::Region;
use crate::Error;

static IN_KERNEL_HOST: AtomicBool = AtomicBool::new(false);

/// Whether this process is a kernel host (handlers that end their process are allowed here).
pub fn in_kernel_host() -> bool {
    IN_KERNEL_HOST.load(Ordering::Relaxed)
}

/// Serves one kernel over the control socket on stdin and returns the exit code: 0 when the
/// kernel was stopped and reported, 1 when the parent could not even be told why not.
///
/// Makes this process a kernel host first: SIGINT, SIGTERM, SIGHUP (and SIGTTOU) are ignored from here on
/// ([`super::signals`]), as shutdown is the parent's to order; the host still stops when the
/// parent says so or goes away.
pub fn serve_stdin() -> i32 {
    if let Err(e) = super::signals::ignore_shutdown_signals() {
        // Serving matters more: the parent still stops this host; a group signal may end it first.
        eprintln!("ringbridge kernel host: {e}; serving anyway");
    }
    let ctl = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("ringbridge kernel host: no control socket on stdin: {e}");
            return 1;
        }
    };
    match serve(&ctl) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("ringbridge kernel host: {e}");
            1
        }
    }
}

/// Serves one kernel over `ctl` (see the packet table in [`super`]).
///
/// # Errors
/// Only when the parent cannot be reached or broke the packet protocol; every failure of the
/// kernel itself is reported to the parent instead.
pub fn serve(ctl: &OwnedFd) -> Result<(), Error> {
    IN_KERNEL_HOST.store(true, Ordering::Relaxed);
    // One `F` + launch pair per stage; a route's stages say how many follow (spec §14).
    let mut stages = Vec::new();
    loop {
        let memfd = recv_region(ctl)?;
        let request = LaunchRequest::decode(&wire::recv(ctl)?.ok_or_else(|| gone("its launch request"))?)?;
        let last = request.following == 0;
        stages.push((memfd, request));
        if last {
            break;
        }
    }
    let bell = ctl.try_clone().map_err(os_error("dup of the control socket"))?;
    // A doorbell that finds the socket full is redundant: the parent has doorbells queued.
    let notify = Box::new(move || wire::send_nowait(&bell, &[tag::DOORBELL]));
    let regions: Result<Vec<_>, Error> = stages
        .iter()
        .map(|(fd, _)| {
            fd.try_clone().map_err(os_error("dup of a region descriptor")).and_then(SharedMemory::map).and_then(Region::attach_shared)
        })
        .collect();
    let specs: Vec<LaunchSpec<'_>> = stages.iter().map(|(_, r)| r.spec()).collect();
    let launched = regions.and_then(|mut regions| match specs.len() {
        1 => backend::launch(&specs[0], regions.remove(0), notify).map(|(k, l)| (k, vec![l])),
        _ => backend::launch_route(&specs, regions, notify),
    });
    let (mut kernel, launched) = match launched {
        Ok(k) => k,
        Err(e) => return wire::send(ctl, &wire::encode_error(&e)),
    };
    for l in &launched {
        wire::send(ctl, &wire::encode_launched(l))?;
    }
    loop {
        match wire::recv(ctl) {
            Ok(Some(p)) if p == [tag::WAKE] => kernel.wake(),
            Ok(Some(p)) if p == [tag::JOIN] => break,
            Ok(Some(p)) => {
                eprintln!("ringbridge kernel host: unexpected packet {:?}; stopping the kernel", String::from_utf8_lossy(&p));
                break;
            }
            // The parent closed its end (exited or died): stop the kernel, abandoning its input.
            Ok(None) | Err(_) => break,
        }
    }
    let report = match kernel.join() {
        Ok(()) => vec![tag::DONE],
        Err(e) => wire::encode_error(&e),
    };
    // The parent may be gone; the kernel is stopped either way.
    let _ = wire::send(ctl, &report);
    Ok(())
}

fn gone(what: &str) -> Error {
    Error::Protocol(format!("the parent process closed the control socket before sending {what}"))
}

/// Receives the `F` packet and the memfd riding on it.
fn recv_region(ctl: &OwnedFd) -> Result<OwnedFd, Error> {
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    let msg = rustix::net::recvmsg(ctl, &mut [std::io::IoSliceMut::new(&mut byte)], &mut control, RecvFlags::CMSG_CLOEXEC)
        .map_err(os_error("recvmsg of the region"))?;
    if msg.bytes == 0 {
        return Err(gone("the region"));
    }
    let fd = control.drain().find_map(|m| match m {
        RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
        _ => None,
    });
    match (byte[0], fd) {
        (tag::REGION, Some(fd)) => Ok(fd),
        _ => Err(Error::Protocol("the first packet from the parent must carry the region's descriptor".into())),
    }
}
