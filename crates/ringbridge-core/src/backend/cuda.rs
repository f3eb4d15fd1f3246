//! The CUDA backend: the ring kernel of `kernels/ring_kernel.cu`, compiled once per process by
//! NVRTC for the device's exact architecture (disk-cached), launched persistently per kernel on
//! a non-blocking stream, over one of three transports (`mapped`, `dma`, `managed`).
//!
//! Each kernel has one host *service thread*: it runs the transport's bridge step, rings the
//! host's doorbell when the kernel published while the host waits (the GPU cannot call into
//! JavaScript), and watches the kernel's stream for a fault (a trapping handler). After a
//! fault the host takes over the dead kernel's status words (state TERMINATED, error
//! HANDLER_FAULT) and the next launch opens a fresh context.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use cudarc::driver::{CudaContext, CudaStream};

use super::dispatch::record_error;
use super::route::{Feed, FeedMemory, FeedView};
use super::{Kernel, LaunchSpec, Notify};
use crate::cuda::driver::{self, Gpu};
use crate::cuda::module::{stream_done, RingModule};
use crate::cuda::nvrtc::{self, Image};
use crate::cuda::{cuda_err, peer};
use crate::protocol::{kernel_error, offsets, ControlBlock, KernelState, HANDLER_ECHO, HANDLER_SAXPY, HANDLER_USER, TERMINATE_ABANDON};
use crate::sync::{fence, Ordering};
use crate::transport::dma::DmaLink;
use crate::transport::hybrid::HybridLink;
use crate::transport::managed::ManagedLink;
use crate::transport::mapped::MappedLink;
use crate::transport::{Link, Region};
use crate::Error;

/// The device side of the protocol, embedded so nothing is looked up at run time.
pub const PROTOCOL_HEADER: &str = include_str!("../../../../kernels/ringbridge.cuh");
/// The persistent ring kernel.
pub const RING_KERNEL_SOURCE: &str = include_str!("../../../../kernels/ring_kernel.cu");

/// Transport names accepted by [`CudaKernel::launch`] (`LaunchSpec::transport`).
pub const TRANSPORT_NAMES: &[&str] = &["auto", "hybrid", "mapped", "dma", "managed"];
/// The order `auto` tries: mapped has the lowest round trip (bench/results), dma the highest
/// throughput, managed is the last resort. `hybrid` (spec §11.2), which means to have both, joins
/// the front of this list once it has run on a GPU: until then it is asked for by name only.
const AUTO_ORDER: &[&str] = &["mapped", "dma", "managed"];
/// `handler_id` of the test-only handler that traps (kernels/ringbridge.cuh, RB_HANDLER_TRAP).
pub const HANDLER_TRAP: u32 = 255;

/// An opened GPU with the ring kernel compiled for it.
pub struct CudaRuntime {
    /// The device and its context.
    pub gpu: Gpu,
    /// The compiled kernel image.
    pub image: Image,
    /// NVRTC's version.
    pub nvrtc: (i32, i32),
    poisoned: AtomicBool,
}

impl CudaRuntime {
    /// One line describing the device, the driver and how the kernel was built.
    pub fn describe(&self) -> String {
        let g = &self.gpu;
        describe(&g.name, g.arch, g.sms, g.driver_version, self.nvrtc, &self.image)
    }
}

fn describe(name: &str, arch: (i32, i32), sms: u32, driver: i32, nvrtc: (i32, i32), image: &Image) -> String {
    format!(
        "{name} (sm_{}{}, {sms} SMs), driver {}.{}, NVRTC {}.{}, kernel {:?}{}",
        arch.0,
        arch.1,
        driver / 1000,
        driver % 1000 / 10,
        nvrtc.0,
        nvrtc.1,
        image.kind,
        if image.cached { " from the disk cache" } else { "" }
    )
}

