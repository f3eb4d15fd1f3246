//! The CPU backend: the ring kernel is a native thread running [`dispatch::run`] over the
//! region's memory directly — the same protocol, layout and orderings as a GPU kernel reading
//! mapped host memory, so everything above the backend is tested without a GPU.
#![forbid(unsafe_code)]

use std::hint::spin_loop;
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

use super::dispatch::{self, KernelHooks};
use super::handlers::Handler;
use super::route::{Feed, FeedMemory, FeedView, Waker};
use super::{Kernel, Notify};
use crate::protocol::{ControlBlock, KernelState, TERMINATE_ABANDON};
use crate::ring::{Consumer, Producer};
use crate::sync::{fence, Ordering};
use crate::transport::Region;
use crate::Error;

/// Spins before yielding, then yields before parking: a few microseconds of busy polling keep
/// the latency of back-to-back messages low without burning a core when idle.
const SPINS: u32 = 256;
const YIELDS: u32 = 64;
/// Longest park: a safety net only; wake-ups come from the doorbell (spec §8).
const PARK_LIMIT: Duration = Duration::from_millis(20);
/// Messages dispatched between two publishes at most.
pub const DEFAULT_MAX_BATCH: u64 = 1024;

struct CpuHooks {
    epoch: Instant,
    rounds: u32,
    notify: Notify,
    /// A route's next stage, whose input ring is our output ring.
    downstream: Option<Waker>,
    /// A route's previous stage, which writes our input ring (set once it launched).
    upstream: Arc<OnceLock<Waker>>,
}

impl KernelHooks for CpuHooks {
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn idle(&mut self, cb: &ControlBlock, ready: &mut dyn FnMut() -> bool) {
        self.rounds = self.rounds.saturating_add(1);
        if self.rounds < SPINS {
            spin_loop();
            return;
        }
        if self.rounds < SPINS + YIELDS {
            thread::yield_now();
            return;
        }
        // ORDERING: (D1) SeqCst store of kernel_sleeping before the SeqCst re-check inside
        // `ready`; pairs with the host's index store + SeqCst fence + load of kernel_sleeping
        // (D2): either we see its index move, or it sees us asleep and unparks us.
        cb.kernel_sleeping.store(1, Ordering::SeqCst);
        // NB: the fence is implied by SeqCst store + SeqCst load under the C++20 model, but
        // this is the form the loom model `d1_d2_no_lost_wakeup` checks and the GPU side uses.
        fence(Ordering::SeqCst);
        if !ready() {
            thread::park_timeout(PARK_LIMIT);
        }
        cb.kernel_sleeping.store(0, Ordering::Relaxed);
    }

    fn busy(&mut self) {
        self.rounds = 0;
    }

    fn notify_host(&self) {
        (self.notify)();
    }

    fn published(&self, output: bool, input: bool) {
        // D2 on a neighbour's behalf (spec §14): we are the next stage's producer and the
        // previous stage's consumer, so we wake whichever of them may wait on what we moved.
        if let (true, Some(w)) = (output, &self.downstream) {
            w.ring();
        }
        if let (true, Some(w)) = (input, self.upstream.get()) {
            w.ring();
        }
    }
}

/// A ring kernel running on a host thread.
pub struct CpuKernel {
    region: Arc<Region>,
    thread: Option<JoinHandle<()>>,
    waker: Thread,
    upstream: Arc<OnceLock<Waker>>,
}

impl CpuKernel {
    /// Starts the dispatch loop for `region` with `handler`; `notify` is rung whenever the
    /// kernel publishes while the host waits, and on every state change. With `downstream` (a
    /// route) the replies go to that stage's input ring instead of this region's output ring,
    /// and the setup line says so (spec §14).
    ///
    /// # Errors
    /// [`Error::ResourceExhausted`] if the thread cannot be spawned.
    pub fn launch(
        region: Arc<Region>,
        mut handler: Box<dyn Handler>,
        notify: Notify,
        max_batch: u64,
        downstream: Option<Feed>,
    ) -> Result<Self, Error> {
        if let Some(feed) = &downstream {
            region.set_output_view(feed.view);
        }
        let kernel_region = Arc::clone(&region);
        let upstream = Arc::new(OnceLock::new());
        let hooks_upstream = Arc::clone(&upstream);
        let thread = thread::Builder::new()
            .name("ringbridge-cpu-kernel".into())
            .spawn(move || {
                let input = Consumer::new(kernel_region.input());
                let (output, next) = match downstream {
                    Some(feed) => (Producer::new(feed.region.input()), feed.waker),
                    None => (Producer::new(kernel_region.output()), None),
                };
                let mut hooks = CpuHooks { epoch: Instant::now(), rounds: 0, notify, downstream: next, upstream: hooks_upstream };
                let cb = kernel_region.control();
                dispatch::run(cb, input, output, handler.as_mut(), &mut hooks, max_batch.max(1));
            })
            .map_err(|e| Error::ResourceExhausted { what: "the CPU kernel thread".into(), reason: e.to_string() })?;
        let waker = thread.thread().clone();
        Ok(Self { region, thread: Some(thread), waker, upstream })
    }
}

impl Kernel for CpuKernel {
    fn region(&self) -> &Arc<Region> {
        &self.region
    }

    fn wake(&self) {
        self.waker.unpark();
    }

    fn feed(&self) -> Result<Feed, Error> {
        let base = self.region.base_ptr() as u64;
        Ok(Feed {
            region: Arc::clone(&self.region),
            view: FeedView::of(&self.region, base),
            device: None,
            memory: FeedMemory::Host,
            waker: self.waker(),
        })
    }

    fn waker(&self) -> Option<Waker> {
        Some(Waker::new(Arc::clone(&self.region), self.waker.clone()))
    }

    fn set_upstream(&self, upstream: Waker) {
        // Set once, before the upstream stage launches (route::launch_in_process).
        let _ = self.upstream.set(upstream);
    }

    fn join(&mut self) -> Result<(), Error> {
        let Some(thread) = self.thread.take() else { return Ok(()) };
        let cb = self.region.control();
        if KernelState::from_word(cb.state.load(Ordering::Acquire)) != Some(KernelState::Terminated)
            && super::terminate_command(cb) == crate::protocol::TERMINATE_NONE
        {
            // ORDERING: (H5) release pairs with the kernel's acquire of terminate (K1).
            cb.terminate.store(TERMINATE_ABANDON, Ordering::Release);
        }
        self.waker.unpark();
        thread.join().map_err(|_| Error::ThreadPanicked { thread: "CPU kernel" })
    }
}

impl Drop for CpuKernel {
    fn drop(&mut self) {
        // The region may be borrowed memory (a SharedArrayBuffer): the thread must be gone
        // before the keep-alive is released. A join error has nowhere to go in Drop; the
        // dispatch loop itself cannot panic (handlers run under catch_unwind).
        let _ = self.join();
    }
}
