//! `NativeKernel`: one launched ring kernel over a JS-owned SharedArrayBuffer. JavaScript does
//! the host steps itself (ts/ring.ts); this class only launches, wakes and joins the kernel,
//! and watches its kernel host (process isolation).
//!
//! Blocking work stays off the JavaScript thread where it can take long: `launchAsync` /
//! `routeAsync` start a kernel host and wait for its launch report on the libuv pool, and
//! `joinAsync` waits there for the host to stop its kernel. The synchronous `join` (for
//! `dispose()`) is bounded by a short limit, after which the host is killed.
// `deny`, not `forbid`: the #[napi] expansion allows unsafe for its own glue.
#![deny(unsafe_code)]

use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use napi::bindgen_prelude::{ArrayBuffer, AsyncTask, JsError, Uint8Array};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, Status, Task};
use napi_derive::napi;
use ringbridge_core::backend::cuda::Shape;
use ringbridge_core::backend::user::UserKernel;
use ringbridge_core::backend::{self, route, Isolation, Kernel, LaunchSpec, Launched};
use ringbridge_core::isolate::parent::{HostMonitor, JoinLimits, ProcessKernel};
use ringbridge_core::isolate::wire::LaunchRequest;
use ringbridge_core::isolate::HostCommand;
use ringbridge_core::protocol::{RegionLayout, RingConfig};
use ringbridge_core::transport::Region;

use crate::error::{checked_u32, checked_u32_opt, invalid, to_js, Code, Result};
use crate::sab;

/// Ring shapes and what to run.
///
/// Numbers arrive as `f64` and are range-checked (`error::checked_u32`): napi's `u32`
/// conversion wraps modulo 2^32 (issue #2: `capacity: 2**32 + 8` launched a ring of 8 while
/// JavaScript laid out 2^32 + 8 slots; `2**40` was reported as "capacity 0", `-8` as
/// "4294967288").
#[napi(object)]
pub struct KernelOptions {
    /// `auto`, `cpu` or `cuda`.
    pub backend: String,
    /// Built-in handler name.
    pub handler: String,
    /// Input ring capacity (power of two).
    pub input_capacity: f64,
    /// Input slot size in bytes (power of two, header included).
    pub input_slot_size: f64,
    /// Output ring capacity.
    pub output_capacity: f64,
    /// Output slot size.
    pub output_slot_size: f64,
    /// GPU transport: `auto` (default), `mapped`, `dma`, `managed`.
    pub transport: Option<String>,
    /// GPU blocks (default: 1 for mapped, one per SM otherwise).
    pub blocks: Option<f64>,
    /// GPU threads per block (default 512 for mapped, 256 otherwise).
    pub threads: Option<f64>,
    /// `thread` (default): the kernel's runner lives in this process, over the `memory` given;
    /// `process`: a kernel host process runs it over shared memory the addon allocates
    /// (`sharedMemory()`), so a GPU fault ends that process, not this one.
    pub isolation: Option<String>,
    /// The kernel host to start under `process` isolation: program, then arguments.
    pub host_command: Option<Vec<String>>,
    /// A user handler's CUDA C source (with `entry` and `schemaHeader`), instead of `handler`.
    pub source: Option<String>,
    /// The user handler's function name.
    pub entry: Option<String>,
    /// The CUDA header generated from the input and output schemas.
    pub schema_header: Option<String>,
    /// A user handler that pushes up to this many replies per message (`rb_replies&`).
    pub max_replies: Option<f64>,
    /// The CUDA device ordinal (default 0).
    pub device: Option<f64>,
}

/// The numbers of `KernelOptions`, checked: an integer in `0..=u32::MAX` each, or an error that
/// shows the value as given (never a wrapped one).
struct Numbers {
    input: RingConfig,
    output: RingConfig,
    blocks: Option<u32>,
    threads: Option<u32>,
    max_replies: Option<u32>,
    device: Option<u32>,
}

fn numbers_of(o: &KernelOptions) -> Result<Numbers> {
    Ok(Numbers {
        input: RingConfig { capacity: checked_u32("capacity", o.input_capacity)?, slot_size: checked_u32("slotSize", o.input_slot_size)? },
        output: RingConfig {
            capacity: checked_u32("outputCapacity", o.output_capacity)?,
            slot_size: checked_u32("outputSlotSize", o.output_slot_size)?,
        },
        blocks: checked_u32_opt("blocks", o.blocks)?,
        threads: checked_u32_opt("threads", o.threads)?,
        max_replies: checked_u32_opt("maxReplies", o.max_replies)?,
        device: checked_u32_opt("device", o.device)?,
    })
}