/// Whether the cuda backend can run here, without opening a context in this process: the
/// driver and device answer, NVRTC loads, and the ring kernel compiles (into the disk cache,
/// where launches find it). The description names the device and the versions.
///
/// # Errors
/// As [`runtime`], except the load check, which needs a context.
pub fn probe() -> Result<String, Error> {
    probe_on(0)
}

/// [`probe`] for device `ordinal`.
///
/// # Errors
/// As [`probe`]; [`Error::BackendUnavailable`] when there is no such device.
pub fn probe_on(ordinal: usize) -> Result<String, Error> {
    if let Some(rt) = RUNTIMES.lock().unwrap_or_else(|e| e.into_inner()).get(&ordinal).filter(|rt| !rt.poisoned.load(Ordering::Relaxed)) {
        return Ok(rt.describe());
    }
    let info = driver::probe(ordinal)?;
    let nvrtc = nvrtc::version()?;
    let image = nvrtc::compile_cached(RING_KERNEL_SOURCE, "ring_kernel.cu", &[("ringbridge.cuh", PROTOCOL_HEADER)], info.arch)?;
    Ok(describe(&info.name, info.arch, info.sms, info.driver_version, nvrtc, &image))
}

/// One runtime per device ordinal, opened on first use.
static RUNTIMES: Mutex<BTreeMap<usize, Arc<CudaRuntime>>> = Mutex::new(BTreeMap::new());

/// Opens GPU 0 and compiles the ring kernel, once per process (again after a fault).
///
/// # Errors
/// [`Error::BackendUnavailable`] without a driver, NVRTC or device; [`Error::Compile`] /
/// [`Error::Cuda`] when the kernel cannot be built or loaded (the message names the driver and
/// NVRTC versions).
pub fn runtime() -> Result<Arc<CudaRuntime>, Error> {
    runtime_on(0)
}

/// [`runtime`] for device `ordinal` (each device has its own context and compiled kernel).
///
/// # Errors
/// As [`runtime`]; [`Error::BackendUnavailable`] when there is no such device.
pub fn runtime_on(ordinal: usize) -> Result<Arc<CudaRuntime>, Error> {
    let mut runtimes = RUNTIMES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(rt) = runtimes.get(&ordinal).filter(|rt| !rt.poisoned.load(Ordering::Relaxed)) {
        return Ok(Arc::clone(rt));
    }
    let after_fault = runtimes.remove(&ordinal).is_some();
    if !driver::driver_present() {
        return Err(Error::BackendUnavailable {
            backend: "cuda",
            reason: "the NVIDIA driver library (libcuda.so.1) could not be loaded".into(),
        });
    }
    let nvrtc = nvrtc::version()?;
    let gpu = driver::open(ordinal).map_err(|e| match e {
        // A trap or illegal address is a sticky error: on driver 580 every later cuCtxCreate in
        // the process fails with CUDA_ERROR_LAUNCH_FAILED (measured on an H100), so only a new
        // process can use the GPU again.
        Error::Cuda { call, message } if after_fault => Error::Cuda {
            call,
            message: format!("{message}: a GPU kernel of this process faulted earlier and CUDA keeps that error for the process's life; restart the process to use the GPU again"),
        },
        other => other,
    })?;
    let headers = [("ringbridge.cuh", PROTOCOL_HEADER)];
    let image = nvrtc::compile_cached(RING_KERNEL_SOURCE, "ring_kernel.cu", &headers, gpu.arch)?;
    // Load once now: a load failure (PTX newer than the driver) must name both versions.
    RingModule::load(&gpu.ctx, &image.bytes).map_err(|e| Error::Cuda {
        call: "cuModuleLoadData",
        message: format!(
            "{e} (driver {}.{}, NVRTC {}.{}: an image from an NVRTC newer than the driver loads only as a CUBIN for the exact arch)",
            gpu.driver_version / 1000,
            gpu.driver_version % 1000 / 10,
            nvrtc.0,
            nvrtc.1
        ),
    })?;
    let rt = Arc::new(CudaRuntime { gpu, image, nvrtc, poisoned: AtomicBool::new(false) });
    runtimes.insert(ordinal, Arc::clone(&rt));
    Ok(rt)
}

