//! The host end for Rust callers: a [`Session`] owns a launched kernel, the input ring's
//! producer and the output ring's consumer, and implements the host steps of spec §5 (H1–H7)
//! including the two doorbells of §8. The Node binding does the same steps in JavaScript.
#![forbid(unsafe_code)]

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::backend::{self, Isolation, Kernel, LaunchSpec, Launched};
use crate::protocol::{FrameHeader, KernelState, RingConfig, WAIT_INPUT, WAIT_OUTPUT};
use crate::ring::{Consumer, PopError, Producer, PushError, ReadChunk, WriteChunk};
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
    /// The region of the input ring (a route's first stage) and of the output ring (its last).
    in_region: Arc<Region>,
    out_region: Arc<Region>,
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
        let spec = LaunchSpec::new(backend, handler);
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
        Ok(Self {
            tx: Producer::new(region.input()),
            rx: Consumer::new(region.output()),
            kernel,
            launched,
            in_region: Arc::clone(&region),
            out_region: region,
            doorbell,
        })
    }

    /// Launches a route (spec §14): `specs[i]` runs over input ring `rings[i]` and output ring
    /// `rings[i + 1]`, which is stage *i+1*'s input ring. The session sends to the first stage
    /// and receives from the last; the stages in between talk GPU to GPU (or thread to thread).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] unless `rings` has one more entry than `specs`; as
    /// [`backend::launch_route`].
    pub fn launch_route(specs: &[LaunchSpec<'_>], rings: &[RingConfig]) -> Result<(Self, Vec<Launched>), Error> {
        if rings.len() != specs.len() + 1 {
            return Err(Error::InvalidConfig {
                what: "route ring shapes".into(),
                value: Some(rings.len() as u64),
                expected: format!("{} (the first stage's input, then each stage's output)", specs.len() + 1),
            });
        }
        let regions = specs
            .iter()
            .zip(rings.windows(2))
            .map(|(spec, r)| match spec.isolation {
                Isolation::Thread => Region::alloc(r[0], r[1]),
                Isolation::Process(_) => Region::alloc_shared(r[0], r[1]),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let doorbell = Arc::new(Doorbell::default());
        let bell = Arc::clone(&doorbell);
        let (first, last) = (Arc::clone(&regions[0]), Arc::clone(regions.last().expect("checked: two stages or more")));
        let (kernel, launched) = backend::launch_route(specs, regions, Box::new(move || bell.ring()))?;
        let session = Self {
            tx: Producer::new(first.input()),
            rx: Consumer::new(last.output()),
            kernel,
            launched: launched[0].clone(),
            in_region: first,
            out_region: last,
            doorbell,
        };
        Ok((session, launched))
    }

    /// The backend and transport running the kernel, and why they were chosen.
    pub fn launched(&self) -> &Launched {
        &self.launched
    }

    /// The shared region (control block and rings).
    pub fn region(&self) -> &Arc<Region> {
        &self.in_region
    }

    /// Every region of the kernel (one; a route's stages first to last).
    pub fn regions(&self) -> Vec<Arc<Region>> {
        self.kernel.regions()
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
        wake_if_sleeping(self.kernel.as_ref(), &self.in_region);
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
        let deadline = deadline_after(limit);
        loop {
            match self.try_send(type_id, correlation_id, payload) {
                Ok(()) => return Ok(()),
                Err(PushError::TooLarge { length, max }) => return Err(Error::MessageTooLarge { length, max }),
                Err(PushError::Full) => {
                    let region = Arc::clone(&self.in_region);
                    self.wait(&region, WAIT_INPUT, deadline, "input ring space", |s| s.tx.free_slots(1) > 0)?
                }
            }
        }
    }

    /// Takes the next reply if one is published, passing header and payload to `read`. Releases
    /// the slot at once (H6) and wakes the kernel if it waits for output room.
    pub fn try_recv_with<R>(&mut self, read: impl FnOnce(FrameHeader, &[u8]) -> R) -> Result<R, PopError> {
        let r = self.rx.pop_with(read);
        if self.rx.unreleased() > 0 {
            self.rx.release();
            wake_if_sleeping(self.kernel.as_ref(), &self.out_region);
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
        let doorbell: &Doorbell = &self.doorbell;
        (
            SendHalf { tx: &mut self.tx, kernel, region: &self.in_region, doorbell },
            RecvHalf { rx: &mut self.rx, kernel, region: &self.out_region, doorbell },
        )
    }

    /// Waits up to `limit` for the next reply.
    ///
    /// # Errors
    /// [`Error::Timeout`]; [`Error::Closed`] if the kernel terminated with nothing left;
    /// [`Error::Protocol`] for a corrupt frame.
    pub fn recv_with<R>(&mut self, limit: Duration, mut read: impl FnMut(FrameHeader, &[u8]) -> R) -> Result<R, Error> {
        let deadline = deadline_after(limit);
        loop {
            match self.try_recv_with(&mut read) {
                Ok(r) => return Ok(r),
                Err(PopError::BadFrame { header, max }) => {
                    return Err(Error::Protocol(format!("reply frame length {} exceeds slot payload {max}", header.length)))
                }
                Err(PopError::Empty) => {
                    let region = Arc::clone(&self.out_region);
                    self.wait(&region, WAIT_OUTPUT, deadline, "a reply", |s| s.rx.available(1) > 0)?
                }
            }
        }
    }

    /// H7 for this session (see [`wait_on`]); `ready` re-checks with the session at hand.
    fn wait(
        &mut self,
        region: &Region,
        bit: u32,
        deadline: Instant,
        what: &'static str,
        mut ready: impl FnMut(&mut Self) -> bool,
    ) -> Result<(), Error> {
        let doorbell = Arc::clone(&self.doorbell);
        wait_on(&doorbell, region, bit, deadline, what, || ready(self))
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
        let deadline = deadline_after(limit);
        let mut replies = Vec::new();
        // A route stops stage by stage (spec §14): each stage drains into the next before the
        // next is told to stop; `abandon` abandons the first stage only, so every message the
        // route took comes out of its last stage.
        let regions = self.kernel.regions();
        for (i, region) in regions.iter().enumerate() {
            let stage_drain = drain || i > 0;
            backend::request_terminate(region.control(), stage_drain);
            self.kernel.wake();
            loop {
                let seen = self.doorbell.count();
                while let Ok(reply) = self.try_recv_with(|h, p| (h, p.to_vec())) {
                    replies.push(reply);
                }
                if backend::state(region.control()) == Some(KernelState::Terminated) {
                    break;
                }
                if Instant::now() >= deadline {
                    for r in &regions {
                        backend::request_terminate(r.control(), false);
                    }
                    self.kernel.wake();
                    break;
                }
                // H7: announce, re-check, then sleep on the doorbell.
                let out = self.out_region.control();
                out.host_waiting.store(WAIT_OUTPUT, Ordering::SeqCst);
                fence(Ordering::SeqCst);
                if self.rx.available(1) == 0 && backend::state(region.control()) != Some(KernelState::Terminated) {
                    self.doorbell.wait_past(seen, Duration::from_millis(10));
                }
            }
        }
        self.kernel.join()?;
        while let Ok(reply) = self.try_recv_with(|h, p| (h, p.to_vec())) {
            replies.push(reply);
        }
        self.out_region.control().host_waiting.store(0, Ordering::Relaxed);
        let cb = self.in_region.control();
        let head = cb.input_head.value.load(Ordering::Acquire);
        let tail = cb.input_tail.value.load(Ordering::Relaxed);
        // Wrapping (spec §7): a kernel side that broke I1 must not panic the host.
        Ok(Termination { undelivered: tail.wrapping_sub(head), replies })
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

/// The instant `limit` from now; a limit past what `Instant` can hold (`Duration::MAX` for
/// "no limit") is a century, not an overflow panic.
pub(crate) fn deadline_after(limit: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(limit).unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// H7: announce that we wait (`bit` of `host_waiting`), re-check with `ready`, sleep on the
/// doorbell; bounded by `deadline`. The bit is set and cleared with read-modify-writes, never a
/// plain store: the two halves of a session may wait at once, one for room and one for replies,
/// and a plain store by one would erase the other's announcement (the loom model
/// `h7_two_waiters_store_loses_a_wakeup` shows the lost wake-up).
fn wait_on(
    doorbell: &Doorbell,
    region: &Region,
    bit: u32,
    deadline: Instant,
    what: &'static str,
    mut ready: impl FnMut() -> bool,
) -> Result<(), Error> {
    let start = Instant::now();
    let cb = region.control();
    let done = |r: Result<(), Error>| {
        cb.host_waiting.fetch_and(!bit, Ordering::Relaxed);
        r
    };
    loop {
        let seen = doorbell.count();
        // ORDERING: (H7) SeqCst read-modify-write then SeqCst fence before re-reading the index;
        // pairs with the kernel's SeqCst fence after publishing and before loading host_waiting (K7).
        cb.host_waiting.fetch_or(bit, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if ready() {
            return done(Ok(()));
        }
        if backend::state(cb) == Some(KernelState::Terminated) && !ready() {
            return done(Err(Error::Closed));
        }
        let now = Instant::now();
        if now >= deadline {
            return done(Err(Error::Timeout { what, millis: limit_ms(deadline, start) }));
        }
        doorbell.wait_past(seen, (deadline - now).min(Duration::from_millis(50)));
    }
}

fn wake_if_sleeping(kernel: &dyn Kernel, region: &Region) {
    // ORDERING: (D2) SeqCst fence between our index store and the load of kernel_sleeping;
    // pairs with the kernel's SeqCst store of kernel_sleeping and re-check (D1).
    fence(Ordering::SeqCst);
    if region.control().kernel_sleeping.load(Ordering::Relaxed) != 0 {
        kernel.wake();
    }
}

/// The sending half of a [`Session`] (see [`Session::halves`]).
pub struct SendHalf<'a> {
    tx: &'a mut Producer<RegionRing>,
    kernel: &'a dyn Kernel,
    region: &'a Region,
    doorbell: &'a Doorbell,
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
            wake_if_sleeping(self.kernel, self.region);
        }
    }
}

impl<'a> SendHalf<'a> {
    /// Reserves up to `wanted` input slots to fill in place (spec §5.3); see [`SendChunk`].
    ///
    /// ```
    /// use ringbridge_core::{host::Session, protocol::{FrameHeader, RingConfig}};
    ///
    /// let ring = RingConfig { capacity: 8, slot_size: 64 };
    /// let mut session = Session::launch("cpu", "echo", ring, ring)?;
    /// let (mut tx, mut rx) = session.halves();
    /// // Fill five slots in place (header and payload) and publish them with one store.
    /// let mut chunk = tx.write_chunk(5);
    /// chunk.stamp(FrameHeader { length: 48, type_id: 1, flags: 0, correlation_id: 0 });
    /// let size = chunk.slot_size();
    /// let (first, wrapped) = chunk.as_mut_slices();
    /// for (i, slot) in first.chunks_exact_mut(size).chain(wrapped.chunks_exact_mut(size)).enumerate() {
    ///     slot[16] = i as u8; // the payload starts after the 16-byte header
    /// }
    /// chunk.commit(5);
    /// // Read the five echoes in place and release them with one store.
    /// let mut got = Vec::new();
    /// while got.len() < 5 {
    ///     let replies = rx.read_chunk(u64::MAX);
    ///     let (a, b) = replies.as_slices();
    ///     got.extend(a.chunks_exact(size).chain(b.chunks_exact(size)).map(|slot| slot[16]));
    ///     let n = replies.len();
    ///     replies.release(n);
    /// }
    /// assert_eq!(got, [0, 1, 2, 3, 4]);
    /// # Ok::<(), ringbridge_core::Error>(())
    /// ```
    pub fn write_chunk(&mut self, wanted: u64) -> SendChunk<'_> {
        SendChunk { chunk: self.tx.write_chunk(wanted), kernel: self.kernel, region: self.region }
    }

    /// As [`write_chunk`](Self::write_chunk), waiting up to `limit` for at least one free slot
    /// (H7 with `WAIT_INPUT`: the kernel's release of input slots rings the doorbell). A
    /// streaming loop waits here, not for a reply, once every message it sent is answered: the
    /// kernel publishes replies (K5) before it releases their input slots (K6).
    ///
    /// # Errors
    /// [`Error::Timeout`]; [`Error::Closed`] once the kernel terminated.
    pub fn write_chunk_within(&mut self, wanted: u64, limit: Duration) -> Result<SendChunk<'_>, Error> {
        if wanted > 0 && self.tx.free_slots(1) == 0 {
            let tx = &mut *self.tx;
            wait_on(self.doorbell, self.region, WAIT_INPUT, deadline_after(limit), "input ring space", || tx.free_slots(1) > 0)?;
        }
        Ok(self.write_chunk(wanted))
    }
}

/// Input slots reserved by [`SendHalf::write_chunk`]: a [`WriteChunk`] whose commit also
/// performs H4 (wakes a kernel that announced sleep).
pub struct SendChunk<'a> {
    chunk: WriteChunk<'a, RegionRing>,
    kernel: &'a dyn Kernel,
    region: &'a Region,
}

impl<'a> std::ops::Deref for SendChunk<'a> {
    type Target = WriteChunk<'a, RegionRing>;
    fn deref(&self) -> &Self::Target {
        &self.chunk
    }
}

impl std::ops::DerefMut for SendChunk<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.chunk
    }
}

