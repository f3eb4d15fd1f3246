//! The only code below cudarc's safe API: owned types over cudarc's `result` layer (device,
//! pinned and managed buffers, modules and launches) and over the few driver calls cudarc does
//! not wrap at all, which live in [`raw`] alone (host registration, device pointers of host
//! memory, stream queries and write-value, peer access), plus the NVRTC calls of [`nvrtc`]
//! (CUBIN output). Every type here releases its resource in `Drop` and records a failure there
//! instead of panicking (cudarc's `record_err`).
//!
//! Nothing here is called before [`driver::open`] has checked that `libcuda` can be loaded:
//! cudarc's dynamic loading panics on a missing library, and a panic must never cross into JS.

pub mod diagnose;
pub mod driver;
pub mod locate;
pub mod memory;
pub mod module;
pub mod nvrtc;
pub mod peer;
pub mod raw;

use cudarc::driver::DriverError;

use crate::Error;

/// Wraps a failed driver call with its name, for `map_err`.
pub fn cuda_err(call: &'static str) -> impl FnOnce(DriverError) -> Error {
    move |e| Error::Cuda { call, message: e.to_string() }
}