/// The built-in handler's `handler_id`.
///
/// # Errors
/// [`Error::UnknownHandler`].
pub fn handler_id(name: &str) -> Result<u32, Error> {
    match name {
        "echo" => Ok(HANDLER_ECHO),
        "saxpy" => Ok(HANDLER_SAXPY),
        "trap" => Ok(HANDLER_TRAP),
        _ => Err(Error::UnknownHandler { name: name.to_owned(), known: &["echo", "saxpy", "trap"] }),
    }
}

/// Fault injection for tests of `auto`'s fallback: `RINGBRIDGE_INJECT_FAULT=mapped,managed`
/// makes those transports fail as they do on WSL2. `hybrid` maps the host's slots as `mapped`
/// does, so a fault injected for `mapped` fails it too.
fn injected(transport: &str) -> Option<Error> {
    let list = std::env::var("RINGBRIDGE_INJECT_FAULT").ok()?;
    let named = list.split(',').map(str::trim).find(|t| *t == transport || (transport == "hybrid" && *t == "mapped"))?;
    Some(Error::Cuda {
        call: if transport == "managed" { "cuMemAllocManaged" } else { "cuMemHostRegister" },
        message: format!("CUDA_ERROR_INVALID_VALUE (injected by RINGBRIDGE_INJECT_FAULT for '{named}')"),
    })
}

/// Resolves `requested` (`auto` or a transport name) by trying `setup` on each candidate in
/// order; returns the first that works with a reason listing the ones that failed.
///
/// # Errors
/// The failure of an explicitly requested transport, or of every candidate under `auto` (each
/// named in the message); [`Error::InvalidConfig`] for an unknown name.
pub fn choose_transport<T>(
    requested: &str,
    mut setup: impl FnMut(&'static str) -> Result<T, Error>,
) -> Result<(T, &'static str, String), Error> {
    let candidates: Vec<&'static str> = match requested {
        "auto" => AUTO_ORDER.to_vec(),
        name => match TRANSPORT_NAMES.iter().find(|t| **t == name && name != "auto") {
            Some(t) => vec![*t],
            None => {
                return Err(Error::InvalidConfig {
                    what: format!("transport '{requested}'"),
                    value: None,
                    expected: format!("one of {}", TRANSPORT_NAMES.join(", ")),
                })
            }
        },
    };
    let mut failures = Vec::new();
    for t in &candidates {
        match injected(t).map_or_else(|| setup(t), Err) {
            Ok(link) => {
                let reason = if requested == "auto" {
                    if failures.is_empty() {
                        format!("auto: {t} (lowest latency of the transports that work here)")
                    } else {
                        format!("auto: {t}; unavailable: {}", failures.join("; "))
                    }
                } else {
                    format!("{t}: asked for")
                };
                return Ok((link, t, reason));
            }
            Err(e) if candidates.len() == 1 => return Err(e),
            Err(e) => failures.push(format!("{t} ({e})")),
        }
    }
    Err(Error::BackendUnavailable { backend: "cuda", reason: format!("no transport works here: {}", failures.join("; ")) })
}

/// Launch shape: blocks and threads per block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Blocks (1 = the latency path of the kernel).
    pub blocks: u32,
    /// Threads per block.
    pub threads: u32,
}

impl Shape {
    /// The default for a transport: one block for `mapped` (latency), one per SM otherwise.
    pub fn default_for(transport: &str, sms: u32) -> Self {
        match transport {
            "mapped" => Self { blocks: 1, threads: 512 },
            _ => Self { blocks: sms.max(1), threads: 256 },
        }
    }
}

/// The transport a kernel runs over, and why it was chosen (what `auto` tried and why the
/// others failed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportChoice {
    /// `mapped`, `dma` or `managed`.
    pub name: &'static str,
    /// Why, e.g. "auto: dma; unavailable: mapped (…)".
    pub reason: String,
}

