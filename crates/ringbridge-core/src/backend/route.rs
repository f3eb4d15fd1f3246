//! Routes: kernel-to-kernel messages with no host hop (spec §14).
//!
//! A route `A → B` makes A's output ring *be* B's input ring. Before A launches, its setup line
//! is pointed at B's input slots, B's input-tail word and B's `input_head` (v3
//! `output_head_addr`), so A's kernel is B's producer (I1: B's input ring has exactly one
//! producer, and the host is not it) with the very steps and orderings it uses towards the
//! host: slot writes, then the release of B's tail (P4) that B's acquire pairs with (C2); B's
//! release of `input_head` (C4), which A's acquire through `output_head_addr` pairs with (P2).
//!
//! Stages launch last to first, so each stage's input ring exists, with its final addresses,
//! before the stage writing it starts (I5: the setup line never changes after launch).
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::thread::Thread;

use super::{prepare_stage, Isolation, Kernel, LaunchSpec, Launched, Notify, Prepared, EXTERNAL_HANDLER};
use crate::protocol::{offsets, PRODUCER_KERNEL};
use crate::sync::{fence, Ordering};
use crate::transport::Region;
use crate::Error;

/// Where a producer kernel finds a stage's input ring (kernel-view addresses, for the writer's
/// setup line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedView {
    /// The input slot array (`output_buffer` of the writer).
    pub slots: u64,
    /// The input tail word the stage polls (`output_tail_addr` of the writer).
    pub tail_addr: u64,
    /// The stage's `input_head` (`output_head_addr` of the writer).
    pub head_addr: u64,
}

impl FeedView {
    /// The view of a stage whose kernel reads the region at `cb` (its own control block, as
    /// the kernel addresses it) and whose setup line was already written by its transport.
    pub fn of(region: &Region, cb: u64) -> Self {
        let c = region.control();
        Self {
            slots: c.input_buffer.load(Ordering::Relaxed),
            tail_addr: c.input_tail_addr.load(Ordering::Relaxed),
            head_addr: cb + offsets::INPUT_HEAD as u64,
        }
    }
}

/// Wakes a cpu-backend kernel that announced sleep (spec §8, D2), on behalf of its neighbour in
/// a route. GPU kernels never park, so they have none.
#[derive(Clone)]
pub struct Waker {
    region: Arc<Region>,
    thread: Thread,
}

impl Waker {
    /// The waker of the kernel thread `thread` serving `region`.
    pub fn new(region: Arc<Region>, thread: Thread) -> Self {
        Self { region, thread }
    }

    /// D2 for a neighbour: after our index store, wake the kernel if it may be parked.
    pub fn ring(&self) {
        // ORDERING: (D2) SeqCst fence between the caller's index store and the load of
        // kernel_sleeping; pairs with the sleeper's SeqCst store and re-check (D1).
        fence(Ordering::SeqCst);
        if self.region.control().kernel_sleeping.load(Ordering::Relaxed) != 0 {
            self.thread.unpark();
        }
    }
}

/// Where a stage's input ring lives, which decides how a kernel on another GPU reaches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedMemory {
    /// Registered (portable) host memory: the cpu backend, and the `mapped` transport. Any GPU
    /// of the process reaches it — the host-staged path across GPUs.
    Host,
    /// The stage's GPU memory (`dma`): another GPU needs peer access.
    Device,
    /// Managed memory (`managed`): treated as device memory (peer access) across GPUs.
    Managed,
}

/// A stage's input ring as the stage before it reaches it.
#[derive(Clone)]
pub struct Feed {
    /// The stage's region; the writer keeps it alive while it runs.
    pub region: Arc<Region>,
    /// Its input ring, as the writer's kernel addresses it.
    pub view: FeedView,
    /// The GPU the ring is reachable from without peer access; `None` for host memory any
    /// runner reaches (the cpu backend).
    pub device: Option<u32>,
    /// Where the slots and the tail word live.
    pub memory: FeedMemory,
    /// Wakes the stage after the writer publishes (cpu backend).
    pub waker: Option<Waker>,
}

/// Checks that `upstream`'s output can be `downstream`'s input: the same ring shape.
///
/// # Errors
/// [`Error::InvalidConfig`] naming the stage and both shapes.
pub fn check_link(stage: usize, upstream: &Region, downstream: &Region) -> Result<(), Error> {
    let (out, inp) = (upstream.layout().output, downstream.layout().input);
    if out != inp {
        return Err(Error::InvalidConfig {
            what: format!("route stage {stage}'s output ring ({} slots of {} B)", out.capacity, out.slot_size),
            value: None,
            expected: format!(
                "the shape of stage {}'s input ring ({} slots of {} B): one kernel's output ring is the next one's input ring",
                stage + 1,
                inp.capacity,
                inp.slot_size
            ),
        });
    }
    Ok(())
}

