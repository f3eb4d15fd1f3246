//! Reaching another GPU's memory from a context: peer access (`cuDeviceCanAccessPeer`,
//! `cuCtxEnablePeerAccess`) for device memory, and this context's address of registered host
//! memory (`cuMemHostGetDevicePointer`) for host-staged paths. Routes across GPUs (spec §14)
//! use both.

use std::sync::Arc;

use cudarc::driver::{sys, CudaContext, DriverError};

use super::cuda_err;
use crate::Error;

/// Whether kernels in `from`'s context can read and write memory of `to`'s device directly.
///
/// # Errors
/// [`Error::Cuda`] (`cuDeviceCanAccessPeer`).
pub fn can_access_peer(from: &Arc<CudaContext>, to: &Arc<CudaContext>) -> Result<bool, Error> {
    let mut can = 0;
    // SAFETY: both handles are live devices of contexts we hold; `can` is a valid out pointer.
    unsafe { sys::cuDeviceCanAccessPeer(&mut can, from.cu_device(), to.cu_device()) }
        .result()
        .map_err(cuda_err("cuDeviceCanAccessPeer"))?;
    Ok(can != 0)
}

/// Lets kernels of `from`'s context access `to`'s device memory (at its unified addresses).
/// Idempotent: access already enabled is success.
///
/// # Errors
/// [`Error::Cuda`] (`cuCtxEnablePeerAccess`), e.g. when the devices cannot reach each other.
pub fn enable_peer_access(from: &Arc<CudaContext>, to: &Arc<CudaContext>) -> Result<(), Error> {
    from.bind_to_thread().map_err(cuda_err("cuCtxSetCurrent"))?;
    // SAFETY: `to` is a live context; flags must be 0.
    match unsafe { sys::cuCtxEnablePeerAccess(to.cu_ctx(), 0) } {
        sys::CUresult::CUDA_SUCCESS | sys::CUresult::CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED => Ok(()),
        other => Err(cuda_err("cuCtxEnablePeerAccess")(DriverError(other))),
    }
}

/// The address kernels of `ctx` use for `host`, a byte of host memory registered (portable,
/// DEVICEMAP) by any context of this process: a route's host-staged ring, or a control block.
///
/// # Errors
/// [`Error::Cuda`] (`cuMemHostGetDevicePointer`) when `host` is not such memory.
pub fn host_address_in(ctx: &Arc<CudaContext>, host: u64) -> Result<u64, Error> {
    ctx.bind_to_thread().map_err(cuda_err("cuCtxSetCurrent"))?;
    let mut dptr: sys::CUdeviceptr = 0;
    // SAFETY: a pure query; an address that is not registered host memory is an error result.
    unsafe { sys::cuMemHostGetDevicePointer_v2(&mut dptr, host as *mut std::ffi::c_void, 0) }
        .result()
        .map_err(cuda_err("cuMemHostGetDevicePointer"))?;
    Ok(dptr)
}