/// The stream a kernel runs on and the runtime (context) it runs in.
#[derive(Clone)]
struct Launch {
    stream: Arc<CudaStream>,
    runtime: Arc<CudaRuntime>,
}

/// What stopping a kernel found.
struct Halted {
    /// The kernel's fault or the service thread's error, if any.
    outcome: Result<(), Error>,
    /// Whether the kernel really ended (its stream finished) before the deadline.
    finished: bool,
}

/// A persistent ring kernel on the GPU.
pub struct CudaKernel {
    // Drop order matters: the service thread and the kernel are stopped in `join`; then the
    // module, the transport (registrations, device rings) and only then the region.
    service: Option<JoinHandle<Result<(), Error>>>,
    stop: Arc<AtomicBool>,
    link: Arc<Mutex<Option<Box<dyn Link>>>>,
    module: Option<RingModule>,
    /// Released by `join`, so a faulted context can be destroyed while the JS object lives on.
    gpu: Option<Launch>,
    region: Arc<Region>,
    /// A route's next stage, whose input ring this kernel writes: kept until this one stopped.
    _downstream: Option<Arc<Region>>,
    /// Set by `stop`: what stopping found, and whether the kernel really ended.
    halted: Option<Halted>,
    /// The transport in use and why.
    pub transport: TransportChoice,
    /// The launch shape.
    pub shape: Shape,
}

/// How often the service thread asks the driver whether the kernel faulted.
const FAULT_POLL: Duration = Duration::from_millis(1);
/// How long `join` waits for the kernel to see a terminate command.
const STOP_LIMIT: Duration = Duration::from_secs(5);

/// A ring kernel set up but not launched: transport, module and stream are ready. Everything
/// that may synchronise the context (allocations, memsets, module loading — lazily loaded
/// modules wait for every running kernel of the context) happens here, so a route prepares all its
/// stages before it launches any: a running persistent stage would otherwise block the next
/// stage's set-up forever.
pub struct PreparedKernel {
    runtime: Arc<CudaRuntime>,
    link: Box<dyn Link>,
    module: RingModule,
    stream: Arc<CudaStream>,
    region: Arc<Region>,
    downstream: Option<Arc<Region>>,
    device: usize,
    cb_device: u64,
    transport: TransportChoice,
    shape: Shape,
}

impl PreparedKernel {
    /// Sets up `spec.transport` for `region` on GPU `spec.device` and loads `spec.handler` (or
    /// the user kernel `spec.user`) with launch shape `spec.shape` (`None`: the transport's
    /// default); `spec.backend` and `spec.isolation` are the caller's business. With
    /// `downstream` (a route, spec §14) the kernel will write that stage's input ring instead of
    /// its own output ring.
    ///
    /// # Errors
    /// Unknown handler or transport; transport set-up or module load failures; a downstream
    /// stage on another GPU.
    ///
    /// `sharing` kernels will run on this GPU together (a route's stages): a default shape then
    /// takes `1/sharing` of the SMs, so every stage's blocks stay resident at once — a
    /// persistent kernel whose blocks wait for SMs another persistent kernel holds never ends.
    pub fn new(region: Arc<Region>, spec: &LaunchSpec<'_>, downstream: Option<Feed>, sharing: u32) -> Result<Self, Error> {
        let device = spec.device as usize;
        let runtime = runtime_on(device)?;
        let ctx = Arc::clone(&runtime.gpu.ctx);
        ctx.bind_to_thread().map_err(cuda_err("cuCtxSetCurrent"))?;
        // A user kernel is its own image (compiled, or found in the disk cache, before anything
        // is set up); the built-in handlers share the runtime's.
        let (id, user_image) = match spec.user {
            Some(u) => (HANDLER_USER, Some(u.compile(runtime.gpu.arch)?)),
            None => (handler_id(spec.handler)?, None),
        };
        let image = user_image.as_ref().unwrap_or(&runtime.image);
        region.control().handler_id.store(id, Ordering::Relaxed);
        let concurrent = runtime.gpu.concurrent_managed;
        let (link, name, reason) = choose_transport(spec.transport, |t| -> Result<Box<dyn Link>, Error> {
            Ok(match t {
                "mapped" => Box::new(MappedLink::new(&ctx, &region)?),
                "dma" => Box::new(DmaLink::new(&ctx, &region)?),
                "hybrid" => Box::new(HybridLink::new(&ctx, &region)?),
                _ => Box::new(ManagedLink::new(&ctx, &region, concurrent)?),
            })
        })?;
        let shape = spec.shape.unwrap_or_else(|| Shape::default_for(name, (runtime.gpu.sms / sharing.max(1)).max(1)));
        if shape.blocks == 0 || shape.threads == 0 || shape.threads > 1024 || shape.threads % 32 != 0 {
            return Err(Error::InvalidConfig {
                what: "kernel shape".into(),
                value: Some(u64::from(shape.threads)),
                expected: "at least one block of 32..=1024 threads, a multiple of 32".into(),
            });
        }
        if let Some(feed) = &downstream {
            region.set_output_view(route_view(feed, device, &ctx)?);
        }
        let module = RingModule::load(&ctx, &image.bytes)?;
        let stream = ctx.new_stream().map_err(cuda_err("cuStreamCreate"))?;
        let cb_device = link.kernel_cb();
        Ok(Self {
            runtime,
            link,
            module,
            stream,
            region,
            downstream: downstream.map(|f| f.region),
            device,
            cb_device,
            transport: TransportChoice { name, reason },
            shape,
        })
    }