/// Byte offsets of a region's parts, from the region's start.
#[napi(object)]
pub struct RegionInfo {
    /// Offset of the input slot array.
    pub input_offset: u32,
    /// Offset of the output slot array.
    pub output_offset: u32,
    /// Bytes the region needs.
    pub total_bytes: u32,
}

pub(crate) fn layout_of(o: &KernelOptions) -> Result<RegionLayout> {
    let n = numbers_of(o)?;
    RegionLayout::new(n.input, n.output).map_err(to_js)
}

/// Computes where the rings of `options` sit in a region (validating the shapes).
#[napi]
pub fn region_layout(options: KernelOptions) -> Result<RegionInfo> {
    let l = layout_of(&options)?;
    let narrow = |n: usize| u32::try_from(n).map_err(|_| crate::error::invalid(format!("region of {n} bytes exceeds 4 GiB")));
    Ok(RegionInfo { input_offset: narrow(l.input_offset)?, output_offset: narrow(l.output_offset)?, total_bytes: narrow(l.total_bytes)? })
}

/// The doorbell JS receives: a weak threadsafe function with a queue of one, so rings coalesce.
type Doorbell = ThreadsafeFunction<(), (), (), Status, false, true, 1>;

/// How long the synchronous `join()` waits by default for a kernel host's report: just above
/// the host's own bound on stopping a GPU kernel (5 s, `backend::cuda`), so a slow but working
/// host reports its own error first. A stopped host is given up much sooner (below).
const SYNC_JOIN_LIMIT: Duration = Duration::from_secs(6);
/// How long the synchronous `join()` waits by default on a kernel host seen stopped.
const SYNC_STOPPED_LIMIT: Duration = Duration::from_millis(200);

/// One stage's region as JS sees it.
struct Stage {
    region_offset: u32,
    launched: Launched,
    /// The region, when the addon allocated it (process isolation) and JS has yet to take it.
    shared: Option<Arc<Region>>,
}

/// What runs the kernel: this process (a thread, or a context of this process), or a kernel
/// host process, whose join has limits.
enum Runner {
    Local(Box<dyn Kernel>),
    Host(ProcessKernel),
}

impl Runner {
    fn wake(&self) {
        match self {
            Runner::Local(k) => k.wake(),
            Runner::Host(k) => k.wake(),
        }
    }

    /// Joins, then drops the runner (here: on the thread that joined).
    fn join(mut self, limits: JoinLimits) -> std::result::Result<(), ringbridge_core::Error> {
        match &mut self {
            Runner::Local(k) => k.join(),
            Runner::Host(k) => k.join_within(limits),
        }
    }
}

/// The runner, shared with a `joinAsync` task; `None` once joined.
type RunnerSlot = Arc<Mutex<Option<Runner>>>;

fn lock(slot: &RunnerSlot) -> MutexGuard<'_, Option<Runner>> {
    slot.lock().unwrap_or_else(|e| e.into_inner())
}

/// A ring kernel (or a route of kernels, spec §14) running over SharedArrayBuffers.
#[napi]
pub struct NativeKernel {
    runner: RunnerSlot,
    /// The kernel host's watcher (process isolation).
    host: Option<HostMonitor>,
    stages: Vec<Stage>,
}

fn host_of(options: &KernelOptions) -> Result<Option<HostCommand>> {
    match (options.isolation.as_deref(), options.host_command.as_deref()) {
        (None | Some("thread"), _) => Ok(None),
        (Some("process"), Some([program, args @ ..])) => {
            Ok(Some(HostCommand { program: program.into(), args: args.iter().map(Into::into).collect() }))
        }
        (Some("process"), _) => Err(invalid("isolation 'process' needs hostCommand: [program, ...args]")),
        (Some(other), _) => Err(invalid(format!("isolation '{other}': expected 'thread' or 'process'"))),
    }
}

