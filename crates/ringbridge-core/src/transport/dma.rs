//! `dma`: the slots the kernel reads and writes live in device memory; a bridge (the kernel's
//! service thread) moves batches between them and the host rings with async copies on two
//! non-blocking streams of its own, one per direction (spec §11): input copies are only
//! enqueued (the host does not rewrite those slots until the kernel releases them, which is
//! after the copy landed), so they run on one copy engine while the bridge waits for the
//! output copies on the other.
//!
//! Ordering with the copy engine, the third writer the PTX model does not describe: input
//! slots are copied, then `cuStreamWriteValue64` writes the kernel's input tail word on the
//! same stream, so the kernel's acquire of that word (C2) finds the slots complete; the kernel
//! reads slots bypassing L1 (`ld.global.cg`). Replies: the kernel publishes its output tail to a
//! mapped mirror with `st.release.sys` after `__threadfence_system()`; the bridge reads it with
//! an acquire, copies the slots out, waits for the copy, then publishes the host ring's
//! `output_tail` (P4). The control block itself stays in the registered region.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaStream};

use super::{check_registrable, slot_runs, KernelView, Link, Region};
use crate::cuda::memory::{DeviceBuffer, HostRegistration, PinnedBuffer};
use crate::cuda::module::{copy_dtoh_async, copy_htod_async, write_value_u64};
use crate::cuda::cuda_err;
use crate::protocol::LINE_BYTES;
use crate::sync::{AtomicU64, Ordering};
use crate::Error;

/// Device rings plus the bridge's state.
pub struct DmaLink {
    registration: HostRegistration,
    device: DeviceBuffer,
    mirror: PinnedBuffer,
    /// Host → device copies and the input tail word; never waited for.
    in_stream: Arc<CudaStream>,
    /// Device → host copies; synchronised before each publish to the host.
    out_stream: Arc<CudaStream>,
    /// Input positions copied to the device and published to the kernel.
    sent: u64,
    /// Output positions copied back and published to the host.
    copied: u64,
}

impl DmaLink {
    /// Registers the region, allocates the device rings and the output-tail mirror, and points
    /// the kernel at them.
    ///
    /// # Errors
    /// [`Error::Protocol`] for a region not made of whole pages; [`Error::Cuda`] for a failed
    /// registration or allocation.
    pub fn new(ctx: &Arc<CudaContext>, region: &Region) -> Result<Self, Error> {
        check_registrable(region)?;
        // SAFETY: as in MappedLink::new: page-aligned, owned, outlived by the region.
        let registration = unsafe { HostRegistration::new(ctx, region.base_ptr(), region.registered_len()) }?;
        let l = region.layout();
        let (in_bytes, out_bytes) = (l.input.bytes(), l.output.bytes());
        let device = DeviceBuffer::zeroed(ctx, in_bytes + out_bytes + LINE_BYTES)?;
        let mirror = PinnedBuffer::zeroed(ctx, LINE_BYTES)?;
        let in_stream = ctx.new_stream().map_err(cuda_err("cuStreamCreate"))?;
        let out_stream = ctx.new_stream().map_err(cuda_err("cuStreamCreate"))?;
        region.set_kernel_view(KernelView {
            input_buffer: device.ptr(),
            output_buffer: device.ptr() + in_bytes as u64,
            input_tail_addr: device.ptr() + (in_bytes + out_bytes) as u64,
            output_tail_addr: mirror.device_ptr(),
        });
        Ok(Self { registration, device, mirror, in_stream, out_stream, sent: 0, copied: 0 })
    }

    fn mirror(&self) -> &AtomicU64 {
        // SAFETY: the mirror is a live, 128-aligned pinned allocation of at least 8 bytes; the
        // kernel writes it with st.release.sys and this side only reads it atomically.
        unsafe { &*(self.mirror.host_ptr() as *const AtomicU64) }
    }
}

impl Link for DmaLink {
    fn name(&self) -> &'static str {
        "dma"
    }

    fn kernel_cb(&self) -> u64 {
        self.registration.device_ptr()
    }

    fn pump(&mut self, region: &Region) -> Result<bool, Error> {
        let cb = region.control();
        let l = *region.layout();
        let mut moved = false;
        // ORDERING: (C2, bridge as the host ring's consumer) acquire pairs with the host's
        // release of input_tail (P4): the slots we copy are complete.
        let tail = cb.input_tail.value.load(Ordering::Acquire);
        if tail != self.sent {
            let size = l.input.slot_size as usize;
            for (slot, n) in slot_runs(self.sent, tail, l.input.capacity) {
                let off = slot * size;
                // SAFETY: the host bytes are registered and, being in [input_head, input_tail),
                // owned by the consumer side (I3): the host does not rewrite them until the
                // kernel releases them, after this copy has landed. The device range lies in
                // the input part of `device`.
                let src = unsafe { std::slice::from_raw_parts(region.bytes_ptr(l.input_offset + off, n * size), n * size) };
                // SAFETY: see above.
                unsafe { copy_htod_async(&self.in_stream, self.device.ptr() + off as u64, src) }?;
            }
            let tail_word = self.device.ptr() + (l.input.bytes() + l.output.bytes()) as u64;
            // SAFETY: an 8-aligned word inside `device`; ordered after the copies above.
            unsafe { write_value_u64(&self.in_stream, tail_word, tail) }?;
            self.sent = tail;
            moved = true;
        }
        // ORDERING: (C2, bridge as the device ring's consumer) acquire pairs with the kernel's
        // st.release.sys of its output tail after __threadfence_system().
        let done = self.mirror().load(Ordering::Acquire);
        if done != self.copied {
            let size = l.output.slot_size as usize;
            for (slot, n) in slot_runs(self.copied, done, l.output.capacity) {
                let off = slot * size;
                // SAFETY: host output slots [copied, done) are producer-owned by the bridge
                // (I2: the host has not been told of them yet), registered, and not read until
                // the stream is synchronised below.
                let dst = unsafe { std::slice::from_raw_parts_mut(region.bytes_ptr(l.output_offset + off, n * size), n * size) };
                // SAFETY: the device range lies in the output part of `device` and holds frames
                // the kernel published.
                unsafe { copy_dtoh_async(&self.out_stream, dst, self.device.ptr() + (l.input.bytes() + off) as u64) }?;
            }
            self.out_stream.synchronize().map_err(cuda_err("cuStreamSynchronize"))?;
            // ORDERING: (P4, bridge as the host ring's producer) release: the copied slots
            // happen before the host's acquire of output_tail (C2).
            cb.output_tail.value.store(done, Ordering::Release);
            self.copied = done;
            moved = true;
        }
        Ok(moved)
    }
}
