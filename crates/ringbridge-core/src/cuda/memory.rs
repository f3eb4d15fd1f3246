//! Owned GPU-visible memory: registered host ranges, device buffers, mapped pinned buffers and
//! managed buffers. Each frees itself in `Drop` (binding its context first: raw calls do not).

use std::ffi::c_void;
use std::sync::Arc;

use cudarc::driver::{result, sys, CudaContext};

use super::cuda_err;
use crate::Error;

fn device_pointer_of(host: *mut c_void) -> Result<u64, Error> {
    let mut dptr: sys::CUdeviceptr = 0;
    // SAFETY: `host` lies in memory registered or allocated with DEVICEMAP in the current context.
    unsafe { sys::cuMemHostGetDevicePointer_v2(&mut dptr, host, 0) }
        .result()
        .map_err(cuda_err("cuMemHostGetDevicePointer"))?;
    Ok(dptr)
}

/// A host range pinned and mapped into the GPU with `cuMemHostRegister(DEVICEMAP | PORTABLE)`
/// (the JS SharedArrayBuffer of a kernel's region). Unregistered on drop.
pub struct HostRegistration {
    ctx: Arc<CudaContext>,
    ptr: *mut c_void,
    len: usize,
    device_ptr: u64,
}

// SAFETY: a registration is an address range and a context handle; the driver allows
// unregistering from any thread that binds the context, which Drop does.
unsafe impl Send for HostRegistration {}
// SAFETY: shared access only reads the fields.
unsafe impl Sync for HostRegistration {}

impl HostRegistration {
    /// Registers `ptr..ptr+len`.
    ///
    /// # Errors
    /// [`Error::Cuda`] naming the call (e.g. `CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED` when a
    /// page of the range is registered already).
    ///
    /// # Safety
    /// The range must stay allocated until the registration drops, and be page-aligned so no
    /// other allocation shares its pages.
    pub unsafe fn new(ctx: &Arc<CudaContext>, ptr: *mut u8, len: usize) -> Result<Self, Error> {
        ctx.bind_to_thread().map_err(cuda_err("cuCtxSetCurrent"))?;
        let flags = sys::CU_MEMHOSTREGISTER_DEVICEMAP | sys::CU_MEMHOSTREGISTER_PORTABLE;
        // SAFETY: the caller guarantees the range is live and owned; flags are valid.
        unsafe { sys::cuMemHostRegister_v2(ptr.cast(), len, flags) }
            .result()
            .map_err(cuda_err("cuMemHostRegister"))?;
        let mut reg = Self { ctx: Arc::clone(ctx), ptr: ptr.cast(), len, device_ptr: 0 };
        reg.device_ptr = device_pointer_of(reg.ptr)?;
        Ok(reg)
    }

    /// The range's address as the GPU sees it (equal to the host address under UVA).
    pub fn device_ptr(&self) -> u64 {
        self.device_ptr
    }

    /// Bytes registered.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the range is empty (never, once registered).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for HostRegistration {
    fn drop(&mut self) {
        self.ctx.record_err(self.ctx.bind_to_thread());
        // SAFETY: registered in `new` with exactly this pointer.
        self.ctx.record_err(unsafe { sys::cuMemHostUnregister(self.ptr) }.result());
    }
}

/// Device memory from `cuMemAlloc`, or managed memory from `cuMemAllocManaged`.
pub struct DeviceBuffer {
    ctx: Arc<CudaContext>,
    ptr: sys::CUdeviceptr,
    len: usize,
}

impl DeviceBuffer {
    /// Allocates `len` bytes, zeroed.
    ///
    /// # Errors
    /// [`Error::Cuda`] (`cuMemAlloc`, `cuMemsetD8`).
    pub fn zeroed(ctx: &Arc<CudaContext>, len: usize) -> Result<Self, Error> {
        ctx.bind_to_thread().map_err(cuda_err("cuCtxSetCurrent"))?;
        // SAFETY: a plain allocation in the bound context.
        let ptr = unsafe { result::malloc_sync(len.max(1)) }.map_err(cuda_err("cuMemAlloc"))?;
        let buf = Self { ctx: Arc::clone(ctx), ptr, len };
        // SAFETY: `ptr` is a fresh allocation of at least `len` bytes.
        unsafe { result::memset_d8_sync(ptr, 0, len) }.map_err(cuda_err("cuMemsetD8"))?;
        Ok(buf)
    }