/// Checks what a route's stages may be, before anything is launched.
///
/// # Errors
/// [`Error::InvalidConfig`]: fewer than two stages, a count of regions that does not match,
/// mixed backends or isolation, a stage run by the caller (`external`), a stage with several
/// replies per message feeding another (its `FLAG_MULTI` frames are not messages), mismatched
/// ring shapes.
pub fn check_route(specs: &[LaunchSpec<'_>], regions: &[Arc<Region>]) -> Result<(), Error> {
    let invalid = |what: String, expected: &str| Error::InvalidConfig { what, value: None, expected: expected.into() };
    if specs.len() < 2 || specs.len() != regions.len() {
        return Err(Error::InvalidConfig {
            what: "route stages".into(),
            value: Some(specs.len() as u64),
            expected: format!("at least 2, with one region each ({} regions given)", regions.len()),
        });
    }
    for (i, s) in specs.iter().enumerate() {
        if s.backend != specs[0].backend {
            return Err(invalid(format!("route stage {i}'s backend '{}'", s.backend), "the backend of stage 0: one runner serves a route"));
        }
        if matches!(s.isolation, Isolation::Process(_)) != matches!(specs[0].isolation, Isolation::Process(_)) {
            return Err(invalid(
                format!("route stage {i}'s isolation"),
                "the isolation of stage 0: a route's stages share one kernel host",
            ));
        }
        if s.handler == EXTERNAL_HANDLER {
            return Err(invalid(
                format!("route stage {i}'s handler '{}'", s.handler),
                "a native handler: a route's kernels run in one runner",
            ));
        }
        if i + 1 < specs.len() && s.user.is_some_and(|u| u.max_replies > 0) {
            return Err(invalid(
                format!("route stage {i} with maxReplies"),
                "a stage that answers once per message, or the last stage: several replies travel as one FLAG_MULTI frame, which the next kernel cannot take as a message",
            ));
        }
    }
    for i in 0..specs.len() - 1 {
        check_link(i, &regions[i], &regions[i + 1])?;
    }
    Ok(())
}

/// A route's kernels, first stage first. Waking wakes every stage; joining joins them in order.
pub struct RouteKernel {
    stages: Vec<Box<dyn Kernel>>,
}

impl Kernel for RouteKernel {
    fn region(&self) -> &Arc<Region> {
        self.stages[0].region()
    }

    fn regions(&self) -> Vec<Arc<Region>> {
        self.stages.iter().flat_map(|k| k.regions()).collect()
    }

    fn wake(&self) {
        for k in &self.stages {
            k.wake();
        }
    }

    fn stop(&mut self) {
        // First to last: an earlier stage stops writing before the one it writes to stops.
        for k in &mut self.stages {
            k.stop();
        }
    }

    fn join(&mut self) -> Result<(), Error> {
        // Every stage stopped before any frees memory (see Kernel::stop).
        self.stop();
        let mut outcome = Ok(());
        for k in &mut self.stages {
            let r = k.join();
            if outcome.is_ok() {
                outcome = r;
            }
        }
        outcome
    }

    fn host_pid(&self) -> Option<u32> {
        self.stages[0].host_pid()
    }
}

impl Drop for RouteKernel {
    fn drop(&mut self) {
        // Dropping the stages one by one would free a stage's memory while a later one runs;
        // join stops them all first. Errors have nowhere to go here.
        let _ = self.join();
    }
}

/// Launches a route in this process: every stage is prepared, last to first (each needs its
/// successor's input ring), before any GPU stage launches — set-up calls that synchronise a
/// context would wait forever behind a running persistent stage — then launched, last first.
/// A failure stops whatever already runs (dropped, joined).
///
/// # Errors
/// [`check_route`]'s, and any stage's set-up or launch error.
pub fn launch_in_process(
    specs: &[LaunchSpec<'_>],
    regions: &[Arc<Region>],
    notify: &Arc<dyn Fn() + Send + Sync>,
) -> Result<(RouteKernel, Vec<Launched>), Error> {
    check_route(specs, regions)?;
    for region in &regions[1..] {
        // L1: before any stage launches. A stage fed by a kernel must not wait, when draining,
        // for a host input tail nobody writes.
        region.control().input_producer.store(PRODUCER_KERNEL, Ordering::Relaxed);
    }
    let mut prepared: Vec<Prepared> = Vec::with_capacity(specs.len());
    let mut feed: Option<Feed> = None;
    for i in (0..specs.len()).rev() {
        let n = Arc::clone(notify);
        let sharing = specs.iter().filter(|s| s.device == specs[i].device).count() as u32;
        let stage = prepare_stage(&specs[i], Arc::clone(&regions[i]), Box::new(move || n()) as Notify, feed.take(), sharing)?;
        if let (Some(next), Some(waker)) = (prepared.last(), stage.waker()) {
            // The next stage frees the slots this one waits for: it wakes this one (D2).
            next.set_upstream(waker);
        }
        if i > 0 {
            feed = Some(stage.feed()?);
        }
        prepared.push(stage);
    }
    let mut stages: Vec<Box<dyn Kernel>> = Vec::with_capacity(specs.len());
    let mut launched = Vec::with_capacity(specs.len());
    for stage in prepared {
        let (kernel, l) = stage.start()?;
        stages.push(kernel);
        launched.push(l);
    }
    stages.reverse();
    launched.reverse();
    Ok((RouteKernel { stages }, launched))
}
