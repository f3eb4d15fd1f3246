//! The bridge step's decisions (`transport/bridge.rs`) on a real region, with the copy engine
//! replaced by a recorder of what it was asked to copy and publish: which slots cross, in which
//! runs, and which index goes where — for `dma` and `managed` (every committed slot crosses) and
//! for `hybrid` (spec §11.2: input the kernel already consumed is not copied, HY1; output below
//! the kernel's `direct_upto` is not copied, HY5). Runs without a GPU.

use std::sync::Arc;

use ringbridge_core::protocol::RingConfig;
use ringbridge_core::transport::bridge::{bridge_step, BridgeCopies, BridgeCursor};
use ringbridge_core::transport::Region;
use ringbridge_core::{Error, Ordering};

const SLOT: usize = 64;
const CAPACITY: u32 = 8;

/// What a transport was asked to do, in order; `mirror` and `upto` are what the kernel
/// published (`upto` is `None` on transports without a direct path).
#[derive(Default)]
struct Recorder {
    mirror: u64,
    upto: Option<u64>,
    log: Vec<String>,
}

impl BridgeCopies for Recorder {
    fn copy_in(&mut self, _: &Region, off: usize, len: usize) -> Result<(), Error> {
        self.log.push(format!("in slots {}+{}", off / SLOT, len / SLOT));
        Ok(())
    }
    fn publish_in(&mut self, _: &Region, tail: u64) -> Result<(), Error> {
        self.log.push(format!("in tail {tail}"));
        Ok(())
    }
    fn kernel_output_tail(&self, _: &Region) -> u64 {
        self.mirror
    }
    fn copy_out(&mut self, _: &Region, off: usize, len: usize) -> Result<(), Error> {
        self.log.push(format!("out slots {}+{}", off / SLOT, len / SLOT));
        Ok(())
    }
    fn publish_out(&mut self, region: &Region, tail: u64) -> Result<(), Error> {
        // As if the copies landed at once (the recorder has nothing in flight).
        region.control().output_tail.value.store(tail, Ordering::Release);
        self.log.push(format!("out tail {tail}"));
        Ok(())
    }
    fn settle(&mut self) -> Result<(), Error> {
        Ok(())
    }
    fn direct_path(&self) -> bool {
        self.upto.is_some()
    }
    fn direct_upto(&self, _: &Region) -> u64 {
        self.upto.expect("only asked on a direct path")
    }
}

fn region() -> Arc<Region> {
    let ring = RingConfig { capacity: CAPACITY, slot_size: SLOT as u32 };
    Region::alloc(ring, ring).unwrap()
}

/// The host committed input up to `tail`; the kernel consumed (released) up to `head`.
fn input(region: &Region, head: u64, tail: u64) {
    let cb = region.control();
    cb.input_head.value.store(head, Ordering::Release);
    cb.input_tail.value.store(tail, Ordering::Release);
}

/// One step; returns what it did.
fn step(region: &Region, cursor: &mut BridgeCursor, rec: &mut Recorder) -> Vec<String> {
    rec.log.clear();
    bridge_step(region, cursor, rec).unwrap();
    std::mem::take(&mut rec.log)
}

#[test]
fn without_a_direct_path_every_committed_slot_crosses_whatever_the_kernel_consumed() {
    let r = region();
    let (mut cursor, mut rec) = (BridgeCursor::default(), Recorder::default());
    // dma/managed: input_head is not looked at (the kernel reads device slots only).
    input(&r, 3, 5);
    assert_eq!(step(&r, &mut cursor, &mut rec), ["in slots 0+5", "in tail 5"]);
    rec.mirror = 5;
    assert_eq!(step(&r, &mut cursor, &mut rec), ["out slots 0+5", "out tail 5"]);
    assert_eq!((cursor.sent, cursor.copied), (5, 5));
    // A wrapping span goes as two runs, then one index write.
    input(&r, 5, 11);
    assert_eq!(step(&r, &mut cursor, &mut rec), ["in slots 5+3", "in slots 0+3", "in tail 11"]);
}

