//! The CUDA driver calls cudarc 0.19 does not wrap, in the shape of cudarc's own
//! `driver::result` layer: one thin function per call, returning `Result<_, DriverError>`, with
//! the caller's obligations under `# Safety` and a link to NVIDIA's reference page.
//!
//! This is the only file of the crate that calls `cudarc::driver::sys`. Everything cudarc does
//! wrap (allocation, memset, copies, modules, launches, contexts, streams) is called through
//! cudarc's safe API or its `result` layer, and only from `src/cuda/`, behind an owned type.
//!
//! Nothing here may run before [`is_culib_present`] said yes: cudarc opens `libcuda` on first
//! use and panics when it is missing.

use std::ffi::{c_int, c_uint, c_void};

use cudarc::driver::{sys, DriverError};

/// Whether `libcuda` can be loaded at all (cudarc's `sys::is_culib_present`).
pub fn is_culib_present() -> bool {
    // SAFETY: only tries to open the library (running its initialisers, as any CUDA program
    // does); no function of it is called.
    unsafe { sys::is_culib_present() }
}

/// `cuDriverGetVersion`: the driver's CUDA version, e.g. 13000 for CUDA 13.0.
///
/// See [`cuDriverGetVersion`](https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__VERSION.html).
///
/// # Errors
/// The driver's error.
pub fn driver_get_version() -> Result<i32, DriverError> {
    let mut version: c_int = 0;
    // SAFETY: writes one int through a valid pointer; needs no context.
    unsafe { sys::cuDriverGetVersion(&mut version) }.result()?;
    Ok(version)
}

/// `cuMemHostRegister`: page-locks `ptr..ptr+bytes` and, with `CU_MEMHOSTREGISTER_DEVICEMAP`,
/// maps it into the current context's address space.
///
/// See [`cuMemHostRegister`](https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__MEM.html).
///
/// # Errors
/// The driver's error, e.g. `CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED` when a page of the
/// range is registered already, `CUDA_ERROR_INVALID_VALUE` where registration is unsupported.
///
/// # Safety
/// - A context is current on this thread.
/// - `ptr..ptr+bytes` is host memory that stays allocated until [`mem_host_unregister`] of
///   the same `ptr`; no other allocation shares its pages (registration pins whole pages).
/// - `flags` is a combination of `CU_MEMHOSTREGISTER_*`.
pub unsafe fn mem_host_register(ptr: *mut c_void, bytes: usize, flags: c_uint) -> Result<(), DriverError> {
    // SAFETY: forwarded from the caller.
    unsafe { sys::cuMemHostRegister_v2(ptr, bytes, flags) }.result()
}

/// `cuMemHostUnregister`: undoes [`mem_host_register`].
///
/// See [`cuMemHostUnregister`](https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__MEM.html).
///
/// # Errors
/// The driver's error.
///
/// # Safety
/// - A context is current on this thread.
/// - `ptr` is the start of a range registered by [`mem_host_register`], not unregistered yet,
///   that no running kernel or pending copy still uses.
pub unsafe fn mem_host_unregister(ptr: *mut c_void) -> Result<(), DriverError> {
    // SAFETY: forwarded from the caller.
    unsafe { sys::cuMemHostUnregister(ptr) }.result()
}

/// `cuMemHostGetDevicePointer`: the address kernels of the current context use for `host`, a
/// byte of host memory registered (`DEVICEMAP`) or allocated with `CU_MEMHOSTALLOC_DEVICEMAP`,
/// by this context or (portable memory) by any context of the process.
///
/// Safe: the driver looks `host` up in its tables and never reads or writes through it; an
/// address that is not such memory, or no current context, is an error result.
///
/// See [`cuMemHostGetDevicePointer`](https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__MEM.html).
///
/// # Errors
/// The driver's error (`CUDA_ERROR_INVALID_VALUE` for memory that is not mapped host memory).
pub fn mem_host_get_device_pointer(host: u64) -> Result<sys::CUdeviceptr, DriverError> {
    let mut dptr: sys::CUdeviceptr = 0;
    // SAFETY: a pure query (see above); `dptr` is a valid out pointer; flags must be 0.
    unsafe { sys::cuMemHostGetDevicePointer_v2(&mut dptr, host as *mut c_void, 0) }.result()?;
    Ok(dptr)
}

