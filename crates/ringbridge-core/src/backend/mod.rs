//! Backends run ring kernels: [`cpu`] on a host thread, [`cuda`] on the GPU. Both run the
//! dispatch loop of [`dispatch`] over a [`Region`]; everything above this seam is shared.
#![forbid(unsafe_code)]

pub mod cpu;
pub mod cuda;
pub mod dispatch;
pub mod handlers;
pub mod route;
pub mod user;

use std::sync::Arc;

use crate::protocol::{ControlBlock, KernelState, TERMINATE_ABANDON, TERMINATE_DRAIN, TERMINATE_NONE};
use crate::sync::Ordering;
use crate::transport::Region;
use crate::Error;

/// The host's doorbell: called by the kernel side (from any thread) when it published while the
/// host waits, or changed state.
pub type Notify = Box<dyn Fn() + Send + Sync>;

/// A launched ring kernel, whatever runs it.
pub trait Kernel: Send + Sync {
    /// The region the kernel serves.
    fn region(&self) -> &Arc<Region>;
    /// Wakes a kernel that announced sleep (`kernel_sleeping`); harmless otherwise.
    fn wake(&self);
    /// Stops the kernel (abandoning unless a terminate command was already given) and waits for
    /// it to exit, releasing nothing yet: a route stops every stage before it frees any, because
    /// freeing GPU memory may synchronise a context another stage still runs in. `join` after.
    fn stop(&mut self) {}
    /// Stops the kernel (abandoning what it has not taken unless a terminate command was already
    /// given) and waits for it to exit.
    ///
    /// # Errors
    /// What the kernel left behind: a crash of its runner.
    fn join(&mut self) -> Result<(), Error>;
    /// The kernel host's process id under [`Isolation::Process`]; `None` in this process.
    fn host_pid(&self) -> Option<u32> {
        None
    }
    /// Every region served, first stage first (one, except for a route).
    fn regions(&self) -> Vec<Arc<Region>> {
        vec![Arc::clone(self.region())]
    }
    /// How a kernel of the same runner writes this kernel's input ring (a route, spec §14).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a kernel that cannot be fed by another kernel.
    fn feed(&self) -> Result<route::Feed, Error> {
        Err(Error::InvalidConfig {
            what: "a route into this kernel".into(),
            value: None,
            expected: "a kernel launched in the same runner (route stages launch together)".into(),
        })
    }
    /// The waker a neighbour in a route rings after moving an index this kernel may park on.
    fn waker(&self) -> Option<route::Waker> {
        None
    }
    /// Gives this kernel the waker of the stage writing its input ring: it rings it after
    /// releasing input slots (cpu backend; GPU kernels never park).
    fn set_upstream(&self, _upstream: route::Waker) {}
}

/// Backend names accepted by [`launch`].
pub const BACKEND_NAMES: &[&str] = &["auto", "cpu", "cuda"];
/// The transport the cpu backend reports: its kernel reads the rings' shared memory directly.
pub const CPU_TRANSPORT: &str = "shared-memory";

/// What a backend was asked for and what it chose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendChoice {
    /// The backend that runs kernels.
    pub name: &'static str,
    /// Why `auto` chose it, or a description of the device.
    pub reason: String,
}

/// Resolves a backend name (`auto`, `cpu`, `cuda`) to the backend that will run kernels here.
/// `auto` takes CUDA when the driver, NVRTC and a device work, else the CPU backend with the
/// reason. Opens no CUDA context ([`cuda::probe`]).
///
/// # Errors
/// [`Error::BackendUnavailable`] (or the compile/load error) when `cuda` is asked for and
/// cannot run; [`Error::InvalidConfig`] for an unknown name.
pub fn choose(name: &str) -> Result<BackendChoice, Error> {
    match name {
        "cpu" => Ok(BackendChoice { name: "cpu", reason: "asked for".into() }),
        "cuda" => cuda::probe().map(|d| BackendChoice { name: "cuda", reason: d }),
        "auto" => Ok(match cuda::probe() {
            Ok(d) => BackendChoice { name: "cuda", reason: format!("auto: {d}") },
            Err(e) => BackendChoice { name: "cpu", reason: format!("auto: cuda unavailable ({e})") },
        }),
        other => Err(Error::InvalidConfig {
            what: format!("backend '{other}'"),
            value: None,
            expected: format!("one of {}", BACKEND_NAMES.join(", ")),
        }),
    }
}

/// Where a kernel's runner lives.
#[derive(Clone, Copy, Debug, Default)]
pub enum Isolation<'a> {
    /// A thread of this process (cpu) or a context of this process (cuda): the lowest set-up
    /// cost, but a GPU fault leaves this process unable to use CUDA again.
    #[default]
    Thread,
    /// A kernel host process started with this command (`crate::isolate`): the region must be
    /// shared memory ([`Region::alloc_shared`]); a fault ends the host only.
    Process(&'a crate::isolate::HostCommand),
}