    /// Allocates `len` zeroed bytes of managed memory (`cuMemAllocManaged(ATTACH_GLOBAL)`),
    /// reachable from host and device at the same address; freed like device memory.
    ///
    /// # Errors
    /// [`Error::Cuda`] (`cuMemAllocManaged`).
    pub fn managed_zeroed(ctx: &Arc<CudaContext>, len: usize) -> Result<Self, Error> {
        ctx.bind_to_thread().map_err(cuda_err("cuCtxSetCurrent"))?;
        // SAFETY: a plain allocation in the bound context.
        let ptr = unsafe { result::malloc_managed(len.max(1), sys::CUmemAttach_flags::CU_MEM_ATTACH_GLOBAL) }
            .map_err(cuda_err("cuMemAllocManaged"))?;
        // SAFETY: managed memory is host-addressable at the same address; fresh, `len` bytes.
        unsafe { (ptr as *mut u8).write_bytes(0, len) };
        Ok(Self { ctx: Arc::clone(ctx), ptr, len })
    }

    /// Device address (also the host address of managed memory).
    pub fn ptr(&self) -> u64 {
        self.ptr
    }

    /// Bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        self.ctx.record_err(self.ctx.bind_to_thread());
        // SAFETY: allocated by `zeroed` or `managed_zeroed` (cuMemFree frees both); the kernel
        // using it has ended before its owner drops.
        self.ctx.record_err(unsafe { result::free_sync(self.ptr) });
    }
}

/// Pinned host memory mapped into the GPU (`cuMemHostAlloc(DEVICEMAP | PORTABLE)`), for words
/// the GPU writes and the host polls.
pub struct PinnedBuffer {
    ctx: Arc<CudaContext>,
    ptr: *mut u8,
    len: usize,
    device_ptr: u64,
}

// SAFETY: plain memory owned by this value; freed from any thread after binding the context.
unsafe impl Send for PinnedBuffer {}
// SAFETY: shared access hands out the pointer only; users synchronise through atomics.
unsafe impl Sync for PinnedBuffer {}

impl PinnedBuffer {
    /// Allocates `len` zeroed bytes.
    ///
    /// # Errors
    /// [`Error::Cuda`] (`cuMemHostAlloc`: fails with `CUDA_ERROR_INVALID_VALUE` on WSL2).
    pub fn zeroed(ctx: &Arc<CudaContext>, len: usize) -> Result<Self, Error> {
        ctx.bind_to_thread().map_err(cuda_err("cuCtxSetCurrent"))?;
        let flags = sys::CU_MEMHOSTALLOC_DEVICEMAP | sys::CU_MEMHOSTALLOC_PORTABLE;
        // SAFETY: a plain allocation in the bound context.
        let ptr = unsafe { result::malloc_host(len.max(1), flags) }.map_err(cuda_err("cuMemHostAlloc"))? as *mut u8;
        // SAFETY: fresh allocation of at least `len` bytes.
        unsafe { ptr.write_bytes(0, len) };
        let mut buf = Self { ctx: Arc::clone(ctx), ptr, len, device_ptr: 0 };
        buf.device_ptr = device_pointer_of(ptr.cast())?;
        Ok(buf)
    }

    /// Host address.
    pub fn host_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Device address.
    pub fn device_ptr(&self) -> u64 {
        self.device_ptr
    }

    /// Bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for PinnedBuffer {
    fn drop(&mut self) {
        self.ctx.record_err(self.ctx.bind_to_thread());
        // SAFETY: allocated in `zeroed`.
        self.ctx.record_err(unsafe { result::free_host(self.ptr.cast()) });
    }
}