    /// How the stage before this one in a route writes this kernel's input ring.
    pub fn feed(&self) -> Feed {
        let memory = match self.transport.name {
            "mapped" => FeedMemory::Host,
            "dma" | "hybrid" => FeedMemory::Device,
            _ => FeedMemory::Managed,
        };
        Feed {
            region: Arc::clone(&self.region),
            view: FeedView::of(&self.region, self.cb_device),
            device: Some(self.device as u32),
            memory,
            waker: None,
        }
    }

    /// Launches the kernel and starts its service thread.
    ///
    /// # Errors
    /// Launch failures; a service thread that cannot be spawned.
    pub fn start(self, notify: Notify) -> Result<CudaKernel, Error> {
        let Self { runtime, link, module, stream, region, downstream, cb_device, transport, shape, .. } = self;
        // L1: the setup line is complete (region init + set_kernel_view) before the launch.
        fence(Ordering::SeqCst);
        module.launch(&stream, cb_device, shape.blocks, shape.threads)?;
        let link = Arc::new(Mutex::new(Some(link)));
        let stop = Arc::new(AtomicBool::new(false));
        let service = {
            let (region, link, stop, stream, runtime) =
                (Arc::clone(&region), Arc::clone(&link), Arc::clone(&stop), Arc::clone(&stream), Arc::clone(&runtime));
            thread::Builder::new()
                .name("ringbridge-cuda-service".into())
                .spawn(move || serve(&region, &link, &stop, &stream, &runtime, notify))
                .map_err(|e| Error::ResourceExhausted { what: "the CUDA service thread".into(), reason: e.to_string() })?
        };
        Ok(CudaKernel {
            service: Some(service),
            stop,
            link,
            module: Some(module),
            gpu: Some(Launch { stream, runtime }),
            region,
            _downstream: downstream,
            halted: None,
            transport,
            shape,
        })
    }
}

impl CudaKernel {
    /// Sets up `spec`'s transport for `region`, launches its handler and starts the service
    /// thread ([`PreparedKernel::new`], then [`PreparedKernel::start`]).
    ///
    /// # Errors
    /// As those two.
    pub fn launch(region: Arc<Region>, spec: &LaunchSpec<'_>, notify: Notify, downstream: Option<Feed>) -> Result<Self, Error> {
        PreparedKernel::new(region, spec, downstream, 1)?.start(notify)
    }
}