fn user_of(options: &KernelOptions) -> Result<Option<UserKernel>> {
    match (options.source.clone(), options.entry.clone(), options.schema_header.clone()) {
        (None, None, None) => Ok(None),
        (Some(source), Some(entry), Some(schema_header)) => {
            Ok(Some(UserKernel { source, entry, schema_header, max_replies: numbers_of(options)?.max_replies.unwrap_or(0) }))
        }
        _ => Err(invalid("source, entry and schemaHeader: give all three (a user kernel) or none")),
    }
}

fn shape_of(n: &Numbers) -> Option<Shape> {
    match (n.blocks, n.threads) {
        (None, None) => None,
        (blocks, threads) => Some(Shape { blocks: blocks.unwrap_or(1), threads: threads.unwrap_or(256) }),
    }
}

/// The region of one stage: over the JS memory (thread isolation) or in shared memory the addon
/// allocates (process isolation).
fn region_of(options: &KernelOptions, host: Option<&HostCommand>, memory: Option<Uint8Array>) -> Result<(Arc<Region>, usize)> {
    let layout = layout_of(options)?;
    match (host, memory) {
        (None, Some(memory)) => sab::region_over(memory, layout),
        (None, None) => Err(invalid("isolation 'thread' needs the memory of the region (a SharedArrayBuffer view)")),
        (Some(_), _) => Ok((Region::alloc_shared(layout.input, layout.output).map_err(to_js)?, 0)),
    }
}

fn notify_of(doorbell: Doorbell) -> backend::Notify {
    Box::new(move || {
        // NonBlocking into a queue of one: `QueueFull` means a ring is already pending,
        // and that pending call re-reads the rings when it runs, so nothing is missed.
        let _ = doorbell.call((), ThreadsafeFunctionCallMode::NonBlocking);
    })
}

fn spec_of<'a>(options: &'a KernelOptions, host: Option<&'a HostCommand>, user: Option<&'a UserKernel>) -> Result<LaunchSpec<'a>> {
    let n = numbers_of(options)?;
    Ok(LaunchSpec {
        transport: options.transport.as_deref().unwrap_or("auto"),
        shape: shape_of(&n),
        isolation: host.map_or(Isolation::Thread, Isolation::Process),
        user,
        device: n.device.unwrap_or(0),
        ..LaunchSpec::new(&options.backend, &options.handler)
    })
}

/// A kernel host to start: everything it needs, owned, so it can start on another thread.
struct HostLaunch {
    command: HostCommand,
    requests: Vec<LaunchRequest>,
    regions: Vec<Arc<Region>>,
    notify: backend::Notify,
}

impl HostLaunch {
    /// Starts the host and waits for its launch report (blocking: 70–100 ms for a `node` host,
    /// more on a GPU).
    fn run(self) -> std::result::Result<NativeKernel, ringbridge_core::Error> {
        let shared = self.regions.clone();
        let (kernel, launched) = ProcessKernel::spawn(&self.command, &self.requests, self.regions, self.notify)?;
        let host = Some(kernel.monitor());
        let stages =
            launched.into_iter().zip(shared).map(|(launched, region)| Stage { region_offset: 0, launched, shared: Some(region) }).collect();
        Ok(NativeKernel { runner: Arc::new(Mutex::new(Some(Runner::Host(kernel)))), host, stages })
    }
}

/// A launch with its arguments checked: done (in this process), or a kernel host to start.
enum Prepared {
    Local(LocalLaunch),
    Host(HostLaunch),
}

/// An in-process kernel (or route) whose regions are made (over the SharedArrayBuffers, on the
/// JS thread) and whose launch — a CUDA context, an NVRTC compile on a cold cache, the kernel
/// launch, a service thread — may run on any thread.
struct LocalLaunch {
    options: Vec<KernelOptions>,
    users: Vec<Option<UserKernel>>,
    regions: Vec<Arc<Region>>,
    offsets: Vec<usize>,
    route: bool,
    notify: backend::Notify,
}

impl LocalLaunch {
    fn run(mut self) -> Result<NativeKernel> {
        // Checked in `prepare` already; built again here because a spec borrows its options.
        let specs = self.options.iter().zip(&self.users).map(|(o, u)| spec_of(o, None, u.as_ref())).collect::<Result<Vec<_>>>()?;
        let (kernel, launched) = if self.route {
            backend::launch_route(&specs, self.regions, self.notify).map_err(to_js)?
        } else {
            let region = self.regions.pop().ok_or_else(|| invalid("a kernel needs its options"))?;
            let (kernel, launched) = backend::launch(&specs[0], region, self.notify).map_err(to_js)?;
            (kernel, vec![launched])
        };
        let stages = launched
            .into_iter()
            .zip(self.offsets)
            .map(|(launched, offset)| Stage { region_offset: offset as u32, launched, shared: None })
            .collect();
        Ok(NativeKernel { runner: Arc::new(Mutex::new(Some(Runner::Local(kernel)))), host: None, stages })
    }
}

