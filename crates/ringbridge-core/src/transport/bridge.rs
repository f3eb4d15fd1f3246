//! The bridge step shared by the transports whose kernel slots are not the host's (`dma`,
//! `managed`): the order of the steps and the index handling live here once; each transport
//! says only how it copies and how it publishes to the kernel.
//!
//! One step: take the host's newly published input `[sent, input_tail)` (C2 as the host ring's
//! consumer), copy it to the kernel's slots, publish the kernel's input tail after the copies;
//! then take the kernel's newly published output `[copied, kernel tail)`, copy it to the host's
//! slots and publish the host's `output_tail` after the copies (P4 as the host ring's
//! producer). A transport may do both publishes in stream order (dma): the step then never
//! waits for a copy, and [`BridgeCopies::settle`] waits for what is still in flight.
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
    /// What the steps did, for the benchmark's account of where time goes.
    pub stats: BridgeStats,
}

/// Counters of a bridge's steps (plain integers: one thread steps a bridge).
#[derive(Clone, Copy, Debug, Default)]
pub struct BridgeStats {
    /// Steps taken.
    pub steps: u64,
    /// Input spans published (each one or two copies and one tail write).
    pub spans_in: u64,
    /// Output spans published.
    pub spans_out: u64,
    /// Output spans held back for copies in flight (see `hold_back`).
    pub held: u64,
    /// Largest input span, in slots.
    pub max_in: u64,
    /// Largest output span, in slots.
    pub max_out: u64,
    /// `hybrid`: input spans the kernel had read directly before the bridge saw them.
    pub skipped_in: u64,
    /// `hybrid`: steps that found a one-message input backlog and left it to the kernel's
    /// direct read (steps, not messages: a bridge spinning on one waiting request counts each).
    pub left_in: u64,
    /// `hybrid`: times the copy cursor moved over the kernel's direct output rounds, which the
    /// bridge learns of only with the next bridged round (or the kernel's exit): a run of direct
    /// rounds counts once, and a stream of direct rounds alone counts 0 until then.
    pub direct_out: u64,
}

impl std::fmt::Display for BridgeStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "steps {} spans_in {} spans_out {} held {} max_in {} max_out {} skipped_in {} left_in {} direct_out {}",
            self.steps, self.spans_in, self.spans_out, self.held, self.max_in, self.max_out, self.skipped_in, self.left_in, self.direct_out
        )
    }
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
    /// Publishes the host ring's `output_tail` (P4 as its producer), ordered after the copies
    /// out: a release store once they landed, or a write the copy engine performs after them.
    ///
    /// # Errors
    /// A failed write or wait.
    fn publish_out(&mut self, region: &Region, tail: u64) -> Result<(), Error>;
    /// Waits until every copy and publish enqueued so far has landed.
    ///
    /// # Errors
    /// A failed wait.
    fn settle(&mut self) -> Result<(), Error>;
    /// `hybrid` (spec §11.2): whether the kernel may also read the host's input slots and write
    /// the host's output slots itself. The step then skips input the kernel has already
    /// consumed (HY1) and output positions below [`BridgeCopies::direct_upto`] (HY5).
    fn direct_path(&self) -> bool {
        false
    }
    /// `hybrid`: input backlogs of at most this many messages, which the kernel reads from the
    /// host's slots whatever its own cap on direct rounds (HY2), are left to it (HY1): no copy.
    /// Never more than the largest backlog the kernel reads directly (its capped `direct_max`),
    /// or a kernel would wait for a copy that is not coming.
    fn direct_input_left(&self, _region: &Region) -> u64 {
        0
    }
    /// `hybrid`: the end of the kernel's direct rounds before its latest bridged round (the
    /// step calls it after the mirror's acquire). Only called when
    /// [`BridgeCopies::direct_path`] says so.
    fn direct_upto(&self, _region: &Region) -> u64 {
        0
    }
}

/// A transport that keeps its bridge's cursor, so [`pump`] can step it in place.
pub trait Bridged: BridgeCopies {
    /// The cursor the transport's steps advance.
    fn cursor_mut(&mut self) -> &mut BridgeCursor;
}

/// [`bridge_step`] on a transport's own cursor: the cursor is copied out for the step (which
/// borrows the transport mutably as its copies) and stored back, as far as it got.
///
/// # Errors
/// [`bridge_step`]'s.
pub fn pump<B: Bridged>(region: &Region, link: &mut B) -> Result<bool, Error> {
    let mut cursor = *link.cursor_mut();
    let moved = bridge_step(region, &mut cursor, link);
    *link.cursor_mut() = cursor;
    moved
}