/// The service loop: bridge step, doorbell, fault watch; backs off when idle.
fn serve(
    region: &Region,
    link: &Mutex<Option<Box<dyn Link>>>,
    stop: &AtomicBool,
    stream: &Arc<CudaStream>,
    rt: &CudaRuntime,
    notify: Notify,
) -> Result<(), Error> {
    rt.gpu.ctx.bind_to_thread().map_err(cuda_err("cuCtxSetCurrent"))?;
    let cb = region.control();
    let mut seen = (u64::MAX, u64::MAX, u32::MAX);
    let mut idle = 0u32;
    let mut last_query = Instant::now();
    loop {
        let moved = match link.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            Some(l) => l.pump(region)?,
            None => false,
        };
        // ORDERING: (K8) acquire pairs with the kernel's release of state and indices.
        let now =
            (cb.output_tail.value.load(Ordering::Acquire), cb.input_head.value.load(Ordering::Acquire), cb.state.load(Ordering::Acquire));
        if now != seen {
            let state_changed = now.2 != seen.2;
            seen = now;
            // ORDERING: (K7, on the kernel's behalf) SeqCst fence between observing the moved
            // indices and loading host_waiting; pairs with the host's H7.
            fence(Ordering::SeqCst);
            if state_changed || cb.host_waiting.load(Ordering::Relaxed) != 0 {
                notify();
            }
            idle = 0;
        } else if !moved {
            idle = idle.saturating_add(1);
        }
        if stop.load(Ordering::Acquire) {
            return Ok(());
        }
        if last_query.elapsed() >= FAULT_POLL {
            last_query = Instant::now();
            match stream_done(&rt.gpu.ctx, stream) {
                Ok(false) => {}
                Ok(true) if now.2 == KernelState::Terminated as u32 => {}
                result => {
                    take_over_dead_kernel(cb, rt);
                    notify();
                    let why = match result {
                        Err(e) => format!("the kernel faulted: {e}"),
                        _ => "the kernel exited without reporting TERMINATED".to_owned(),
                    };
                    return Err(Error::Cuda { call: "rb_ring_kernel", message: why });
                }
            }
        }
        match idle {
            0..=256 => std::hint::spin_loop(),
            257..=2048 => thread::yield_now(),
            _ => thread::sleep(Duration::from_micros(50)),
        }
    }
}

/// A dead kernel writes nothing more: the host takes over its status words so every waiter
/// sees TERMINATED and the fault (spec §12), and the context is marked for replacement.
fn take_over_dead_kernel(cb: &ControlBlock, rt: &CudaRuntime) {
    rt.poisoned.store(true, Ordering::Relaxed);
    record_error(cb, kernel_error::HANDLER_FAULT);
    // ORDERING: (K8) release, as the kernel's own state change would be.
    cb.state.store(KernelState::Terminated as u32, Ordering::Release);
}

/// The addresses a kernel in `ctx` (on `device`) writes a route's next stage through (spec §14).
/// Same GPU: the stage's own view. Another GPU: the control block (always registered host
/// memory) at this context's address; the slots and tail word either host-staged (a `mapped`
/// stage: registered host memory, at this context's addresses) or in the other GPU's memory,
/// reached by peer access — enabled here, or refused when the devices cannot reach each other.
///
/// # Errors
/// [`Error::InvalidConfig`] for a device-memory ring on a GPU this one has no peer access to
/// (the message says to launch that stage `mapped`); [`Error::Cuda`] for failing calls.
fn route_view(feed: &Feed, device: usize, ctx: &Arc<CudaContext>) -> Result<FeedView, Error> {
    let Some(theirs) = feed.device.map(|d| d as usize) else { return Ok(feed.view) };
    if theirs == device {
        return Ok(feed.view);
    }
    let region = &feed.region;
    let host = region.base_ptr() as u64;
    let head_addr = peer::host_address_in(ctx, host + offsets::INPUT_HEAD as u64)?;
    if feed.memory == FeedMemory::Host {
        return Ok(FeedView {
            slots: peer::host_address_in(ctx, host + region.layout().input_offset as u64)?,
            tail_addr: peer::host_address_in(ctx, host + offsets::INPUT_TAIL as u64)?,
            head_addr,
        });
    }
    let other = runtime_on(theirs)?;
    if !peer::can_access_peer(ctx, &other.gpu.ctx)? {
        return Err(Error::InvalidConfig {
            what: format!("a route from device {device} into device {theirs}'s memory ({:?} transport)", feed.memory),
            value: None,
            expected: format!("peer access between them, which this host does not have: launch the stage on device {theirs} with transport 'mapped' (its input ring then lives in host memory both GPUs reach)"),
        });
    }
    peer::enable_peer_access(ctx, &other.gpu.ctx)?;
    Ok(FeedView { head_addr, ..feed.view })
}

