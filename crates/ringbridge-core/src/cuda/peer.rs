//! Reaching another GPU's memory from a context: peer access (`cuDeviceCanAccessPeer`,
//! `cuCtxEnablePeerAccess`) for device memory, and this context's address of registered host
//! memory (`cuMemHostGetDevicePointer`) for host-staged paths. Routes across GPUs (spec §14)
//! use both.

use std::sync::Arc;

use cudarc::driver::{sys, CudaContext, DriverError};

use super::{cuda_err, raw};
use crate::Error;

/// Whether kernels in `from`'s context can read and write memory of `to`'s device directly.
///
/// # Errors
/// [`Error::Cuda`] (`cuDeviceCanAccessPeer`).
pub fn can_access_peer(from: &Arc<CudaContext>, to: &Arc<CudaContext>) -> Result<bool, Error> {
    raw::device_can_access_peer(from.cu_device(), to.cu_device()).map_err(cuda_err("cuDeviceCanAccessPeer"))
}

/// Lets kernels of `from`'s context access `to`'s device memory (at its unified addresses).
/// Idempotent: access already enabled is success.
///
/// # Errors
/// [`Error::Cuda`] (`cuCtxEnablePeerAccess`), e.g. when the devices cannot reach each other.
pub fn enable_peer_access(from: &Arc<CudaContext>, to: &Arc<CudaContext>) -> Result<(), Error> {
    from.bind_to_thread().map_err(cuda_err("cuCtxSetCurrent"))?;
    // SAFETY: `from` is bound above; `to` is a context we hold, hence live.
    match unsafe { raw::ctx_enable_peer_access(to.cu_ctx()) } {
        Ok(()) | Err(DriverError(sys::CUresult::CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED)) => Ok(()),
        Err(other) => Err(cuda_err("cuCtxEnablePeerAccess")(other)),
    }
}

/// The address kernels of `ctx` use for `host`, a byte of host memory registered (portable,
/// DEVICEMAP) by any context of this process: a route's host-staged ring, or a control block.
///
/// # Errors
/// [`Error::Cuda`] (`cuMemHostGetDevicePointer`) when `host` is not such memory.
pub fn host_address_in(ctx: &Arc<CudaContext>, host: u64) -> Result<u64, Error> {
    ctx.bind_to_thread().map_err(cuda_err("cuCtxSetCurrent"))?;
    raw::mem_host_get_device_pointer(host).map_err(cuda_err("cuMemHostGetDevicePointer"))
}