impl Prepared {
    /// Finishes the launch on this thread: the JS thread (the constructor, `route`) or the
    /// libuv pool (`launchAsync`, `routeAsync`).
    fn run(self) -> Result<NativeKernel> {
        match self {
            Prepared::Local(l) => l.run(),
            Prepared::Host(h) => h.run().map_err(to_js),
        }
    }
}

/// Checks a launch and does what must happen on the JS thread: the regions (an in-process
/// kernel's may be a SharedArrayBuffer) and, for a kernel host, its shared regions and
/// requests. The launch itself happens wherever the caller runs `Prepared::run`.
/// `route`: a route of `options.len()` stages (spec §14), else one kernel.
fn prepare(memories: Vec<Option<Uint8Array>>, options: Vec<KernelOptions>, doorbell: Doorbell, route: bool) -> Result<Prepared> {
    if memories.len() != options.len() {
        return Err(invalid(format!("route: {} memories for {} stages", memories.len(), options.len())));
    }
    // Every number first: nothing is allocated or started for options that would have wrapped.
    for o in &options {
        numbers_of(o)?;
    }
    let hosts = options.iter().map(host_of).collect::<Result<Vec<_>>>()?;
    let users = options.iter().map(user_of).collect::<Result<Vec<_>>>()?;
    let mut regions = Vec::with_capacity(options.len());
    let mut offsets = Vec::with_capacity(options.len());
    for ((o, host), memory) in options.iter().zip(&hosts).zip(memories) {
        let (region, offset) = region_of(o, host.as_ref(), memory)?;
        regions.push(region);
        offsets.push(offset);
    }
    let specs = options.iter().zip(&hosts).zip(&users).map(|((o, h), u)| spec_of(o, h.as_ref(), u.as_ref())).collect::<Result<Vec<_>>>()?;
    let Some(Some(command)) = hosts.first() else {
        drop(specs);
        return Ok(Prepared::Local(LocalLaunch { options, users, regions, offsets, route, notify: notify_of(doorbell) }));
    };
    if route {
        // Refused here, before a kernel host starts (the host checks again, in process).
        route::check_route(&specs, &regions).map_err(to_js)?;
    }
    let requests = specs.iter().map(LaunchRequest::of).collect();
    Ok(Prepared::Host(HostLaunch { command: command.clone(), requests, regions, notify: notify_of(doorbell) }))
}

/// The JS rejection of `err`: an `Error` whose `code` is its `ERR_RINGBRIDGE_*` string, as the
/// synchronous entry points throw (a task's own error type would carry a napi status instead).
fn rejection(env: Env, err: napi::Error<Code>) -> napi::Error {
    napi::Error::from(JsError::from(err).into_unknown(env))
}

fn limits_of(limit_ms: Option<u32>, stopped_limit_ms: Option<u32>, default: JoinLimits) -> JoinLimits {
    JoinLimits {
        report: limit_ms.map_or(default.report, |ms| Duration::from_millis(ms.into())),
        stopped: stopped_limit_ms.map_or(default.stopped, |ms| Duration::from_millis(ms.into())),
    }
}

/// `launchAsync` / `routeAsync`: starts the kernel host on the libuv pool.
pub struct LaunchTask {
    prepared: Option<Result<Prepared>>,
}

impl Task for LaunchTask {
    type Output = Result<NativeKernel>;
    type JsValue = NativeKernel;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        Ok(match self.prepared.take() {
            Some(Ok(prepared)) => prepared.run(),
            Some(Err(e)) => Err(e),
            None => Err(invalid("launchAsync: the launch already ran")),
        })
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> napi::Result<NativeKernel> {
        output.map_err(|e| rejection(env, e))
    }
}

/// `joinAsync`: stops the kernel (in this process or in its host) on the libuv pool.
pub struct JoinTask {
    runner: RunnerSlot,
    limits: JoinLimits,
}

