//! The bridge step shared by the transports whose kernel slots are not the host's (`dma`,
//! `managed`): the order of the steps and the index handling live here once; each transport
//! says only how it copies and how it publishes to the kernel.
//!
//! One step: take the host's newly published input `[sent, input_tail)` (C2 as the host ring's
//! consumer), copy it to the kernel's slots, publish the kernel's input tail after the copies;
//! then take the kernel's newly published output `[copied, kernel tail)`, copy it to the host's
//! slots, wait for the copies, publish the host's `output_tail` (P4 as the host ring's producer).
#![forbid(unsafe_code)]

use super::{slot_runs, Region};
use crate::sync::Ordering;
use crate::Error;

/// How far a bridge has moved each direction.
#[derive(Clone, Copy, Debug, Default)]
pub struct BridgeCursor {
    /// Input positions copied to the kernel and published to it.
    pub sent: u64,
    /// Output positions copied back and published to the host.
    pub copied: u64,
}

/// A transport's copies. [`bridge_step`] calls `copy_in` only for host input slots in
/// `[sent, input_tail)` — owned by the consumer side (I3), not rewritten by the host until the
/// kernel releases them — and `copy_out` only for kernel output slots the kernel published and
/// host output slots the host has not been told of yet (I2); byte offsets are from the start of
/// the respective slot array and lie inside it.
pub trait BridgeCopies {
    /// Copies `len` bytes of the host's input slots at byte `off` to the kernel's.
    ///
    /// # Errors
    /// A failed copy.
    fn copy_in(&mut self, region: &Region, off: usize, len: usize) -> Result<(), Error>;
    /// Publishes the kernel's input tail, ordered after the copies in.
    ///
    /// # Errors
    /// A failed write.
    fn publish_in(&mut self, region: &Region, tail: u64) -> Result<(), Error>;
    /// The output tail the kernel published (an acquire, pairing with its release).
    fn kernel_output_tail(&self, region: &Region) -> u64;
    /// Copies `len` bytes of the kernel's output slots at byte `off` to the host's.
    ///
    /// # Errors
    /// A failed copy.
    fn copy_out(&mut self, region: &Region, off: usize, len: usize) -> Result<(), Error>;
    /// Waits until the copies out have landed in host memory.
    ///
    /// # Errors
    /// A failed wait.
    fn finish_out(&mut self) -> Result<(), Error>;
}

/// One bridge step (see the module). Returns whether anything moved.
///
/// # Errors
/// The first failed copy, write or wait; the cursor then still names what was completed.
pub fn bridge_step(region: &Region, cursor: &mut BridgeCursor, copies: &mut impl BridgeCopies) -> Result<bool, Error> {
    let cb = region.control();
    let l = *region.layout();
    let mut moved = false;
    // ORDERING: (C2, bridge as the host ring's consumer) acquire pairs with the host's release
    // of input_tail (P4): the slots copied below are complete.
    let tail = cb.input_tail.value.load(Ordering::Acquire);
    if tail != cursor.sent {
        let size = l.input.slot_size as usize;
        for run in slot_runs(cursor.sent, tail, l.input.capacity) {
            copies.copy_in(region, run.first * size, run.count * size)?;
        }
        copies.publish_in(region, tail)?;
        cursor.sent = tail;
        moved = true;
    }
    let done = copies.kernel_output_tail(region);
    if done != cursor.copied {
        let size = l.output.slot_size as usize;
        for run in slot_runs(cursor.copied, done, l.output.capacity) {
            copies.copy_out(region, run.first * size, run.count * size)?;
        }
        copies.finish_out()?;
        // ORDERING: (P4, bridge as the host ring's producer) release: the copied slots happen
        // before the host's acquire of output_tail (C2).
        cb.output_tail.value.store(done, Ordering::Release);
        cursor.copied = done;
        moved = true;
    }
    Ok(moved)
}