/// What to launch.
#[derive(Clone, Debug)]
pub struct LaunchSpec<'a> {
    /// `cpu` or `cuda` (resolve `auto` with [`choose`] first), or `auto`.
    pub backend: &'a str,
    /// Built-in handler name.
    pub handler: &'a str,
    /// GPU transport: `auto`, `mapped`, `dma`, `managed` (the cpu backend takes `auto` only).
    pub transport: &'a str,
    /// GPU launch shape; `None` for the transport's default.
    pub shape: Option<cuda::Shape>,
    /// In this process, or in a kernel host process.
    pub isolation: Isolation<'a>,
    /// A user handler in CUDA C instead of the built-in `handler` (cuda backend only).
    pub user: Option<&'a user::UserKernel>,
    /// The GPU (CUDA device ordinal); 0 on the cpu backend.
    pub device: u32,
}

impl<'a> LaunchSpec<'a> {
    /// The built-in `handler` on `backend` with every other choice at its default: transport
    /// `auto`, the transport's shape, in this process, device 0. Set the rest with struct update
    /// syntax: `LaunchSpec { device: 1, ..LaunchSpec::new("cuda", "echo") }`.
    pub fn new(backend: &'a str, handler: &'a str) -> Self {
        Self { backend, handler, transport: "auto", shape: None, isolation: Isolation::Thread, user: None, device: 0 }
    }
}

/// What was launched, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launched {
    /// Backend and reason.
    pub backend: BackendChoice,
    /// `shared-memory` on the cpu backend, else the GPU transport.
    pub transport: &'static str,
    /// Why that transport (what `auto` tried and why the others failed).
    pub transport_reason: String,
}

/// Launches a built-in handler, in this process or (with [`Isolation::Process`]) in a kernel
/// host, which resolves the backend itself (so `auto` opens no CUDA context here).
///
/// # Errors
/// As [`choose`], plus [`Error::UnknownHandler`], an unknown transport, and set-up failures.
pub fn launch(spec: &LaunchSpec<'_>, region: Arc<Region>, notify: Notify) -> Result<(Box<dyn Kernel>, Launched), Error> {
    if let Isolation::Process(command) = spec.isolation {
        let requests = [crate::isolate::wire::LaunchRequest::of(spec)];
        let (kernel, mut launched) = crate::isolate::parent::ProcessKernel::spawn(command, &requests, vec![region], notify)?;
        return Ok((Box::new(kernel), launched.remove(0)));
    }
    prepare_stage(spec, region, notify, None, 1)?.start()
}

