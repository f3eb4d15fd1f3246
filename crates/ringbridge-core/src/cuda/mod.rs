//! The only code below cudarc's safe API: owned wrappers around raw driver and NVRTC calls
//! that cudarc's safe layer does not offer (host registration, module globals, stream memory
//! operations, CUBIN output). Every type here releases its resource in `Drop` and records a
//! failure there instead of panicking (cudarc's `record_err`).
//!
//! Nothing here is called before [`driver::open`] has checked that `libcuda` can be loaded:
//! cudarc's dynamic loading panics on a missing library, and a panic must never cross into JS.

pub mod driver;
pub mod memory;
pub mod module;
pub mod nvrtc;
pub mod peer;

use cudarc::driver::DriverError;

use crate::Error;

/// Wraps a failed driver call with its name, for `map_err`.
pub fn cuda_err(call: &'static str) -> impl FnOnce(DriverError) -> Error {
    move |e| Error::Cuda { call, message: e.to_string() }
}