impl SendChunk<'_> {
    /// Publishes the first `count` reserved slots as they are (H3, one store), then H4.
    ///
    /// # Panics
    /// If `count` exceeds the reservation.
    pub fn commit(self, count: usize) -> usize {
        let (kernel, region) = (self.kernel, self.region);
        let n = self.chunk.commit(count);
        if n > 0 {
            wake_if_sleeping(kernel, region);
        }
        n
    }
}

/// Replies taken by [`RecvHalf::read_chunk`]: a [`ReadChunk`] whose release also performs H6's
/// doorbell check (wakes a kernel waiting for output room).
pub struct ReplyChunk<'a> {
    chunk: ReadChunk<'a, RegionRing>,
    kernel: &'a dyn Kernel,
    region: &'a Region,
}

impl<'a> std::ops::Deref for ReplyChunk<'a> {
    type Target = ReadChunk<'a, RegionRing>;
    fn deref(&self) -> &Self::Target {
        &self.chunk
    }
}

impl ReplyChunk<'_> {
    /// Hands the first `count` replies back (C4, one store), then D2.
    ///
    /// # Panics
    /// If `count` exceeds the chunk.
    pub fn release(self, count: usize) -> usize {
        let (kernel, region) = (self.kernel, self.region);
        let n = self.chunk.release(count);
        if n > 0 {
            wake_if_sleeping(kernel, region);
        }
        n
    }
}

