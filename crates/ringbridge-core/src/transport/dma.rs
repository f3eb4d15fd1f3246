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
//! an acquire, copies the slots out, then has the copy engine write the host ring's
//! `output_tail` (P4) into the registered control block with `cuStreamWriteValue64` on the same
//! stream: neither direction ever waits, so copies of both directions and of several spans are
//! in flight at once. The control block itself stays in the registered region.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaStream};

use super::bridge::{self, BridgeCopies, BridgeCursor, Bridged};
use super::{check_registrable, KernelView, Link, Region};
use crate::cuda::cuda_err;
use crate::cuda::memory::{DeviceBuffer, HostRegistration, PinnedBuffer};
use crate::protocol::{offsets, LINE_BYTES};
use crate::sync::{AtomicU64, Ordering};
use crate::Error;

/// Device rings plus the bridge's state.
pub struct DmaLink {
    registration: HostRegistration,
    device: DeviceBuffer,
    mirror: PinnedBuffer,
    /// Host → device copies and the input tail word; never waited for.
    in_stream: Arc<CudaStream>,
    /// Device → host copies and the host's output tail word; never waited for while the
    /// kernel runs (settled before the memory is freed).
    out_stream: Arc<CudaStream>,
    cursor: BridgeCursor,
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
            output_head_addr: registration.device_ptr() + offsets::OUTPUT_HEAD as u64,
        });
        Ok(Self { registration, device, mirror, in_stream, out_stream, cursor: BridgeCursor::default() })
    }

    fn mirror(&self) -> &AtomicU64 {
        self.mirror_word(0)
    }

    /// Word `index` (0: the output-tail mirror; 1: `hybrid`'s `direct_upto`) of the pinned
    /// mirror line, host side.
    pub(super) fn mirror_word(&self, index: usize) -> &AtomicU64 {
        assert!((index + 1) * 8 <= LINE_BYTES, "the mirror line holds {} words", LINE_BYTES / 8);
        // SAFETY: the mirror is a live, 128-aligned pinned allocation of LINE_BYTES, so every
        // word of it is in bounds and 8-aligned; the kernel writes its words with
        // st.release.sys and this side only reads them atomically.
        unsafe { &*((self.mirror.host_ptr() as *const AtomicU64).add(index)) }
    }

    /// The kernel's address of mirror word `index` (see [`DmaLink::mirror_word`]).
    pub(super) fn mirror_word_device(&self, index: usize) -> u64 {
        self.mirror.device_ptr() + 8 * index as u64
    }

    /// The registered region's address as the kernel sees it.
    pub(super) fn registered_device_ptr(&self) -> u64 {
        self.registration.device_ptr()
    }
}

impl Drop for DmaLink {
    fn drop(&mut self) {
        // Copies and tail writes may still be in flight (the bridge never waits): let them land
        // before the device rings, the mirror and the registration they touch are freed.
        // Errors have nowhere to go here; the context records them.
        let ctx = self.in_stream.context();
        ctx.record_err(ctx.bind_to_thread());
        let _ = BridgeCopies::settle(self);
        // (Under hybrid this link's own cursor never steps: hybrid prints its own.)
        if std::env::var_os("RINGBRIDGE_BRIDGE_STATS").is_some() && self.cursor.stats.steps > 0 {
            eprintln!("# dma bridge: {}", self.cursor.stats);
        }
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
        bridge::pump(region, self)
    }

    fn settle(&mut self) -> Result<(), Error> {
        BridgeCopies::settle(self)
    }
}

impl Bridged for DmaLink {
    fn cursor_mut(&mut self) -> &mut BridgeCursor {
        &mut self.cursor
    }
}

impl BridgeCopies for DmaLink {
    fn copy_in(&mut self, region: &Region, off: usize, len: usize) -> Result<(), Error> {
        let l = region.layout();
        // The host bytes are registered and lie in the input slots (bytes_ptr checks the range).
        // On dma they are consumer-owned (I3, bridge_step's contract) until the kernel releases
        // them, after this copy landed; on hybrid the kernel may have read and released some
        // directly, and the host may rewrite those while the copy runs: it copies bytes, not
        // Rust values, and the kernel never reads the device slots it fills that way (HY2).
        let src = region.bytes_ptr(l.input_offset + off, len);
        // SAFETY: the region outlives the link, which settles its streams before it drops; the
        // device range lies in the input part of `device`; the context is bound (`Link::pump`'s
        // contract) and `in_stream` is of it.
        unsafe { self.device.copy_from_host_async(&self.in_stream, off, src, len) }
    }

    fn publish_in(&mut self, region: &Region, tail: u64) -> Result<(), Error> {
        let l = region.layout();
        let tail_word = l.input.bytes() + l.output.bytes();
        // SAFETY: an 8-aligned word inside `device` (the line after both rings); stream order
        // puts it after the copies in. The context is bound (`Link::pump`'s contract).
        unsafe { self.device.write_u64_async(&self.in_stream, tail_word, tail) }
    }

    fn kernel_output_tail(&self, _region: &Region) -> u64 {
        // ORDERING: (C2, bridge as the device ring's consumer) acquire pairs with the kernel's
        // st.release.sys of its output tail after __threadfence_system().
        self.mirror().load(Ordering::Acquire)
    }

    fn copy_out(&mut self, region: &Region, off: usize, len: usize) -> Result<(), Error> {
        let l = region.layout();
        // SAFETY: host output slots the host has not been told of (I2, bridge_step's contract),
        // registered, and not read until finish_out synchronises the stream.
        let dst = unsafe { std::slice::from_raw_parts_mut(region.bytes_ptr(l.output_offset + off, len), len) };
        // SAFETY: the device range lies in the output part of `device` and holds frames the
        // kernel published; the context is bound (`Link::pump`'s contract).
        unsafe { self.device.copy_to_host_async(&self.out_stream, l.input.bytes() + off, dst) }
    }

    fn publish_out(&mut self, _region: &Region, tail: u64) -> Result<(), Error> {
        // ORDERING: (P4, bridge as the host ring's producer) the write-value's default memory
        // barrier orders the copies enqueued before it on out_stream ahead of the word: a host
        // acquire of output_tail (C2) that sees `tail` sees the slots. The bridge never waits.
        // SAFETY: OUTPUT_TAIL is an aligned word of the registered control block, written by
        // nobody else on this transport (I1: the bridge is the host ring's producer); the
        // context is bound (`Link::pump`'s contract) and out_stream is of it.
        unsafe { self.registration.write_u64_async(&self.out_stream, offsets::OUTPUT_TAIL, tail) }
    }

    fn settle(&mut self) -> Result<(), Error> {
        self.in_stream.synchronize().map_err(cuda_err("cuStreamSynchronize"))?;
        self.out_stream.synchronize().map_err(cuda_err("cuStreamSynchronize"))
    }
}
