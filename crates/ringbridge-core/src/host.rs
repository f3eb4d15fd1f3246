//! The host end for Rust callers: a [`Session`] owns a launched kernel, the input ring's
//! producer and the output ring's consumer, and implements the host steps of spec §5 (H1–H7)
//! including the two doorbells of §8. The Node binding does the same steps in JavaScript.
#![forbid(unsafe_code)]

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::backend::{self, Isolation, Kernel, LaunchSpec, Launched};
use crate::protocol::{FrameHeader, KernelState, RingConfig, WAIT_INPUT, WAIT_OUTPUT};
use crate::ring::{Consumer, PopError, Producer, PushError};
use crate::sync::{fence, Ordering};
use crate::transport::{Region, RegionRing};
use crate::Error;

/// A counter the kernel bumps to wake a waiting host thread.
#[derive(Default)]
struct Doorbell {
    rings: Mutex<u64>,
    cond: Condvar,
}

impl Doorbell {
    fn ring(&self) {
        let mut n = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        *n += 1;
        self.cond.notify_all();
    }

    fn count(&self) -> u64 {
        *self.rings.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait_past(&self, seen: u64, limit: Duration) {
        let guard = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self.cond.wait_timeout_while(guard, limit, |n| *n == seen);
    }
}

/// A launched ring kernel and the host's two ring ends.
pub struct Session {
    kernel: Box<dyn Kernel>,
    launched: Launched,
    tx: Producer<RegionRing>,
    rx: Consumer<RegionRing>,
    doorbell: Arc<Doorbell>,
}

impl Session {
    /// Allocates a region for the two ring shapes and launches the built-in `handler` on `backend`.
    ///
    /// # Errors
    /// Invalid ring shapes, unknown handler or backend, or a backend that cannot start.
    pub fn launch(backend: &str, handler: &str, input: RingConfig, output: RingConfig) -> Result<Self, Error> {
        let spec = LaunchSpec { backend, handler, transport: "auto", shape: None, isolation: Isolation::Thread, user: None, device: 0 };
        Self::launch_spec(&spec, input, output)
    }

    /// Launches with every option of [`LaunchSpec`] (transport, launch shape).
    ///
    /// # Errors
    /// As [`Session::launch`].
    pub fn launch_spec(spec: &LaunchSpec<'_>, input: RingConfig, output: RingConfig) -> Result<Self, Error> {
        let region = match spec.isolation {
            Isolation::Thread => Region::alloc(input, output)?,
            Isolation::Process(_) => Region::alloc_shared(input, output)?,
        };
        let doorbell = Arc::new(Doorbell::default());
        let bell = Arc::clone(&doorbell);
        let (kernel, launched) = backend::launch(spec, Arc::clone(&region), Box::new(move || bell.ring()))?;
        Ok(Self { tx: Producer::new(region.input()), rx: Consumer::new(region.output()), kernel, launched, doorbell })
    }

    /// The backend and transport running the kernel, and why they were chosen.
    pub fn launched(&self) -> &Launched {
        &self.launched
    }

    /// The shared region (control block and rings).
    pub fn region(&self) -> &Arc<Region> {
        self.kernel.region()
    }

    /// Stages one message without publishing it (see [`flush`](Session::flush)).
    ///
    /// # Errors
    /// [`PushError::Full`] when the input ring has no free slot; [`PushError::TooLarge`].
    pub fn stage(&mut self, type_id: u16, correlation_id: u64, payload: &[u8]) -> Result<(), PushError> {
        self.tx.stage(FrameHeader { length: 0, type_id, flags: 0, correlation_id }, payload)
    }

    /// Free input slots (re-reading the kernel's head if needed).
    pub fn free_slots(&mut self, wanted: u64) -> u64 {
        self.tx.free_slots(wanted)
    }

    /// Publishes staged messages (H3) and wakes the kernel if it announced sleep (H4).
    pub fn flush(&mut self) {
        if self.tx.staged() == 0 {
            return;
        }
        self.tx.publish();
        self.wake_kernel_if_sleeping();
    }

    fn wake_kernel_if_sleeping(&self) {
        wake_if_sleeping(self.kernel.as_ref());
    }

    /// Stages and publishes one message.
    ///
    /// # Errors
    /// As [`stage`](Session::stage).
    pub fn try_send(&mut self, type_id: u16, correlation_id: u64, payload: &[u8]) -> Result<(), PushError> {
        self.stage(type_id, correlation_id, payload)?;
        self.flush();
        Ok(())
    }

