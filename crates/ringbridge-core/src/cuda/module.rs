//! One loaded instance of the ring kernel's module: its function, its `rb_grid` coordination
//! global, and the launch of the persistent kernel on a non-blocking stream.

use std::ffi::{c_void, CString};
use std::sync::Arc;

use cudarc::driver::{result, sys, CudaContext, CudaStream, DriverError};

use super::{cuda_err, raw};
use crate::Error;

/// The kernel's entry point in `kernels/ring_kernel.cu`.
pub const KERNEL_NAME: &str = "rb_ring_kernel";
/// The module-scope `__device__` struct the kernel's blocks coordinate through; zeroed before
/// each launch.
pub const GRID_STATE_NAME: &str = "rb_grid";

/// A module instance: each launched kernel gets its own, so its `rb_grid` is its own.
pub struct RingModule {
    ctx: Arc<CudaContext>,
    module: sys::CUmodule,
    function: sys::CUfunction,
    grid_state: DeviceGlobal,
}

/// A module-scope `__device__` variable: where it lives and how large it is
/// (`cuModuleGetGlobal`).
#[derive(Clone, Copy, Debug, Default)]
struct DeviceGlobal {
    ptr: sys::CUdeviceptr,
    bytes: usize,
}

// SAFETY: module and function handles are context objects usable from any thread that binds
// the context; every method binds it first.
unsafe impl Send for RingModule {}
// SAFETY: as above; no interior mutation.
unsafe impl Sync for RingModule {}

impl RingModule {
    /// Loads a CUBIN or NUL-terminated PTX image (eagerly: a spinning persistent kernel plus
    /// lazy loading can deadlock other threads' copies: a lazily loaded module waits for every
    /// running kernel of the context, and a persistent one never ends).
    ///
    /// # Errors
    /// [`Error::Cuda`] (`cuModuleLoadData`: e.g. `CUDA_ERROR_UNSUPPORTED_PTX_VERSION` when the
    /// NVRTC is newer than the driver), or a missing symbol.
    pub fn load(ctx: &Arc<CudaContext>, image: &[u8]) -> Result<Self, Error> {
        ctx.bind_to_thread().map_err(cuda_err("cuCtxSetCurrent"))?;
        // SAFETY: `image` is a complete CUBIN, or PTX ending in NUL (nvrtc.rs guarantees both).
        let module = unsafe { result::module::load_data(image.as_ptr() as *const c_void) }.map_err(cuda_err("cuModuleLoadData"))?;
        let mut this = Self { ctx: Arc::clone(ctx), module, function: std::ptr::null_mut(), grid_state: DeviceGlobal::default() };
        let name = CString::new(KERNEL_NAME).expect("no NUL in the name");
        // SAFETY: `module` was loaded above and lives as long as `this`.
        this.function = unsafe { result::module::get_function(this.module, name) }.map_err(cuda_err("cuModuleGetFunction"))?;
        let global = CString::new(GRID_STATE_NAME).expect("no NUL in the name");
        // SAFETY: as above.
        let (ptr, bytes) = unsafe { result::module::get_global(this.module, global) }.map_err(cuda_err("cuModuleGetGlobal"))?;
        this.grid_state = DeviceGlobal { ptr, bytes };
        Ok(this)
    }

    /// Zeroes `rb_grid` and launches `rb_ring_kernel(cb)` with `grid` × `block` threads on
    /// `stream`; returns at once (the kernel runs until told to terminate).
    ///
    /// # Errors
    /// [`Error::Cuda`] (`cuMemsetD8Async`, `cuLaunchKernel`).
    pub fn launch(&self, stream: &Arc<CudaStream>, cb: u64, grid: u32, block: u32) -> Result<(), Error> {
        self.ctx.bind_to_thread().map_err(cuda_err("cuCtxSetCurrent"))?;
        // SAFETY: `grid_state` is this module's global of exactly that size.
        unsafe { result::memset_d8_async(self.grid_state.ptr, 0, self.grid_state.bytes, stream.cu_stream()) }
            .map_err(cuda_err("cuMemsetD8Async"))?;
        let mut cb_arg = cb;
        let mut params = [(&mut cb_arg as *mut u64).cast::<c_void>()];
        // SAFETY: the argument list matches `rb_ring_kernel(rb_control_block* cb)`: one 64-bit
        // pointer. `cb` is the control block's device address, valid until the kernel ends.
        unsafe { result::launch_kernel(self.function, (grid, 1, 1), (block, 1, 1), 0, stream.cu_stream(), &mut params) }
            .map_err(cuda_err("cuLaunchKernel"))
    }
}

impl Drop for RingModule {
    fn drop(&mut self) {
        self.ctx.record_err(self.ctx.bind_to_thread());
        // SAFETY: loaded in `load`; the kernel that used it has ended before its owner drops.
        self.ctx.record_err(unsafe { result::module::unload(self.module) });
    }
}

/// `Ok(true)` when all work on `stream` finished, `Ok(false)` while it runs, the error of a
/// failed kernel (a trap, an illegal address) otherwise.
pub fn stream_done(ctx: &Arc<CudaContext>, stream: &Arc<CudaStream>) -> Result<bool, DriverError> {
    ctx.bind_to_thread()?;
    // SAFETY: the stream's context is bound above; `stream` is held, hence live.
    unsafe { raw::stream_query(stream.cu_stream()) }
}