/// Whether position `a` is after `b` (free-running u64 positions).
fn after(a: u64, b: u64) -> bool {
    (a.wrapping_sub(b) as i64) > 0
}

/// One bridge step (see the module). Returns whether anything moved.
///
/// # Errors
/// The first failed copy, write or wait; the cursor then still names what was completed.
pub fn bridge_step(region: &Region, cursor: &mut BridgeCursor, copies: &mut impl BridgeCopies) -> Result<bool, Error> {
    let cb = region.control();
    let l = *region.layout();
    let mut moved = false;
    cursor.stats.steps += 1;
    // ORDERING: (C2, bridge as the host ring's consumer) acquire pairs with the host's release
    // of input_tail (P4): the slots copied below are complete.
    let tail = cb.input_tail.value.load(Ordering::Acquire);
    if tail != cursor.sent {
        let mut start = cursor.sent;
        let mut left = false;
        if copies.direct_path() {
            // HY1: positions below input_head were consumed (read directly) and are never read
            // again. Relaxed: any value read is one the kernel has passed.
            let head = cb.input_head.value.load(Ordering::Relaxed);
            if after(head, start) {
                start = if after(head, tail) { tail } else { head };
            }
            // HY1: a backlog this shallow is the kernel's to read directly (a lone request: no
            // copy or tail write for the copy engine). `sent` stays, so a step that finds the
            // backlog deeper (the kernel then waits for a copy, HY2) copies it.
            left = start != tail && tail.wrapping_sub(head) <= copies.direct_input_left(region);
        }
        if left {
            cursor.stats.left_in += 1;
        } else {
            if start != tail {
                let size = l.input.slot_size as usize;
                for run in slot_runs(start, tail, l.input.capacity) {
                    copies.copy_in(region, run.first * size, run.count * size)?;
                }
                copies.publish_in(region, tail)?;
                cursor.stats.spans_in += 1;
                cursor.stats.max_in = cursor.stats.max_in.max(tail.wrapping_sub(start));
            } else {
                cursor.stats.skipped_in += 1;
            }
            cursor.sent = tail;
            moved = true;
        }
    }
    let done = copies.kernel_output_tail(region);
    if copies.direct_path() {
        // HY5: read after the mirror's acquire, so the mirror value of a bridged round that
        // followed direct rounds comes with their end here; those positions are the host's
        // already. It may be ahead of the mirror value just read (direct rounds and the next
        // bridged round came in between): then there is nothing to copy until the mirror
        // passes it.
        let upto = copies.direct_upto(region);
        if after(upto, cursor.copied) {
            cursor.copied = upto;
            cursor.stats.direct_out += 1;
        }
    }
    // `after`, not `!=`: on hybrid the cursor may be ahead of the mirror value read above.
    let pending = after(done, cursor.copied);
    let held = pending && hold_back(region, cursor, done);
    cursor.stats.held += u64::from(held);
    if pending && !held {
        let size = l.output.slot_size as usize;
        for run in slot_runs(cursor.copied, done, l.output.capacity) {
            copies.copy_out(region, run.first * size, run.count * size)?;
        }
        copies.publish_out(region, done)?;
        cursor.stats.spans_out += 1;
        cursor.stats.max_out = cursor.stats.max_out.max(done.wrapping_sub(cursor.copied));
        cursor.copied = done;
        moved = true;
    }
    Ok(moved)
}

/// Whether to let a small output span wait for the copies in flight: copies have a fixed cost
/// per operation on the copy engine, so while earlier spans are still landing (the host's
/// `output_tail`, which the transport publishes after them, is behind what was enqueued) a span
/// under an eighth of the ring waits and grows. A shallow queue meets no copy in flight and
/// goes at once, one slot if that is all there is; a deep one moves in large copies.
fn hold_back(region: &Region, cursor: &BridgeCursor, done: u64) -> bool {
    let capacity = u64::from(region.layout().output.capacity);
    // Relaxed: only a hint; the span's bytes are ordered by publish_out, not by this load.
    let landed = region.control().output_tail.value.load(Ordering::Relaxed);
    landed != cursor.copied && done.wrapping_sub(cursor.copied) < (capacity / 8).max(1)
}
