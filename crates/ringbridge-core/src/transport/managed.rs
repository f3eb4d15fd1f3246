//! `managed`: the kernel's slots and tail words live in managed memory; the bridge copies frames
//! with the CPU and the driver migrates pages (spec §11). Needs concurrent managed access
//! (absent on WSL2 and Windows), so `auto` falls back when the device lacks it.

use std::sync::Arc;

use cudarc::driver::CudaContext;

use super::bridge::{self, BridgeCopies, BridgeCursor, Bridged};
use super::{check_registrable, KernelView, Link, Region};
use crate::cuda::memory::{DeviceBuffer, HostRegistration};
use crate::protocol::{offsets, LINE_BYTES};
use crate::sync::{fence, AtomicU64, Ordering};
use crate::Error;

/// Managed rings plus the bridge's state.
pub struct ManagedLink {
    registration: HostRegistration,
    managed: DeviceBuffer,
    cursor: BridgeCursor,
}

impl ManagedLink {
    /// Registers the region (the control block stays there), allocates the managed rings.
    ///
    /// # Errors
    /// [`Error::BackendUnavailable`] without concurrent managed access; [`Error::Protocol`] /
    /// [`Error::Cuda`] as the other transports.
    pub fn new(ctx: &Arc<CudaContext>, region: &Region, concurrent_managed: bool) -> Result<Self, Error> {
        if !concurrent_managed {
            return Err(Error::BackendUnavailable {
                backend: "cuda/managed",
                reason: "the device has no concurrent managed access (CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS = 0, as on WSL2)"
                    .into(),
            });
        }
        check_registrable(region)?;
        // SAFETY: as in MappedLink::new.
        let registration = unsafe { HostRegistration::new(ctx, region.base_ptr(), region.registered_len()) }?;
        let l = region.layout();
        let (in_bytes, out_bytes) = (l.input.bytes(), l.output.bytes());
        let managed = DeviceBuffer::managed_zeroed(ctx, in_bytes + out_bytes + 2 * LINE_BYTES)?;
        let words = managed.ptr() + (in_bytes + out_bytes) as u64;
        region.set_kernel_view(KernelView {
            input_buffer: managed.ptr(),
            output_buffer: managed.ptr() + in_bytes as u64,
            input_tail_addr: words,
            output_tail_addr: words + LINE_BYTES as u64,
            output_head_addr: registration.device_ptr() + offsets::OUTPUT_HEAD as u64,
        });
        Ok(Self { registration, managed, cursor: BridgeCursor::default() })
    }

    fn word(&self, region: &Region, which: usize) -> &AtomicU64 {
        let l = region.layout();
        let at = self.managed.ptr() as usize + l.input.bytes() + l.output.bytes() + which * LINE_BYTES;
        // SAFETY: a 128-aligned word inside the live managed allocation, host-addressable at
        // its device address; only accessed atomically from the host.
        unsafe { &*(at as *const AtomicU64) }
    }
}

impl Link for ManagedLink {
    fn name(&self) -> &'static str {
        "managed"
    }

    fn kernel_cb(&self) -> u64 {
        self.registration.device_ptr()
    }

    fn pump(&mut self, region: &Region) -> Result<bool, Error> {
        bridge::pump(region, self)
    }

    fn settle(&mut self) -> Result<(), Error> {
        BridgeCopies::settle(self)
    }
}

impl Bridged for ManagedLink {
    fn cursor_mut(&mut self) -> &mut BridgeCursor {
        &mut self.cursor
    }
}

impl BridgeCopies for ManagedLink {
    fn copy_in(&mut self, region: &Region, off: usize, len: usize) -> Result<(), Error> {
        let l = region.layout();
        // SAFETY: source: consumer-owned host input slots (I3, bridge_step's contract);
        // destination: the managed input slots at the same offset, which the kernel reads only
        // below the tail published after this copy.
        unsafe {
            std::ptr::copy_nonoverlapping(region.bytes_ptr(l.input_offset + off, len), (self.managed.ptr() as usize + off) as *mut u8, len)
        };
        Ok(())
    }

    fn publish_in(&mut self, region: &Region, tail: u64) -> Result<(), Error> {
        fence(Ordering::SeqCst);
        // ORDERING: (P4 towards the kernel) release after the slot copies.
        self.word(region, 0).store(tail, Ordering::Release);
        Ok(())
    }

    fn kernel_output_tail(&self, region: &Region) -> u64 {
        // ORDERING: (C2) acquire pairs with the kernel's st.release.sys of its output tail.
        self.word(region, 1).load(Ordering::Acquire)
    }

    fn copy_out(&mut self, region: &Region, off: usize, len: usize) -> Result<(), Error> {
        let l = region.layout();
        // SAFETY: source: managed output slots the kernel published; destination: host output
        // slots the host has not been told of yet (I2, bridge_step's contract).
        unsafe {
            std::ptr::copy_nonoverlapping(
                (self.managed.ptr() as usize + l.input.bytes() + off) as *const u8,
                region.bytes_ptr(l.output_offset + off, len),
                len,
            )
        };
        Ok(())
    }

    fn publish_out(&mut self, region: &Region, tail: u64) -> Result<(), Error> {
        // CPU copies are complete when copy_nonoverlapping returns.
        // ORDERING: (P4, bridge as the host ring's producer) release: the copied slots happen
        // before the host's acquire of output_tail (C2).
        region.control().output_tail.value.store(tail, Ordering::Release);
        Ok(())
    }

    fn settle(&mut self) -> Result<(), Error> {
        Ok(())
    }
}
