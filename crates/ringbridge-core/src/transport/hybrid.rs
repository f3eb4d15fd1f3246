//! `hybrid` (spec §11.2): `dma`'s device rings and bridge, plus `mapped`'s view of the host's
//! own slots, so every round of the kernel chooses. A shallow queue (a round of at most
//! `direct_max` messages, the bridge idle) is read from and answered into the host's slots
//! across PCIe, at `mapped`'s latency; a deep one goes through the bridge's large copies, at
//! `dma`'s throughput. Nothing switches modes: the choice is per round, from the indices.
//!
//! What this module adds to [`DmaLink`]: the setup line's direct fields, and a bridge that
//! skips what the kernel handled itself — input it already consumed (HY1) and output positions
//! below `direct_upto` (HY5, the mirror line's second word: the end of the kernel's last direct
//! round, which it writes just before the mirror of the next bridged round).

use std::sync::Arc;

use cudarc::driver::CudaContext;

use super::bridge::{self, BridgeCopies, BridgeCursor, Bridged};
use super::dma::DmaLink;
use super::{Link, Region};
use crate::sync::Ordering;
use crate::Error;

/// The mirror line's word that holds `direct_upto` (word 0 is the output-tail mirror).
const DIRECT_UPTO_WORD: usize = 1;

/// Input bytes a direct round may read across PCIe by default: past this the bridge's copy
/// engine is faster than the SMs' reads of host memory (`mapped` moves ~6 GB/s of 64 B slots,
/// one copy ~50 GB/s), and a queue this deep is no longer about latency.
pub const DIRECT_BYTES: u32 = 16 * 1024;

/// The largest direct round for slots of `slot_size` bytes (the larger of the input and output
/// slots: a direct round reads the one and writes the other across PCIe): [`DIRECT_BYTES`] of
/// them (at least one), or `RINGBRIDGE_HYBRID_DIRECT_MAX` when set (0: never direct, every round is
/// bridged — `dma`'s behaviour on `hybrid`'s rings; 1: only single messages go direct).
///
/// # Errors
/// [`Error::InvalidConfig`] for an override that is not a number.
pub fn direct_max(slot_size: u32) -> Result<u32, Error> {
    match std::env::var("RINGBRIDGE_HYBRID_DIRECT_MAX") {
        Ok(v) => v.trim().parse().map_err(|_| Error::InvalidConfig {
            what: "RINGBRIDGE_HYBRID_DIRECT_MAX".into(),
            value: None,
            expected: format!("a number of messages (0 disables direct rounds), not {v:?}"),
        }),
        Err(_) => Ok((DIRECT_BYTES / slot_size.max(1)).max(1)),
    }
}

/// Where a `hybrid` kernel reaches the host's own slots (the setup line's v4 fields).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirectView {
    /// `direct_max`.
    pub direct_max: u32,
    /// `host_input_buffer`.
    pub host_input_buffer: u64,
    /// `host_output_buffer`.
    pub host_output_buffer: u64,
    /// `direct_upto_addr`.
    pub direct_upto_addr: u64,
}

impl DirectView {
    /// No direct path (every transport but `hybrid`): all four fields zero.
    pub const NONE: Self = Self { direct_max: 0, host_input_buffer: 0, host_output_buffer: 0, direct_upto_addr: 0 };
}

/// The input backlog the `hybrid` bridge leaves to the kernel's direct read (HY1): one message
/// where the kernel reads the host's input at all, else none. One, because every direct round
/// the kernel allows is at least that (it caps `direct_max` at the rounds block 0 runs alone,
/// never 0 when `direct_max` is not). The condition is the kernel's own (`host_in` in
/// `ring_kernel.cu`): `direct_max`, a host input buffer, and the host as the producer (not a
/// route's later stage). Relaxed loads: setup fields, written before the launch.
pub fn direct_input_left(region: &Region) -> u64 {
    let cb = region.control();
    let host_fed = cb.input_producer.load(Ordering::Relaxed) == crate::protocol::PRODUCER_HOST;
    let direct_in = cb.direct_max.load(Ordering::Relaxed) != 0 && cb.host_input_buffer.load(Ordering::Relaxed) != 0;
    u64::from(host_fed && direct_in)
}

/// `dma`'s link plus the direct path.
pub struct HybridLink {
    dma: DmaLink,
    cursor: BridgeCursor,
}

impl HybridLink {
    /// Sets up `dma`'s device rings and bridge, then points the kernel at the host's slots too.
    ///
    /// # Errors
    /// [`DmaLink::new`]'s, and [`direct_max`]'s for a bad override.
    pub fn new(ctx: &Arc<CudaContext>, region: &Region) -> Result<Self, Error> {
        let l = region.layout();
        let direct_max = direct_max(l.input.slot_size.max(l.output.slot_size))?;
        let dma = DmaLink::new(ctx, region)?;
        let base = dma.registered_device_ptr();
        region.set_direct_view(DirectView {
            direct_max,
            host_input_buffer: base + l.input_offset as u64,
            host_output_buffer: base + l.output_offset as u64,
            direct_upto_addr: dma.mirror_word_device(DIRECT_UPTO_WORD),
        });
        Ok(Self { dma, cursor: BridgeCursor::default() })
    }
}

impl Drop for HybridLink {
    fn drop(&mut self) {
        // `dma` settles its streams when it drops, after this.
        if std::env::var_os("RINGBRIDGE_BRIDGE_STATS").is_some() {
            eprintln!("# hybrid bridge: {}", self.cursor.stats);
        }
    }
}

impl Link for HybridLink {
    fn name(&self) -> &'static str {
        "hybrid"
    }

    fn kernel_cb(&self) -> u64 {
        self.dma.kernel_cb()
    }

    fn pump(&mut self, region: &Region) -> Result<bool, Error> {
        bridge::pump(region, self)
    }

    fn settle(&mut self) -> Result<(), Error> {
        BridgeCopies::settle(&mut self.dma)
    }
}

impl Bridged for HybridLink {
    fn cursor_mut(&mut self) -> &mut BridgeCursor {
        &mut self.cursor
    }
}

impl BridgeCopies for HybridLink {
    fn copy_in(&mut self, region: &Region, off: usize, len: usize) -> Result<(), Error> {
        self.dma.copy_in(region, off, len)
    }

    fn publish_in(&mut self, region: &Region, tail: u64) -> Result<(), Error> {
        self.dma.publish_in(region, tail)
    }

    fn kernel_output_tail(&self, region: &Region) -> u64 {
        self.dma.kernel_output_tail(region)
    }

    fn copy_out(&mut self, region: &Region, off: usize, len: usize) -> Result<(), Error> {
        self.dma.copy_out(region, off, len)
    }

    fn publish_out(&mut self, region: &Region, tail: u64) -> Result<(), Error> {
        self.dma.publish_out(region, tail)
    }

    fn settle(&mut self) -> Result<(), Error> {
        BridgeCopies::settle(&mut self.dma)
    }

    fn direct_path(&self) -> bool {
        true
    }

    fn direct_input_left(&self, region: &Region) -> u64 {
        direct_input_left(region)
    }

    fn direct_upto(&self, _region: &Region) -> u64 {
        // ORDERING: (HY5) relaxed: the kernel stores direct_upto before its st.release.sys of
        // the mirror and bridge_step calls this after the mirror's acquire, which makes that
        // store (or a later one) visible here; nothing is read on the strength of this load.
        self.dma.mirror_word(DIRECT_UPTO_WORD).load(Ordering::Relaxed)
    }
}