#[test]
fn hybrid_does_not_copy_input_the_kernel_already_consumed() {
    let r = region();
    let (mut cursor, mut rec) = (BridgeCursor::default(), Recorder { upto: Some(0), ..Recorder::default() });
    // HY1: the kernel read 0..3 straight from the host's slots; only 3..5 cross.
    input(&r, 3, 5);
    assert_eq!(step(&r, &mut cursor, &mut rec), ["in slots 3+2", "in tail 5"]);
    // Everything consumed before the bridge looked: nothing crosses, no tail is written (the
    // kernel reads a device slot only below that word, and it is past all of these).
    input(&r, 9, 9);
    assert_eq!(step(&r, &mut cursor, &mut rec), Vec::<String>::new());
    assert_eq!(cursor.sent, 9);
    assert_eq!(cursor.stats.skipped_in, 1);
    // Consumed part of the new span, which wraps: slot 2 (position 10) onwards.
    input(&r, 10, 14);
    assert_eq!(step(&r, &mut cursor, &mut rec), ["in slots 2+4", "in tail 14"]);
    // An input_head behind what was sent changes nothing.
    input(&r, 12, 16);
    assert_eq!(step(&r, &mut cursor, &mut rec), ["in slots 6+2", "in tail 16"]);
}

#[test]
fn hybrid_does_not_copy_output_the_kernel_wrote_to_the_host_itself() {
    let r = region();
    let (mut cursor, mut rec) = (BridgeCursor::default(), Recorder { upto: Some(0), ..Recorder::default() });
    // A bridged round 0..2: copied and published.
    rec.mirror = 2;
    assert_eq!(step(&r, &mut cursor, &mut rec), ["out slots 0+2", "out tail 2"]);
    // HY5: a direct round 2..4 (the kernel published output_tail itself), then a bridged 4..6
    // before the bridge looked: only 4..6 cross.
    r.control().output_tail.value.store(4, Ordering::Release);
    (rec.upto, rec.mirror) = (Some(4), 6);
    assert_eq!(step(&r, &mut cursor, &mut rec), ["out slots 4+2", "out tail 6"]);
    // Direct rounds only: the cursor moves over them, nothing is copied or written.
    r.control().output_tail.value.store(9, Ordering::Release);
    (rec.upto, rec.mirror) = (Some(9), 9);
    assert_eq!(step(&r, &mut cursor, &mut rec), Vec::<String>::new());
    assert_eq!(cursor.copied, 9);
    // A bridged span after them wraps the ring: positions 9..12 are slots 1..4.
    rec.mirror = 12;
    assert_eq!(step(&r, &mut cursor, &mut rec), ["out slots 1+3", "out tail 12"]);
    assert_eq!(cursor.stats.direct_out, 2);
}

#[test]
fn hybrid_never_copies_backwards_when_a_direct_round_ends_between_its_two_loads() {
    // Two direct rounds in a row: the bridge read the mirror after the first (7), then
    // direct_upto after the second (8). Nothing is pending; it must neither copy (a "span" from
    // 8 back to 7 would be the whole ring) nor write output_tail back to 7.
    let r = region();
    let mut cursor = BridgeCursor { copied: 7, ..BridgeCursor::default() };
    r.control().output_tail.value.store(8, Ordering::Release);
    let mut rec = Recorder { upto: Some(8), mirror: 7, ..Recorder::default() };
    assert_eq!(step(&r, &mut cursor, &mut rec), Vec::<String>::new());
    assert_eq!(cursor.copied, 8);
    assert_eq!(r.control().output_tail.value.load(Ordering::Acquire), 8);
    // The next bridged round copies from 8.
    rec.mirror = 10;
    assert_eq!(step(&r, &mut cursor, &mut rec), ["out slots 0+2", "out tail 10"]);
}