/// The receiving half of a [`Session`] (see [`Session::halves`]).
pub struct RecvHalf<'a> {
    rx: &'a mut Consumer<RegionRing>,
    kernel: &'a dyn Kernel,
    region: &'a Region,
    doorbell: &'a Doorbell,
}

impl RecvHalf<'_> {
    /// Takes up to `wanted` replies in place (spec §5.3); see [`ReplyChunk`].
    pub fn read_chunk(&mut self, wanted: u64) -> ReplyChunk<'_> {
        ReplyChunk { chunk: self.rx.read_chunk(wanted), kernel: self.kernel, region: self.region }
    }

    /// As [`read_chunk`](Self::read_chunk), waiting up to `limit` for at least one reply (H7
    /// with `WAIT_OUTPUT`).
    ///
    /// # Errors
    /// [`Error::Timeout`]; [`Error::Closed`] once the kernel terminated with no reply left.
    pub fn read_chunk_within(&mut self, wanted: u64, limit: Duration) -> Result<ReplyChunk<'_>, Error> {
        if wanted > 0 && self.rx.available(1) == 0 {
            let rx = &mut *self.rx;
            wait_on(self.doorbell, self.region, WAIT_OUTPUT, deadline_after(limit), "a reply", || rx.available(1) > 0)?;
        }
        Ok(self.read_chunk(wanted))
    }

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
            wake_if_sleeping(self.kernel, self.region);
        }
        failure.map_or(Ok(n), Err)
    }
}