    /// Sends one message, waiting up to `limit` for a free slot.
    ///
    /// # Errors
    /// [`Error::MessageTooLarge`], [`Error::Timeout`], or [`Error::Closed`] once the kernel ended.
    pub fn send(&mut self, type_id: u16, correlation_id: u64, payload: &[u8], limit: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + limit;
        loop {
            match self.try_send(type_id, correlation_id, payload) {
                Ok(()) => return Ok(()),
                Err(PushError::TooLarge { length, max }) => return Err(Error::MessageTooLarge { length, max }),
                Err(PushError::Full) => self.wait(WAIT_INPUT, deadline, "input ring space", |s| s.tx.free_slots(1) > 0)?,
            }
        }
    }

    /// Takes the next reply if one is published, passing header and payload to `read`. Releases
    /// the slot at once (H6) and wakes the kernel if it waits for output room.
    pub fn try_recv_with<R>(&mut self, read: impl FnOnce(FrameHeader, &[u8]) -> R) -> Result<R, PopError> {
        let r = self.rx.pop_with(read);
        if self.rx.unreleased() > 0 {
            self.rx.release();
            self.wake_kernel_if_sleeping();
        }
        r
    }

    /// Takes up to `max` published replies, passing each header and payload to `read`, then
    /// releases them with one store of `head` (C4) and one doorbell check: the streaming path.
    /// Returns how many were taken.
    ///
    /// # Errors
    /// [`Error::Protocol`] for a corrupt frame (the replies before it are released).
    pub fn recv_batch_with(&mut self, max: u64, read: impl FnMut(FrameHeader, &[u8])) -> Result<u64, Error> {
        self.halves().1.recv_batch_with(max, read)
    }

    /// Stages one message whose payload `fill` writes in place (returning its length): the
    /// zero-copy path. Not visible until [`flush`](Session::flush).
    ///
    /// # Errors
    /// [`PushError::Full`]; [`PushError::TooLarge`] if `fill` returns more than the slot holds.
    pub fn stage_with(&mut self, type_id: u16, correlation_id: u64, fill: impl FnOnce(&mut [u8]) -> usize) -> Result<(), PushError> {
        self.halves().0.stage_with(type_id, correlation_id, fill)
    }

    /// Splits the session into its sending and receiving halves, for a producer and a consumer
    /// on two threads (the two ring ends are independent, spec §5).
    pub fn halves(&mut self) -> (SendHalf<'_>, RecvHalf<'_>) {
        let kernel: &dyn Kernel = self.kernel.as_ref();
        (SendHalf { tx: &mut self.tx, kernel }, RecvHalf { rx: &mut self.rx, kernel })
    }

    /// Waits up to `limit` for the next reply.
    ///
    /// # Errors
    /// [`Error::Timeout`]; [`Error::Closed`] if the kernel terminated with nothing left;
    /// [`Error::Protocol`] for a corrupt frame.
    pub fn recv_with<R>(&mut self, limit: Duration, mut read: impl FnMut(FrameHeader, &[u8]) -> R) -> Result<R, Error> {
        let deadline = Instant::now() + limit;
        loop {
            match self.try_recv_with(&mut read) {
                Ok(r) => return Ok(r),
                Err(PopError::BadFrame { header, max }) => {
                    return Err(Error::Protocol(format!(
                        "reply frame length {} exceeds slot payload {max}",
                        header.length
                    )))
                }
                Err(PopError::Empty) => self.wait(WAIT_OUTPUT, deadline, "a reply", |s| s.rx.available(1) > 0)?,
            }
        }
    }