impl Task for JoinTask {
    type Output = Result<()>;
    type JsValue = ();

    fn compute(&mut self) -> napi::Result<Self::Output> {
        // The lock is held for the whole join: a synchronous `join` (dispose) sees it busy and
        // waits (an in-process kernel) or waits its own limit, then kills the host. Another join that ran first leaves None.
        let mut slot = lock(&self.runner);
        let outcome = slot.take().map_or(Ok(()), |r| r.join(self.limits).map_err(to_js));
        drop(slot);
        Ok(outcome)
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> napi::Result<()> {
        output.map_err(|e| rejection(env, e))
    }
}

/// A kernel host's liveness (`hostStatus()`).
#[napi(object)]
pub struct KernelHostStatus {
    /// The host's process id.
    pub pid: u32,
    /// `running` (or sleeping: it can answer), `stopped` (SIGSTOP, SIGTSTP, a debugger: it
    /// answers nothing until continued) or `exited`.
    pub state: String,
    /// The state letter of `/proc/<pid>/stat` (`R`, `S`, `D`, `T`, `t`…) while the process exists.
    pub proc_state: Option<String>,
    /// How it ended (`exit status: 0`, `signal: 9 (SIGKILL)`), once exited and reaped.
    pub exit_reason: Option<String>,
    /// While stopped: for how long it has been seen stopped (from the first look that found it
    /// so; looks are `hostStatus()` calls and waiting joins, so poll to measure).
    pub stopped_for_ms: Option<f64>,
    /// Milliseconds since the host last showed progress: a doorbell or report, or a message its
    /// kernels handled (seen at a look). An idle kernel shows none: `state` tells a stopped host
    /// from an idle one.
    pub since_progress_ms: f64,
}

#[napi]
impl NativeKernel {
    /// Initialises the region inside `memory` (at a page boundary) and launches the kernel.
    /// `doorbell` is called on the JS thread whenever the kernel publishes while JS waits.
    /// Under `process` isolation `memory` is `null`: take the region with `sharedMemory()`.
    /// Blocks while a kernel host starts (70–100 ms): prefer `launchAsync` there.
    #[napi(constructor, ts_args_type = "memory: Uint8Array | null, options: KernelOptions, doorbell: () => void")]
    pub fn new(memory: Option<Uint8Array>, options: KernelOptions, doorbell: Doorbell) -> Result<Self> {
        prepare(vec![memory], vec![options], doorbell, false)?.run()
    }

