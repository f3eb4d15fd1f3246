//! Owned GPU-visible memory: registered host ranges, device buffers, mapped pinned buffers and
//! managed buffers. Each frees itself in `Drop` (binding its context first: raw calls do not).

use std::ffi::c_void;
use std::sync::Arc;

use cudarc::driver::{result, sys, CudaContext, CudaStream};

use super::{cuda_err, raw};
use crate::Error;

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
        // SAFETY: the context is bound above; the caller guarantees the range is live, owned and
        // page-aligned; flags are CU_MEMHOSTREGISTER_* values.
        unsafe { raw::mem_host_register(ptr.cast(), len, flags) }.map_err(cuda_err("cuMemHostRegister"))?;
        let mut reg = Self { ctx: Arc::clone(ctx), ptr: ptr.cast(), len, device_ptr: 0 };
        reg.device_ptr = raw::mem_host_get_device_pointer(reg.ptr as u64).map_err(cuda_err("cuMemHostGetDevicePointer"))?;
        Ok(reg)
    }

    /// The range's address as the GPU sees it (equal to the host address under UVA).
    pub fn device_ptr(&self) -> u64 {
        self.device_ptr
    }

    /// Writes `value` to the registered 8-byte word at `offset` in stream order, after the
    /// work enqueued on `stream` before it has landed (`cuStreamWriteValue64` with its default
    /// memory barrier): the dma bridge publishes the host's `output_tail` this way, after the
    /// copies out, without waiting for them (spec §11).
    ///
    /// # Errors
    /// [`Error::Cuda`] (`cuStreamWriteValue64`).
    ///
    /// # Safety
    /// - The registration's context is current on this thread; `stream` belongs to it.
    /// - `offset` is a multiple of 8 and `offset + 8 <= self.len()`; the word is written only
    ///   through the stream (or atomically) while the write may be pending.
    pub unsafe fn write_u64_async(&self, stream: &CudaStream, offset: usize, value: u64) -> Result<(), Error> {
        debug_assert!(offset % 8 == 0 && offset + 8 <= self.len, "word at {offset} of a registration of {}", self.len);
        let flags = sys::CUstreamWriteValue_flags::CU_STREAM_WRITE_VALUE_DEFAULT;
        // SAFETY: forwarded from the caller: an aligned word of this live registration.
        unsafe { raw::stream_write_value64(stream.cu_stream(), self.device_ptr + offset as u64, value, flags) }
            .map_err(cuda_err("cuStreamWriteValue64"))
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
        // SAFETY: the context is bound above; registered in `new` with exactly this pointer; the
        // kernel using it has ended before its owner drops.
        self.ctx.record_err(unsafe { raw::mem_host_unregister(self.ptr) });
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

    /// Copies `len` bytes from host address `src` to bytes `offset..offset+len` of this buffer
    /// on `stream` (`cuMemcpyHtoDAsync`, [`raw::memcpy_htod_async`]); returns once the copy is
    /// enqueued. The source is an address, not a slice: what the copy engine reads may be
    /// rewritten by the host meanwhile (`hybrid`, spec §11.2), and the caller's protocol says
    /// whether such a copy is ever used.
    ///
    /// # Errors
    /// [`Error::Cuda`] (`cuMemcpyHtoDAsync`).
    ///
    /// # Safety
    /// - The buffer's context is current on this thread; `stream` belongs to it.
    /// - `offset + len <= self.len()`.
    /// - `[src, src + len)` is pinned or registered host memory that stays allocated until the
    ///   stream has passed this copy.
    pub unsafe fn copy_from_host_async(&self, stream: &CudaStream, offset: usize, src: *const u8, len: usize) -> Result<(), Error> {
        debug_assert!(offset + len <= self.len, "copy of {len} bytes at {offset} into a buffer of {}", self.len);
        // SAFETY: forwarded from the caller; the device range lies inside this allocation.
        unsafe { raw::memcpy_htod_async(self.ptr + offset as u64, src, len, stream.cu_stream()) }.map_err(cuda_err("cuMemcpyHtoDAsync"))
    }

    /// Copies bytes `offset..offset+dst.len()` of this buffer into `dst` on `stream`
    /// (`cuMemcpyDtoHAsync`, through cudarc's `result::memcpy_dtoh_async`); `dst` holds them
    /// once the stream is synchronised.
    ///
    /// # Errors
    /// [`Error::Cuda`] (`cuMemcpyDtoHAsync`).
    ///
    /// # Safety
    /// - The buffer's context is current on this thread; `stream` belongs to it.
    /// - `offset + dst.len() <= self.len()`.
    /// - `dst` is pinned or registered host memory that nobody reads or writes, and that stays
    ///   allocated, until the stream has passed this copy.
    pub unsafe fn copy_to_host_async(&self, stream: &CudaStream, offset: usize, dst: &mut [u8]) -> Result<(), Error> {
        debug_assert!(offset + dst.len() <= self.len, "copy of {} bytes at {offset} out of a buffer of {}", dst.len(), self.len);
        // SAFETY: forwarded from the caller; the device range lies inside this allocation.
        unsafe { result::memcpy_dtoh_async(dst, self.ptr + offset as u64, stream.cu_stream()) }.map_err(cuda_err("cuMemcpyDtoHAsync"))
    }

    /// Writes `value` to the 8-byte word at `offset` in stream order, after the work enqueued
    /// on `stream` before it (`cuStreamWriteValue64`, `CU_STREAM_WRITE_VALUE_DEFAULT`): the dma
    /// bridge publishes the kernel's input tail this way (data, then index, spec §11).
    ///
    /// # Errors
    /// [`Error::Cuda`] (`cuStreamWriteValue64`).
    ///
    /// # Safety
    /// - The buffer's context is current on this thread; `stream` belongs to it.
    /// - `offset` is a multiple of 8 and `offset + 8 <= self.len()`.
    pub unsafe fn write_u64_async(&self, stream: &CudaStream, offset: usize, value: u64) -> Result<(), Error> {
        debug_assert!(offset % 8 == 0 && offset + 8 <= self.len, "word at {offset} of a buffer of {}", self.len);
        let flags = sys::CUstreamWriteValue_flags::CU_STREAM_WRITE_VALUE_DEFAULT;
        // SAFETY: forwarded from the caller: an aligned word of this live allocation.
        unsafe { raw::stream_write_value64(stream.cu_stream(), self.ptr + offset as u64, value, flags) }
            .map_err(cuda_err("cuStreamWriteValue64"))
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
        buf.device_ptr = raw::mem_host_get_device_pointer(ptr as u64).map_err(cuda_err("cuMemHostGetDevicePointer"))?;
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
