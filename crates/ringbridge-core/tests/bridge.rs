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
    /// What `direct_input_left` answers (hybrid's is 1).
    left: u64,
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
    fn direct_input_left(&self, _: &Region) -> u64 {
        self.left
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
fn hybrid_leaves_a_lone_input_message_to_the_kernel_and_copies_a_deeper_backlog() {
    let r = region();
    let (mut cursor, mut rec) = (BridgeCursor::default(), Recorder { upto: Some(0), left: 1, ..Recorder::default() });
    // HY1: one message waiting: the kernel reads it from the host's slots; nothing crosses.
    input(&r, 0, 1);
    assert_eq!(step(&r, &mut cursor, &mut rec), Vec::<String>::new());
    assert_eq!((cursor.sent, cursor.stats.left_in), (0, 1));
    // The kernel took it; one more waits: again the kernel's.
    input(&r, 1, 2);
    assert_eq!(step(&r, &mut cursor, &mut rec), Vec::<String>::new());
    // Two more behind it before the kernel looked: a backlog of three, which the kernel may
    // read from device slots (HY2) and wait for: all three cross, from position 1.
    input(&r, 1, 4);
    assert_eq!(step(&r, &mut cursor, &mut rec), ["in slots 1+3", "in tail 4"]);
    assert_eq!(cursor.sent, 4);
    // dma and managed leave nothing (their kernels read device slots only).
    let (mut cursor, mut rec) = (BridgeCursor::default(), Recorder::default());
    input(&r, 4, 5);
    assert_eq!(step(&r, &mut cursor, &mut rec), ["in slots 0+5", "in tail 5"]);
}

#[test]
fn hybrid_leaves_input_only_where_the_kernel_reads_the_hosts_input() {
    use ringbridge_core::protocol::{PRODUCER_HOST, PRODUCER_KERNEL};
    use ringbridge_core::transport::hybrid::{direct_input_left, DirectView};
    let r = region();
    let view = DirectView { direct_max: 4, host_input_buffer: 0x1000, host_output_buffer: 0x2000, direct_upto_addr: 0x3000 };
    r.set_direct_view(view);
    assert_eq!(direct_input_left(&r), 1, "direct_max, a host input buffer, host-fed");
    // Each missing condition makes the kernel read device slots only (it would wait for a copy
    // of a lone request that the bridge left): nothing may be left then.
    r.set_direct_view(DirectView { direct_max: 0, ..view });
    assert_eq!(direct_input_left(&r), 0, "direct_max 0");
    r.set_direct_view(DirectView { host_input_buffer: 0, ..view });
    assert_eq!(direct_input_left(&r), 0, "no host input buffer");
    r.set_direct_view(view);
    r.control().input_producer.store(PRODUCER_KERNEL, Ordering::Relaxed);
    assert_eq!(direct_input_left(&r), 0, "a route's later stage");
    r.control().input_producer.store(PRODUCER_HOST, Ordering::Relaxed);
    r.set_direct_view(DirectView::NONE);
    assert_eq!(direct_input_left(&r), 0, "dma's view");
}

#[test]
fn hybrid_does_not_copy_output_the_kernel_wrote_to_the_host_itself() {
    let r = region();
    let (mut cursor, mut rec) = (BridgeCursor::default(), Recorder { upto: Some(0), ..Recorder::default() });
    // A bridged round 0..2: copied and published.
    rec.mirror = 2;
    assert_eq!(step(&r, &mut cursor, &mut rec), ["out slots 0+2", "out tail 2"]);
    // HY5: a direct round 2..4 (the kernel published output_tail itself), then a bridged 4..6
    // before the bridge looked (direct_upto 4, stored with its mirror): only 4..6 cross.
    r.control().output_tail.value.store(4, Ordering::Release);
    (rec.upto, rec.mirror) = (Some(4), 6);
    assert_eq!(step(&r, &mut cursor, &mut rec), ["out slots 4+2", "out tail 6"]);
    // Direct rounds only (HY4: they move output_tail, not the mirror or direct_upto): nothing
    // is copied or written.
    r.control().output_tail.value.store(9, Ordering::Release);
    assert_eq!(step(&r, &mut cursor, &mut rec), Vec::<String>::new());
    assert_eq!(cursor.copied, 6);
    // The bridged round after them brings their end: positions 9..12 (slots 1..4) cross.
    (rec.upto, rec.mirror) = (Some(9), 12);
    assert_eq!(step(&r, &mut cursor, &mut rec), ["out slots 1+3", "out tail 12"]);
    assert_eq!(cursor.stats.direct_out, 2);
}

#[test]
fn hybrid_never_copies_backwards_when_a_direct_round_ends_between_its_two_loads() {
    // A direct round 7..8 and a bridged one after it: the bridge read the mirror before the
    // bridged round (7), then direct_upto after it (8). Nothing is pending; it must neither copy
    // (a "span" from 8 back to 7 would be the whole ring) nor write output_tail back to 7.
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

// ---- hybrid end to end, on a schedule ---------------------------------------------------------
//
// The real `bridge_step` between a host and an executable model of the kernel's poller (HY2–HY4
// as `kernels/ring_kernel.cu` takes them), with a copy engine that runs its queued copies and
// index writes later, in stream order per direction, reading host memory only when a copy runs
// (so a copy can carry bytes the host rewrote meanwhile). A schedule picks who moves next; every
// input the kernel reads must be the message of that position, and the host must see every
// reply once, in order, with `output_tail` never moving back.

use proptest::prelude::*;
use std::cell::Cell;
use std::collections::VecDeque;

/// One queued operation of a copy engine stream.
enum EngineOp {
    CopyIn { off: usize, len: usize },
    PublishIn(u64),
    CopyOut { off: usize, len: usize },
    PublishOut(u64),
}

/// The device side: device slots, the device input-tail word, the mirror line, two streams.
struct Device {
    region: Arc<Region>,
    direct: bool,
    /// What `direct_input_left` answers: 1 where the kernel reads the host's input, as hybrid's.
    left: u64,
    dev_in: Vec<u8>,
    dev_out: Vec<u8>,
    dev_tail: u64,
    mirror: u64,
    upto: u64,
    streams: [VecDeque<EngineOp>; 2],
    /// The mirror before the kernel's latest round, and whether the bridge's next read of the
    /// mirror sees it: the bridge loads the mirror, then `direct_upto`, and a kernel round may
    /// fall between the two loads (never older than what the bridge saw before).
    mirror_before: u64,
    lag: Cell<bool>,
    seen: Cell<u64>,
}

impl Device {
    /// A copy of the region's bytes `[offset, offset + len)`.
    fn host_read(&self, offset: usize, len: usize) -> Vec<u8> {
        // SAFETY: one thread runs the whole model; the range lies in the region (bytes_ptr checks).
        unsafe { std::slice::from_raw_parts(self.region.bytes_ptr(offset, len), len) }.to_vec()
    }

    /// Writes `data` at the region's byte `offset`.
    fn host_write(&self, offset: usize, data: &[u8]) {
        let dst = self.region.bytes_ptr(offset, data.len());
        // SAFETY: as in host_read; `data` is not region memory.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) }
    }

    /// Runs the front operation of stream `which` (0: input, 1: output), if any.
    fn run_one(&mut self, which: usize) {
        let l = *self.region.layout();
        match self.streams[which].pop_front() {
            Some(EngineOp::CopyIn { off, len }) => {
                let src = self.host_read(l.input_offset + off, len);
                self.dev_in[off..off + len].copy_from_slice(&src);
            }
            Some(EngineOp::PublishIn(tail)) => self.dev_tail = tail,
            Some(EngineOp::CopyOut { off, len }) => {
                self.host_write(l.output_offset + off, &self.dev_out[off..off + len]);
            }
            Some(EngineOp::PublishOut(tail)) => self.region.control().output_tail.value.store(tail, Ordering::Release),
            None => {}
        }
    }
}

impl BridgeCopies for Device {
    fn copy_in(&mut self, _: &Region, off: usize, len: usize) -> Result<(), Error> {
        self.streams[0].push_back(EngineOp::CopyIn { off, len });
        Ok(())
    }
    fn publish_in(&mut self, _: &Region, tail: u64) -> Result<(), Error> {
        self.streams[0].push_back(EngineOp::PublishIn(tail));
        Ok(())
    }
    fn kernel_output_tail(&self, _: &Region) -> u64 {
        let v = if self.lag.get() { self.mirror_before.max(self.seen.get()) } else { self.mirror };
        self.seen.set(v);
        v
    }
    fn copy_out(&mut self, _: &Region, off: usize, len: usize) -> Result<(), Error> {
        self.streams[1].push_back(EngineOp::CopyOut { off, len });
        Ok(())
    }
    fn publish_out(&mut self, _: &Region, tail: u64) -> Result<(), Error> {
        self.streams[1].push_back(EngineOp::PublishOut(tail));
        Ok(())
    }
    fn settle(&mut self) -> Result<(), Error> {
        while !self.streams[0].is_empty() || !self.streams[1].is_empty() {
            self.run_one(0);
            self.run_one(1);
        }
        Ok(())
    }
    fn direct_path(&self) -> bool {
        self.direct
    }
    fn direct_upto(&self, _: &Region) -> u64 {
        self.upto
    }
    fn direct_input_left(&self, _: &Region) -> u64 {
        self.left
    }
}

/// The kernel's poller state that HY2–HY4 use (positions: output position = input position).
struct KernelModel {
    next: u64,
    direct_max: u64,
    out_pending: bool,
    out_bridged_end: u64,
    /// The end of the last direct round, and the one last stored to `direct_upto`.
    direct_end: u64,
    direct_told: u64,
}

/// The word a slot holds for message `pos` (in the first 8 payload bytes; replies echo it).
fn word_at(bytes: &[u8], slot: usize) -> u64 {
    u64::from_le_bytes(bytes[slot * SLOT + 16..slot * SLOT + 24].try_into().unwrap())
}

impl KernelModel {
    /// One round, as the poller decides it; `most` caps its size (the schedule's choice).
    fn round(&mut self, d: &mut Device, most: u64) {
        let cb = d.region.control();
        let l = *d.region.layout();
        let cap = u64::from(l.input.capacity);
        let mut avail = cb.input_tail.value.load(Ordering::Acquire) - self.next;
        if avail == 0 {
            return;
        }
        // HY2.
        let from_host = d.direct && avail <= self.direct_max;
        if !from_host {
            let copied = d.dev_tail.wrapping_sub(self.next) as i64;
            if copied <= 0 {
                return; // a deep backlog waits for the bridge's copy
            }
            avail = avail.min(copied as u64);
        }
        let free = cap - (self.next - cb.output_head.value.load(Ordering::Acquire));
        let n = avail.min(free).min(most);
        if n == 0 {
            return;
        }
        // HY3.
        let mut direct_out = false;
        if d.direct && n <= self.direct_max {
            if self.out_pending && cb.output_tail.value.load(Ordering::Relaxed) == self.out_bridged_end {
                self.out_pending = false;
            }
            direct_out = !self.out_pending;
        }
        for pos in self.next..self.next + n {
            let slot = (pos % cap) as usize;
            let seen = if from_host { word_at(&d.host_read(l.input_offset, l.input.bytes()), slot) } else { word_at(&d.dev_in, slot) };
            assert_eq!(seen, pos, "the kernel read a stale {} input slot for message {pos}", if from_host { "host" } else { "device" });
            let at = slot * SLOT + 16;
            if direct_out {
                d.host_write(l.output_offset + at, &pos.to_le_bytes());
            } else {
                d.dev_out[at..at + 8].copy_from_slice(&pos.to_le_bytes());
            }
        }
        // HY4: a direct round publishes output_tail only; a bridged one first tells the bridge
        // where the direct rounds before it ended, then moves the mirror.
        let end = self.next + n;
        if direct_out {
            cb.output_tail.value.store(end, Ordering::Release);
            self.direct_end = end;
        } else {
            if self.direct_end != self.direct_told {
                d.upto = self.direct_end;
                self.direct_told = self.direct_end;
            }
            d.mirror_before = d.mirror;
            d.mirror = end;
            self.out_pending = true;
            self.out_bridged_end = end;
        }
        self.next = end;
        cb.input_head.value.store(end, Ordering::Release);
    }
}

/// The host: commits messages (their position as payload) and reads replies in order.
struct HostModel {
    total: u64,
    sent: u64,
    got: u64,
    last_tail: u64,
}

impl HostModel {
    fn send(&mut self, d: &Device, most: u64) {
        let cb = d.region.control();
        let l = *d.region.layout();
        let cap = u64::from(l.input.capacity);
        let free = cap - (self.sent - cb.input_head.value.load(Ordering::Acquire));
        let n = free.min(most).min(self.total - self.sent);
        for pos in self.sent..self.sent + n {
            let at = (pos % cap) as usize * SLOT + 16;
            d.host_write(l.input_offset + at, &pos.to_le_bytes());
        }
        self.sent += n;
        cb.input_tail.value.store(self.sent, Ordering::Release);
    }

    fn receive(&mut self, d: &Device) {
        let cb = d.region.control();
        let l = *d.region.layout();
        let tail = cb.output_tail.value.load(Ordering::Acquire);
        assert!(tail >= self.last_tail, "output_tail moved back: {} -> {tail}", self.last_tail);
        self.last_tail = tail;
        let cap = u64::from(l.output.capacity);
        for pos in self.got..tail {
            let reply = word_at(&d.host_read(l.output_offset, l.output.bytes()), (pos % cap) as usize);
            assert_eq!(reply, pos, "reply at position {pos}");
        }
        self.got = self.got.max(tail);
        cb.output_head.value.store(self.got, Ordering::Release);
    }
}

/// Runs `total` messages through a ring of `capacity` on `schedule`, then round-robin until done
/// (a bounded number of steps: no progress is a deadlock and fails).
fn hybrid_model(capacity: u32, direct: bool, direct_max: u64, total: u64, schedule: &[u8]) {
    let ring = RingConfig { capacity, slot_size: SLOT as u32 };
    let region = Region::alloc(ring, ring).unwrap();
    let bytes = capacity as usize * SLOT;
    let mut d = Device {
        region: Arc::clone(&region),
        direct,
        left: u64::from(direct && direct_max != 0),
        dev_in: vec![0; bytes],
        dev_out: vec![0; bytes],
        dev_tail: 0,
        mirror: 0,
        upto: 0,
        streams: Default::default(),
        mirror_before: 0,
        lag: Cell::new(false),
        seen: Cell::new(0),
    };
    let mut k = KernelModel {
        next: 0,
        direct_max: if direct { direct_max } else { 0 },
        out_pending: true,
        out_bridged_end: 0,
        direct_end: 0,
        direct_told: 0,
    };
    let mut h = HostModel { total, sent: 0, got: 0, last_tail: 0 };
    let mut cursor = BridgeCursor::default();
    let drain = (0..6u8).cycle().take(600 * total as usize);
    for (i, c) in schedule.iter().copied().chain(drain).enumerate() {
        if h.got == total {
            return;
        }
        let most = u64::from(c >> 3) % 5 + 1;
        match c % 6 {
            0 => h.send(&d, most),
            1 => {
                d.lag.set(c & 0x80 != 0);
                bridge_step(&region, &mut cursor, &mut d).unwrap();
            }
            2 => k.round(&mut d, most),
            3 => d.run_one(0),
            4 => d.run_one(1),
            _ => h.receive(&d),
        }
        assert!(i < schedule.len() + 600 * total as usize - 1, "no progress: {} of {total} replies", h.got);
    }
    panic!("no progress: {} of {total} replies ({} sent, kernel at {})", h.got, h.sent, k.next);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// hybrid (HY1–HY5) on capacities 1–4 with every direct_max from "never" to "the ring":
    /// no stale read, no loss, duplicate or reordering, no tail moving back, no deadlock.
    #[test]
    fn hybrid_bridge_and_kernel_model_keep_one_ring(cap in prop::sample::select(vec![1u32, 2, 4]), direct_max in 0u64..5, schedule in prop::collection::vec(any::<u8>(), 0..400)) {
        hybrid_model(cap, true, direct_max, 40, &schedule);
    }

    /// The same model without a direct path is dma: the bridge copies everything.
    #[test]
    fn dma_bridge_and_kernel_model_keep_one_ring(cap in prop::sample::select(vec![1u32, 2, 4]), schedule in prop::collection::vec(any::<u8>(), 0..400)) {
        hybrid_model(cap, false, 0, 40, &schedule);
    }
}