    /// As the constructor, without blocking the JS thread while the kernel launches: a kernel
    /// host is started, and its launch report awaited, on the libuv pool; an in-process kernel
    /// (`thread` isolation, over `memory`) is launched there too (its CUDA context, NVRTC compile
    /// and kernel launch), its region made over `memory` on the JS thread first.
    /// Rejects with the constructor's errors (same `code` and message).
    #[napi(
        ts_args_type = "memory: Uint8Array | null, options: KernelOptions, doorbell: () => void",
        ts_return_type = "Promise<NativeKernel>"
    )]
    pub fn launch_async(memory: Option<Uint8Array>, options: KernelOptions, doorbell: Doorbell) -> AsyncTask<LaunchTask> {
        AsyncTask::new(LaunchTask { prepared: Some(prepare(vec![memory], vec![options], doorbell, false)) })
    }

    /// Launches a route (spec §14): stage *i* runs `options[i]` over `memories[i]` (null under
    /// `process` isolation, as for one kernel) and writes stage *i+1*'s input ring. JS sends to
    /// stage 0 and receives from the last stage. Blocks while a kernel host starts: prefer
    /// `routeAsync` there.
    #[napi(factory, ts_args_type = "memories: Array<Uint8Array | null>, options: KernelOptions[], doorbell: () => void")]
    pub fn route(memories: Vec<Option<Uint8Array>>, options: Vec<KernelOptions>, doorbell: Doorbell) -> Result<Self> {
        prepare(memories, options, doorbell, true)?.run()
    }

    /// As `route`, without blocking the JS thread while the route's kernel host starts (see
    /// `launchAsync`). Rejects with `route`'s errors.
    #[napi(
        ts_args_type = "memories: Array<Uint8Array | null>, options: KernelOptions[], doorbell: () => void",
        ts_return_type = "Promise<NativeKernel>"
    )]
    pub fn route_async(memories: Vec<Option<Uint8Array>>, options: Vec<KernelOptions>, doorbell: Doorbell) -> AsyncTask<LaunchTask> {
        AsyncTask::new(LaunchTask { prepared: Some(prepare(memories, options, doorbell, true)) })
    }

    fn stage(&self, index: u32) -> Result<&Stage> {
        self.stages.get(index as usize).ok_or_else(|| invalid(format!("stage {index}: this kernel has {} stage(s)", self.stages.len())))
    }

    /// Under `process` isolation: stage `index`'s region (default 0) as an ArrayBuffer (once;
    /// the buffer keeps the memory mapped until it is collected, even after `join`).
    #[napi]
    pub fn shared_memory<'env>(&mut self, env: &'env Env, index: Option<u32>) -> Result<ArrayBuffer<'env>> {
        let index = index.unwrap_or(0);
        self.stage(index)?;
        let region = self.stages[index as usize]
            .shared
            .take()
            .ok_or_else(|| invalid("sharedMemory(): no shared region (isolation 'thread', or already taken)"))?;
        let (ptr, len) = (region.base_ptr(), region.registered_len());
        // SAFETY: `ptr..ptr + len` is the region's mapping (whole pages, `registered_len` ≤ the
        // mapping); the finalizer owns an `Arc` of the region, so the mapping outlives the
        // buffer. JS and the kernel host only touch it through the protocol (I2/I3).
        #[allow(unsafe_code)]
        let buffer = unsafe { ArrayBuffer::from_external(env, ptr, len, region, |_, region| drop(region)) };
        buffer.map_err(|e| invalid(format!("cannot expose the shared region to JavaScript: {e}")))
    }

    /// How many kernels run (1, or a route's stages).
    #[napi(getter)]
    pub fn stage_count(&self) -> u32 {
        self.stages.len() as u32
    }

    /// Offset of stage `index`'s region (control block) from the start of its memory.
    #[napi]
    pub fn stage_region_offset(&self, index: u32) -> Result<u32> {
        Ok(self.stage(index)?.region_offset)
    }

    /// Stage `index`'s transport and why it was chosen.
    #[napi]
    pub fn stage_transport(&self, index: u32) -> Result<Vec<String>> {
        let l = &self.stage(index)?.launched;
        Ok(vec![l.transport.to_owned(), l.transport_reason.clone()])
    }

    /// Offset of the region (control block) from the start of the SharedArrayBuffer view.
    #[napi(getter)]
    pub fn region_offset(&self) -> u32 {
        self.stages[0].region_offset
    }

    /// The backend that runs this kernel.
    #[napi(getter)]
    pub fn backend(&self) -> String {
        self.stages[0].launched.backend.name.to_owned()
    }

    /// Why that backend was chosen (for cuda: the device, driver and NVRTC versions).
    #[napi(getter)]
    pub fn backend_reason(&self) -> String {
        self.stages[0].launched.backend.reason.clone()
    }

    /// The transport (`shared-memory` on the cpu backend, else `mapped`, `dma`, `managed`).
    #[napi(getter)]
    pub fn transport(&self) -> String {
        self.stages[0].launched.transport.to_owned()
    }

    /// Why that transport (what `auto` tried, what failed).
    #[napi(getter)]
    pub fn transport_reason(&self) -> String {
        self.stages[0].launched.transport_reason.clone()
    }

    /// The kernel host's process id under `process` isolation, else null (also after `join`).
    #[napi(getter)]
    pub fn host_pid(&self) -> Option<u32> {
        self.host.as_ref().map(HostMonitor::pid)
    }

    /// The kernel host's liveness under `process` isolation, else null: whether it runs, is
    /// stopped or exited (and how), and how long ago it last showed progress. Cheap (a
    /// `waitpid(WNOHANG)` and a read of `/proc/<pid>/stat`); works during and after a join.
    #[napi]
    pub fn host_status(&self) -> Option<KernelHostStatus> {
        let s = self.host.as_ref()?.status();
        Some(KernelHostStatus {
            pid: s.pid,
            state: s.state.as_str().to_owned(),
            proc_state: s.proc_state.map(String::from),
            exit_reason: s.exit,
            stopped_for_ms: s.stopped_for.map(|d| d.as_millis() as f64),
            since_progress_ms: s.since_progress.as_millis() as f64,
        })
    }

    /// Wakes the kernel after JS saw `kernel_sleeping == 1` (spec §8, D2). A no-op while a
    /// `joinAsync` runs (the join stops the kernel).
    #[napi]
    pub fn wake(&self) {
        match self.runner.try_lock() {
            Ok(runner) => runner.as_ref().map_or((), Runner::wake),
            Err(TryLockError::Poisoned(p)) => p.into_inner().as_ref().map_or((), Runner::wake),
            Err(TryLockError::WouldBlock) => {}
        }
    }

    /// Stops the kernel (abandoning unless JS already wrote a terminate command) and waits for
    /// it, on the JS thread. Idempotent. After this the shared memory is JavaScript's alone
    /// again. For `dispose()`: with a kernel host it waits at most `limitMs` (default 6000) for
    /// the host's report, and at most `stoppedLimitMs` (default 200) while the host is seen
    /// stopped; then it kills the host (SIGKILL) and throws `ERR_RINGBRIDGE_TIMEOUT` naming the
    /// pid and the state. Waits (as long) for a `joinAsync` in progress, then kills the host.
    #[napi]
    pub fn join(&self, limit_ms: Option<u32>, stopped_limit_ms: Option<u32>) -> Result<()> {
        let limits = limits_of(limit_ms, stopped_limit_ms, JoinLimits { report: SYNC_JOIN_LIMIT, stopped: SYNC_STOPPED_LIMIT });
        let Some(host) = &self.host else {
            // In this process: only this thread joins.
            let runner = lock(&self.runner).take();
            return runner.map_or(Ok(()), |r| r.join(limits).map_err(to_js));
        };
        let deadline = Instant::now() + limits.report;
        let mut killed = false;
        let runner = loop {
            match self.runner.try_lock() {
                Ok(mut slot) => break slot.take(),
                Err(TryLockError::Poisoned(p)) => break p.into_inner().take(),
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
                Err(TryLockError::WouldBlock) => {
                    // A joinAsync holds the runner and its host does not answer: end it, after
                    // which that join returns at once.
                    host.kill();
                    killed = true;
                    break lock(&self.runner).take();
                }
            }
        };
        match runner {
            Some(r) => r.join(limits).map_err(to_js),
            None if killed => Err(to_js(ringbridge_core::Error::Remote {
                code: ringbridge_core::ErrorCode::Timeout,
                message: format!(
                    "join: a joinAsync of this kernel was still waiting for its kernel host (pid {}) after {} ms; the host was killed (SIGKILL)",
                    host.pid(),
                    limits.report.as_millis()
                ),
            })),
            None => Ok(()),
        }
    }

    /// As `join`, on the libuv pool: the JS thread keeps running while the kernel host stops
    /// its kernel. Resolves when it stopped; rejects with `join`'s errors: the kernel's fault,
    /// the host's death (`ERR_RINGBRIDGE_KERNEL_ERROR`, "the kernel host process died (…)"), or
    /// `ERR_RINGBRIDGE_TIMEOUT` naming the pid and the state after `limitMs` (default 20000)
    /// without a report, or once the host was seen stopped for `stoppedLimitMs` (default 1000);
    /// the host is killed then. An in-process kernel is joined on the pool too (its CUDA
    /// teardown: stream syncs, unregistering and freeing its memory). Its region over JS memory
    /// may be dropped there: napi-rs hands the release of the view's reference back to the JS
    /// thread. Idempotent: a later join (either kind) resolves at once.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn join_async(&self, limit_ms: Option<u32>, stopped_limit_ms: Option<u32>) -> AsyncTask<JoinTask> {
        let limits = limits_of(limit_ms, stopped_limit_ms, JoinLimits::default());
        AsyncTask::new(JoinTask { runner: Arc::clone(&self.runner), limits })
    }
}

impl Drop for NativeKernel {
    fn drop(&mut self) {
        // Collected without a join (or with a joinAsync still running, which then finishes
        // it): stop the kernel here, with the synchronous join's short limits.
        if let Ok(mut slot) = self.runner.try_lock() {
            if let Some(r) = slot.take() {
                let _ = r.join(JoinLimits { report: SYNC_JOIN_LIMIT, stopped: SYNC_STOPPED_LIMIT });
            }
        }
    }
}