/// Launches a route (spec §14): stage *i*'s output ring is stage *i+1*'s input ring, the host
/// writes the first stage's input and reads the last stage's output. `regions[i]` is stage
/// *i*'s region; the stages share one runner (this process, or one kernel host).
///
/// # Errors
/// [`route::check_route`]'s, and any stage's launch error.
pub fn launch_route(
    specs: &[LaunchSpec<'_>],
    regions: Vec<Arc<Region>>,
    notify: Notify,
) -> Result<(Box<dyn Kernel>, Vec<Launched>), Error> {
    if let Isolation::Process(command) = specs[0].isolation {
        // Refused here, before a kernel host starts (the host checks again, in process).
        route::check_route(specs, &regions)?;
        let requests: Vec<_> = specs.iter().map(crate::isolate::wire::LaunchRequest::of).collect();
        let (kernel, launched) = crate::isolate::parent::ProcessKernel::spawn(command, &requests, regions, notify)?;
        return Ok((Box::new(kernel), launched));
    }
    let notify: Arc<dyn Fn() + Send + Sync> = Arc::from(notify);
    let (kernel, launched) = route::launch_in_process(specs, &regions, &notify)?;
    Ok((Box::new(kernel), launched))
}

/// A stage set up in this process: a GPU kernel ready to launch (everything that may
/// synchronise its context done), or a cpu kernel, which has nothing to prepare and runs.
pub enum Prepared {
    /// A GPU kernel, its doorbell and the backend choice, not launched yet.
    Cuda(cuda::PreparedKernel, Notify, BackendChoice),
    /// A running kernel.
    Running(Box<dyn Kernel>, Launched),
}

impl Prepared {
    /// How the stage before this one in a route writes this kernel's input ring.
    ///
    /// # Errors
    /// As [`Kernel::feed`].
    pub fn feed(&self) -> Result<route::Feed, Error> {
        match self {
            Self::Cuda(k, ..) => Ok(k.feed()),
            Self::Running(k, _) => k.feed(),
        }
    }

    /// As [`Kernel::waker`].
    pub fn waker(&self) -> Option<route::Waker> {
        match self {
            Self::Cuda(..) => None,
            Self::Running(k, _) => k.waker(),
        }
    }

    /// As [`Kernel::set_upstream`].
    pub fn set_upstream(&self, upstream: route::Waker) {
        if let Self::Running(k, _) = self {
            k.set_upstream(upstream);
        }
    }

    /// Launches a prepared GPU kernel; a running one is returned as it is.
    ///
    /// # Errors
    /// The launch's.
    pub fn start(self) -> Result<(Box<dyn Kernel>, Launched), Error> {
        match self {
            Self::Cuda(k, notify, choice) => {
                let kernel = k.start(notify)?;
                let cuda::TransportChoice { name: transport, reason: transport_reason } = kernel.transport.clone();
                Ok((Box::new(kernel), Launched { backend: choice, transport, transport_reason }))
            }
            Self::Running(k, l) => Ok((k, l)),
        }
    }
}

/// Sets up one kernel in this process ([`Prepared`]); `downstream` (a route) makes its output
/// ring the input ring of that stage instead of its own. `sharing`: how many kernels of a route
/// will share its GPU (default shapes split the SMs among them).
///
/// # Errors
/// As [`launch`].
pub fn prepare_stage(
    spec: &LaunchSpec<'_>,
    region: Arc<Region>,
    notify: Notify,
    downstream: Option<route::Feed>,
    sharing: u32,
) -> Result<Prepared, Error> {
    let choice = choose(spec.backend)?;
    if choice.name == "cuda" {
        let kernel = cuda::PreparedKernel::new(region, spec, downstream, sharing)?;
        return Ok(Prepared::Cuda(kernel, notify, choice));
    }
    if spec.device != 0 {
        return Err(Error::InvalidConfig {
            what: "device on the cpu backend".into(),
            value: Some(spec.device.into()),
            expected: "0 (the cpu backend has one device)".into(),
        });
    }
    if spec.user.is_some() {
        return Err(Error::InvalidConfig {
            what: "a CUDA handler (source, entry) on the cpu backend".into(),
            value: None,
            expected: "the cuda backend; the cpu backend runs built-in handlers".into(),
        });
    }
    if spec.transport != "auto" {
        return Err(Error::InvalidConfig {
            what: format!("transport '{}' on the cpu backend", spec.transport),
            value: None,
            expected: "'auto' (the cpu backend's kernel reads the shared memory directly)".into(),
        });
    }
    if spec.handler == EXTERNAL_HANDLER {
        return Ok(Prepared::Running(
            Box::new(ExternalKernel { region }),
            Launched { backend: choice, transport: CPU_TRANSPORT, transport_reason: "cpu backend, kernel run by the caller".into() },
        ));
    }
    let handler = handlers::builtin(spec.handler)?;
    let kernel = cpu::CpuKernel::launch(region, handler, notify, cpu::DEFAULT_MAX_BATCH, downstream)?;
    Ok(Prepared::Running(Box::new(kernel), Launched { backend: choice, transport: CPU_TRANSPORT, transport_reason: "cpu backend".into() }))
}

/// The handler name under which the cpu backend only initialises the region and runs nothing:
/// the caller runs the kernel side itself (the JS facade's worker-thread handlers).
pub const EXTERNAL_HANDLER: &str = "external";

/// A region whose kernel side someone else runs (see [`EXTERNAL_HANDLER`]): waking and stopping
/// it is that runner's business.
pub struct ExternalKernel {
    region: Arc<Region>,
}

impl Kernel for ExternalKernel {
    fn region(&self) -> &Arc<Region> {
        &self.region
    }

    fn wake(&self) {}

    fn join(&mut self) -> Result<(), Error> {
        Ok(())
    }
}

/// Asks the kernel to stop: `drain` finishes what is in the input ring, otherwise the rest is
/// abandoned (spec §9). Idempotent; a stronger request (abandon) overrides drain.
pub fn request_terminate(cb: &ControlBlock, drain: bool) {
    let mode = if drain { TERMINATE_DRAIN } else { TERMINATE_ABANDON };
    if terminate_command(cb) < mode {
        // ORDERING: (H5) release pairs with the kernel's acquire of terminate (K1) and follows
        // the host's last publish of input.tail.
        cb.terminate.store(mode, Ordering::Release);
    }
}

/// The terminate command the host gave: DRAIN or ABANDON, else NONE. A word that holds no
/// command (a buggy host's store) is not one the kernel acts on (K1), so it must not keep a
/// stop request from being stored: found by `tests/fuzz_frames.rs`, where `terminate = 7` made
/// `request_terminate` and `join` store nothing and wait for a kernel that never stopped.
pub(crate) fn terminate_command(cb: &ControlBlock) -> u32 {
    match cb.terminate.load(Ordering::Relaxed) {
        t @ (TERMINATE_DRAIN | TERMINATE_ABANDON) => t,
        _ => TERMINATE_NONE,
    }
}

/// The kernel's state word, decoded.
pub fn state(cb: &ControlBlock) -> Option<KernelState> {
    // ORDERING: (K8) acquire pairs with the kernel's release of `state`.
    KernelState::from_word(cb.state.load(Ordering::Acquire))
}
