//! `mapped`: the region itself (the JS SharedArrayBuffer, or a heap region) is registered with
//! the GPU and mapped into it; the kernel polls and writes it across PCIe. No copies, no bridge:
//! the lowest latency. The kernel's view is the region's own fields (spec §11).

use std::sync::Arc;

use cudarc::driver::CudaContext;

use super::{check_registrable, KernelView, Link, Region};
use crate::cuda::memory::HostRegistration;
use crate::Error;

/// A registered region.
pub struct MappedLink {
    registration: HostRegistration,
}

impl MappedLink {
    /// Registers `region` (DEVICEMAP | PORTABLE) and points the kernel at it.
    ///
    /// # Errors
    /// [`Error::Protocol`] for a region not made of whole pages; [`Error::Cuda`] when
    /// registration fails (e.g. `CUDA_ERROR_INVALID_VALUE` on WSL2).
    pub fn new(ctx: &Arc<CudaContext>, region: &Region) -> Result<Self, Error> {
        check_registrable(region)?;
        // SAFETY: the region is page-aligned and owns `registered_len` bytes (checked above);
        // the link is dropped before the region (the kernel owns both in that order).
        let registration = unsafe { HostRegistration::new(ctx, region.base_ptr(), region.registered_len()) }?;
        region.set_kernel_view(KernelView::direct(registration.device_ptr(), region.layout()));
        Ok(Self { registration })
    }
}

impl Link for MappedLink {
    fn name(&self) -> &'static str {
        "mapped"
    }

    fn kernel_cb(&self) -> u64 {
        self.registration.device_ptr()
    }

    fn pump(&mut self, _region: &Region) -> Result<bool, Error> {
        Ok(false)
    }
}