/// `cuStreamQuery`: `Ok(true)` when all work on `stream` has finished, `Ok(false)` while some
/// runs (`CUDA_ERROR_NOT_READY`).
///
/// See [`cuStreamQuery`](https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__STREAM.html).
///
/// # Errors
/// Any other result: the error of a failed kernel on the stream (a trap, an illegal address),
/// which is sticky for the context.
///
/// # Safety
/// - The stream's context is current on this thread.
/// - `stream` is a live stream (not destroyed).
pub unsafe fn stream_query(stream: sys::CUstream) -> Result<bool, DriverError> {
    // SAFETY: forwarded from the caller.
    match unsafe { sys::cuStreamQuery(stream) } {
        sys::CUresult::CUDA_SUCCESS => Ok(true),
        sys::CUresult::CUDA_ERROR_NOT_READY => Ok(false),
        e => Err(DriverError(e)),
    }
}

/// `cuStreamWriteValue64`: writes `value` to the device word `addr` in stream order.
/// `CU_STREAM_WRITE_VALUE_DEFAULT` orders the write after all prior work on the stream.
///
/// See [`cuStreamWriteValue64`](https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__MEMOP.html).
///
/// # Errors
/// The driver's error (e.g. `CUDA_ERROR_NOT_SUPPORTED` on devices without stream memory
/// operations).
///
/// # Safety
/// - The stream's context is current on this thread; `stream` is live.
/// - `addr` is an 8-byte-aligned word of device memory (or mapped host memory) of that
///   context that stays allocated until the stream has passed the write, and nothing else
///   writes it concurrently except by the protocol's rules.
pub unsafe fn stream_write_value64(
    stream: sys::CUstream,
    addr: sys::CUdeviceptr,
    value: u64,
    flags: sys::CUstreamWriteValue_flags,
) -> Result<(), DriverError> {
    // SAFETY: forwarded from the caller.
    unsafe { sys::cuStreamWriteValue64_v2(stream, addr, value, flags as c_uint) }.result()
}

/// `cuDeviceCanAccessPeer`: whether contexts on `dev` can access memory of `peer`.
///
/// Safe: device handles are ordinals the driver validates (an invalid one is an error result).
///
/// See [`cuDeviceCanAccessPeer`](https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__PEER__ACCESS.html).
///
/// # Errors
/// The driver's error (`CUDA_ERROR_INVALID_DEVICE`).
pub fn device_can_access_peer(dev: sys::CUdevice, peer: sys::CUdevice) -> Result<bool, DriverError> {
    let mut can: c_int = 0;
    // SAFETY: `can` is a valid out pointer; the handles are plain ordinals (see above).
    unsafe { sys::cuDeviceCanAccessPeer(&mut can, dev, peer) }.result()?;
    Ok(can != 0)
}

/// `cuCtxEnablePeerAccess`: lets kernels of the current context access memory of `peer`'s
/// device (flags 0, the only value the driver accepts).
///
/// See [`cuCtxEnablePeerAccess`](https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__PEER__ACCESS.html).
///
/// # Errors
/// The driver's error, including `CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED` (the caller decides
/// whether that is success) and `CUDA_ERROR_PEER_ACCESS_UNSUPPORTED`.
///
/// # Safety
/// - A context is current on this thread.
/// - `peer` is a live context (not destroyed).
pub unsafe fn ctx_enable_peer_access(peer: sys::CUcontext) -> Result<(), DriverError> {
    // SAFETY: forwarded from the caller; flags 0.
    unsafe { sys::cuCtxEnablePeerAccess(peer, 0) }.result()
}

/// `cuMemcpyHtoDAsync`: copies `len` bytes from host address `src` to device address `dst` on
/// `stream`, taking the source as a raw address. cudarc's `memcpy_htod_async` takes a `&[u8]`,
/// which promises Rust that nobody writes those bytes while the reference lives; the `hybrid`
/// bridge copies host slots the host may be rewriting (spec §11.2, HY1/HY2: the kernel never
/// reads such a copy), which a raw address states honestly.
///
/// See [`cuMemcpyHtoDAsync`](https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__MEM.html).
///
/// # Errors
/// The driver's result.
///
/// # Safety
/// - The stream's context is current on this thread; `stream` is live.
/// - `[dst, dst + len)` is device memory of that context, and `[src, src + len)` pinned or
///   registered host memory that stays allocated until the stream has passed the copy.
pub unsafe fn memcpy_htod_async(dst: sys::CUdeviceptr, src: *const u8, len: usize, stream: sys::CUstream) -> Result<(), DriverError> {
    // SAFETY: forwarded from the caller.
    unsafe { sys::cuMemcpyHtoDAsync_v2(dst, src as *const c_void, len, stream) }.result()
}