    /// H7: announce that we wait, re-check, sleep on the doorbell; bounded by `deadline`.
    fn wait(
        &mut self,
        bit: u32,
        deadline: Instant,
        what: &'static str,
        mut ready: impl FnMut(&mut Self) -> bool,
    ) -> Result<(), Error> {
        let start = Instant::now();
        let region = Arc::clone(self.region());
        let cb = region.control();
        loop {
            let seen = self.doorbell.count();
            // ORDERING: (H7) SeqCst store then SeqCst fence before re-reading the index; pairs
            // with the kernel's SeqCst fence after publishing and before loading host_waiting (K7).
            cb.host_waiting.store(bit, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if ready(self) {
                cb.host_waiting.store(0, Ordering::Relaxed);
                return Ok(());
            }
            if backend::state(cb) == Some(KernelState::Terminated) && !ready(self) {
                cb.host_waiting.store(0, Ordering::Relaxed);
                return Err(Error::Closed);
            }
            let now = Instant::now();
            if now >= deadline {
                cb.host_waiting.store(0, Ordering::Relaxed);
                return Err(Error::Timeout { what, millis: limit_ms(deadline, start) });
            }
            self.doorbell.wait_past(seen, (deadline - now).min(Duration::from_millis(50)));
        }
    }

    /// Replies published and not yet taken.
    pub fn pending_replies(&mut self) -> u64 {
        self.rx.available(u64::MAX)
    }

    /// Asks the kernel to stop (draining or abandoning, spec §9) and waits for it, taking every
    /// reply it produces meanwhile: a drain needs the host to keep consuming (§9), or a full
    /// output ring would stall the kernel. If the kernel has not stopped within `limit`, it is
    /// abandoned.
    ///
    /// # Errors
    /// What the kernel's runner left behind.
    pub fn terminate(mut self, drain: bool, limit: Duration) -> Result<Termination, Error> {
        self.flush();
        backend::request_terminate(self.region().control(), drain);
        self.kernel.wake();
        let deadline = Instant::now() + limit;
        let mut replies = Vec::new();
        loop {
            let seen = self.doorbell.count();
            while let Ok(reply) = self.try_recv_with(|h, p| (h, p.to_vec())) {
                replies.push(reply);
            }
            if backend::state(self.region().control()) == Some(KernelState::Terminated) {
                break;
            }
            if Instant::now() >= deadline {
                backend::request_terminate(self.region().control(), false);
                self.kernel.wake();
                break;
            }
            // H7: announce, re-check, then sleep on the doorbell.
            self.region().control().host_waiting.store(WAIT_OUTPUT, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if self.rx.available(1) == 0 && backend::state(self.region().control()) != Some(KernelState::Terminated) {
                self.doorbell.wait_past(seen, Duration::from_millis(10));
            }
        }
        self.kernel.join()?;
        while let Ok(reply) = self.try_recv_with(|h, p| (h, p.to_vec())) {
            replies.push(reply);
        }
        let cb = self.region().control();
        cb.host_waiting.store(0, Ordering::Relaxed);
        let head = cb.input_head.value.load(Ordering::Acquire);
        let tail = cb.input_tail.value.load(Ordering::Relaxed);
        Ok(Termination { undelivered: tail - head, replies })
    }
}

/// What [`Session::terminate`] hands back.
#[derive(Debug)]
pub struct Termination {
    /// Messages sent that the kernel never took.
    pub undelivered: u64,
    /// Replies taken while the kernel stopped, in order (header and payload).
    pub replies: Vec<(FrameHeader, Vec<u8>)>,
}

fn limit_ms(deadline: Instant, start: Instant) -> u64 {
    deadline.saturating_duration_since(start).as_millis() as u64
}

fn wake_if_sleeping(kernel: &dyn Kernel) {
    // ORDERING: (D2) SeqCst fence between our index store and the load of kernel_sleeping;
    // pairs with the kernel's SeqCst store of kernel_sleeping and re-check (D1).
    fence(Ordering::SeqCst);
    if kernel.region().control().kernel_sleeping.load(Ordering::Relaxed) != 0 {
        kernel.wake();
    }
}

/// The sending half of a [`Session`] (see [`Session::halves`]).
pub struct SendHalf<'a> {
    tx: &'a mut Producer<RegionRing>,
    kernel: &'a dyn Kernel,
}

impl SendHalf<'_> {
    /// Free input slots (re-reading the kernel's head if needed).
    pub fn free_slots(&mut self, wanted: u64) -> u64 {
        self.tx.free_slots(wanted)
    }

    /// As [`Session::stage_with`].
    ///
    /// # Errors
    /// [`PushError::Full`]; [`PushError::TooLarge`].
    pub fn stage_with(&mut self, type_id: u16, correlation_id: u64, fill: impl FnOnce(&mut [u8]) -> usize) -> Result<(), PushError> {
        self.tx
            .stage_with(|area| {
                let length = fill(area) as u32;
                Some(FrameHeader { length, type_id, flags: 0, correlation_id })
            })
            .map(drop)
    }

    /// Publishes staged messages (H3) and wakes the kernel if it announced sleep (H4).
    pub fn flush(&mut self) {
        if self.tx.staged() > 0 {
            self.tx.publish();
            wake_if_sleeping(self.kernel);
        }
    }
}

/// The receiving half of a [`Session`] (see [`Session::halves`]).
pub struct RecvHalf<'a> {
    rx: &'a mut Consumer<RegionRing>,
    kernel: &'a dyn Kernel,
}

impl RecvHalf<'_> {
    /// As [`Session::recv_batch_with`].
    ///
    /// # Errors
    /// [`Error::Protocol`] for a corrupt frame.
    pub fn recv_batch_with(&mut self, max: u64, mut read: impl FnMut(FrameHeader, &[u8])) -> Result<u64, Error> {
        let mut n = 0;
        let mut failure = None;
        while n < max {
            match self.rx.pop_with(&mut read) {
                Ok(()) => n += 1,
                Err(PopError::Empty) => break,
                Err(PopError::BadFrame { header, max }) => {
                    failure = Some(Error::Protocol(format!("reply frame length {} exceeds slot payload {max}", header.length)));
                    break;
                }
            }
        }
        if self.rx.unreleased() > 0 {
            self.rx.release();
            wake_if_sleeping(self.kernel);
        }
        failure.map_or(Ok(n), Err)
    }
}