impl Kernel for CudaKernel {
    fn region(&self) -> &Arc<Region> {
        &self.region
    }

    fn wake(&self) {
        // A GPU kernel never parks (kernel_sleeping stays 0); nothing to wake.
    }

    fn stop(&mut self) {
        if self.halted.is_some() {
            return;
        }
        let Some(service) = self.service.take() else { return };
        let Some(Launch { stream, runtime }) = self.gpu.clone() else { return };
        let cb = self.region.control();
        if super::terminate_command(cb) == crate::protocol::TERMINATE_NONE {
            // ORDERING: (H5) release pairs with the kernel's acquire (K1).
            cb.terminate.store(TERMINATE_ABANDON, Ordering::Release);
        }
        // Let the service thread keep bridging while the kernel drains, until it stops.
        let deadline = Instant::now() + STOP_LIMIT;
        let mut outcome = Ok(());
        let mut finished = false;
        while Instant::now() < deadline {
            match stream_done(&runtime.gpu.ctx, &stream) {
                Ok(true) => {
                    finished = true;
                    break;
                }
                Ok(false) => thread::sleep(Duration::from_micros(200)),
                Err(e) => {
                    take_over_dead_kernel(cb, &runtime);
                    outcome = Err(Error::Cuda { call: "rb_ring_kernel", message: format!("the kernel faulted: {e}") });
                    finished = true;
                    break;
                }
            }
        }
        self.stop.store(true, Ordering::Release);
        let served = service.join().unwrap_or(Err(Error::ThreadPanicked { thread: "CUDA service" }));
        if outcome.is_ok() {
            outcome = served;
        }
        self.halted = Some(Halted { outcome, finished });
    }

    fn join(&mut self) -> Result<(), Error> {
        self.stop();
        let Some(Halted { outcome, finished }) = self.halted.take() else { return Ok(()) };
        self.halted = Some(Halted { outcome: Ok(()), finished });
        if !finished {
            // The kernel ignores terminate: its memory must outlive it, so leak the transport
            // and module rather than free memory a running kernel uses.
            std::mem::forget(self.link.lock().unwrap_or_else(|e| e.into_inner()).take());
            std::mem::forget(self.module.take());
            std::mem::forget(self.gpu.take());
            return Err(Error::Timeout { what: "the GPU kernel to stop", millis: STOP_LIMIT.as_millis() as u64 });
        }
        // The last bridge step: replies the kernel published before it stopped.
        if let Some(l) = self.link.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            if let Some(Launch { runtime, .. }) = &self.gpu {
                let _ = runtime.gpu.ctx.bind_to_thread();
            }
            // Settled first, so no span is held back for copies in flight; the bridge publishes
            // in stream order, so the replies are the host's once it settled again.
            let _ = l.settle();
            let _ = l.pump(&self.region);
            let _ = l.settle();
        }
        self.module.take();
        self.link.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.gpu.take();
        outcome
    }
}

impl Drop for CudaKernel {
    fn drop(&mut self) {
        // Errors have nowhere to go in Drop; `join` is idempotent and stops the kernel before
        // the region (a JS SharedArrayBuffer) can be released.
        let _ = self.join();
    }
}
