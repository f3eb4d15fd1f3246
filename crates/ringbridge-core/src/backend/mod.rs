//! Backends run ring kernels: [`cpu`] on a host thread, `cuda` (issue #3) on the GPU. Both run the
//! dispatch loop of [`dispatch`] over a [`Region`]; everything above this seam is shared.
#![forbid(unsafe_code)]

pub mod cpu;
pub mod dispatch;
pub mod handlers;

use std::sync::Arc;

use crate::protocol::{ControlBlock, KernelState, TERMINATE_ABANDON, TERMINATE_DRAIN};
use crate::sync::Ordering;
use crate::transport::Region;
use crate::Error;

/// The host's doorbell: called by the kernel side (from any thread) when it published while the
/// host waits, or changed state.
pub type Notify = Box<dyn Fn() + Send + Sync>;

/// A launched ring kernel, whatever runs it.
pub trait Kernel: Send {
    /// The region the kernel serves.
    fn region(&self) -> &Arc<Region>;
    /// Wakes a kernel that announced sleep (`kernel_sleeping`); harmless otherwise.
    fn wake(&self);
    /// Stops the kernel (abandoning what it has not taken unless a terminate command was already
    /// given) and waits for it to exit.
    ///
    /// # Errors
    /// What the kernel left behind: a crash of its runner.
    fn join(&mut self) -> Result<(), Error>;
}

/// Backend names accepted by [`launch`].
pub const BACKEND_NAMES: &[&str] = &["auto", "cpu", "cuda"];

/// What a backend was asked for and what it chose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendChoice {
    /// The backend that runs kernels.
    pub name: &'static str,
    /// Why `auto` chose it, or why another was not available.
    pub reason: String,
}

/// Resolves a backend name (`auto`, `cpu`, `cuda`) to the backend that will run kernels here.
///
/// # Errors
/// [`Error::BackendUnavailable`] when `cuda` is asked for and cannot run;
/// [`Error::InvalidConfig`] for an unknown name.
pub fn choose(name: &str) -> Result<BackendChoice, Error> {
    const NO_CUDA: &str = "this build has no CUDA backend yet (planned in issue #3)";
    match name {
        "cpu" => Ok(BackendChoice { name: "cpu", reason: "asked for".into() }),
        "auto" => Ok(BackendChoice { name: "cpu", reason: format!("cuda unavailable: {NO_CUDA}") }),
        "cuda" => Err(Error::BackendUnavailable { backend: "cuda", reason: NO_CUDA.into() }),
        other => Err(Error::InvalidConfig {
            what: format!("backend '{other}'"),
            value: 0,
            expected: format!("one of {}", BACKEND_NAMES.join(", ")),
        }),
    }
}

/// Launches a built-in handler on the chosen backend.
///
/// # Errors
/// As [`choose`], plus [`Error::UnknownHandler`] and thread-spawn failures.
pub fn launch(
    backend: &str,
    region: Arc<Region>,
    handler: &str,
    notify: Notify,
) -> Result<(Box<dyn Kernel>, BackendChoice), Error> {
    let choice = choose(backend)?;
    let handler = handlers::builtin(handler)?;
    let kernel = cpu::CpuKernel::launch(region, handler, notify, cpu::DEFAULT_MAX_BATCH)?;
    Ok((Box::new(kernel), choice))
}

/// Asks the kernel to stop: `drain` finishes what is in the input ring, otherwise the rest is
/// abandoned (spec §9). Idempotent; a stronger request (abandon) overrides drain.
pub fn request_terminate(cb: &ControlBlock, drain: bool) {
    let mode = if drain { TERMINATE_DRAIN } else { TERMINATE_ABANDON };
    if cb.terminate.load(Ordering::Relaxed) < mode {
        // ORDERING: (H5) release pairs with the kernel's acquire of terminate (K1) and follows
        // the host's last publish of input.tail.
        cb.terminate.store(mode, Ordering::Release);
    }
}

/// The kernel's state word, decoded.
pub fn state(cb: &ControlBlock) -> Option<KernelState> {
    // ORDERING: (K8) acquire pairs with the kernel's release of `state`.
    KernelState::from_word(cb.state.load(Ordering::Acquire))
}
