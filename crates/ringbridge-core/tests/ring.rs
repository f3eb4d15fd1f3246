//! `Producer` / `Consumer` over a region and over a hand-built `RingMemory`: wrap, full and empty
//! rules, size checks, corrupt frames, the cached indices, and a two-thread stress run.

use std::cell::{Cell, UnsafeCell};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ringbridge_core::protocol::{FrameHeader, RingConfig, FRAME_HEADER_BYTES};
use ringbridge_core::ring::{Consumer, PopError, Producer, PushError, RingMemory};
use ringbridge_core::transport::{Region, RegionRing};
use ringbridge_core::{AtomicU64, Ordering};

const SLOT: u32 = 64;
const MAX_PAYLOAD: usize = SLOT as usize - FRAME_HEADER_BYTES;

fn region(capacity: u32) -> Arc<Region> {
    let ring = RingConfig { capacity, slot_size: SLOT };
    Region::alloc(ring, RingConfig { capacity: 1, slot_size: 32 }).expect("valid ring shape")
}

fn ends(region: &Arc<Region>) -> (Producer<RegionRing>, Consumer<RegionRing>) {
    (Producer::new(region.input()), Consumer::new(region.input()))
}

/// A well-mixed 64-bit value of `seq` (splitmix64), so neighbouring messages differ in every byte.
fn mix(seq: u64) -> u64 {
    let mut z = seq.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Message `seq`'s payload: a length from 0 to `max` and bytes that depend on `seq`.
fn payload(seq: u64, max: usize) -> Vec<u8> {
    let len = (mix(seq) % (max as u64 + 1)) as usize;
    (0..len).map(|i| mix(seq ^ ((i as u64) << 40)) as u8).collect()
}

fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

fn header(seq: u64) -> FrameHeader {
    FrameHeader { length: 0, type_id: seq as u16, flags: 0, correlation_id: seq }
}

/// Pops one frame and checks that it is message `seq`, whole.
fn expect_frame<M: RingMemory>(rx: &mut Consumer<M>, seq: u64) {
    let (h, p) = rx.pop_with(|h, p| (h, p.to_vec())).unwrap_or_else(|e| panic!("message {seq}: {e:?}"));
    assert_eq!(h.correlation_id, seq, "message {seq}: out of order");
    assert_eq!(h.type_id, seq as u16, "message {seq}: type");
    assert_eq!(h.flags, 0, "message {seq}: flags");
    assert_eq!(p, payload(seq, MAX_PAYLOAD), "message {seq}: payload");
}

#[test]
fn wraps_at_capacity() {
    let laps: u64 = if cfg!(miri) { 3 } else { 200 };
    for capacity in [1u32, 2, 4] {
        let region = region(capacity);
        let (mut tx, mut rx) = ends(&region);
        let cap = u64::from(capacity);
        let mut sent = 0;
        let mut received = 0;
        for lap in 0..laps {
            // Fill to full, then drain to empty.
            for _ in 0..cap {
                tx.stage(header(sent), &payload(sent, MAX_PAYLOAD)).unwrap();
                sent += 1;
            }
            assert_eq!(tx.stage(header(sent), &[]), Err(PushError::Full), "capacity {capacity}, lap {lap}");
            tx.publish();
            while received < sent {
                expect_frame(&mut rx, received);
                received += 1;
            }
            assert_eq!(rx.pop_with(|_, _| ()), Err(PopError::Empty), "capacity {capacity}, lap {lap}");
            rx.release();
            // Then a partial lap, so the next fill starts at a different slot.
            let k = lap % cap + 1;
            for _ in 0..k {
                tx.push(header(sent), &payload(sent, MAX_PAYLOAD)).unwrap();
                sent += 1;
            }
            while received < sent {
                expect_frame(&mut rx, received);
                received += 1;
                rx.release();
            }
        }
        let cb = region.control();
        // Positions are free-running: they count every frame, not the slot.
        assert_eq!(cb.input_tail.value.load(Ordering::Acquire), sent);
        assert_eq!(cb.input_head.value.load(Ordering::Acquire), sent);
        assert!(sent > 100 * cap || cfg!(miri), "positions ran past many laps");
    }
}

#[test]
fn full_exactly_at_capacity_counting_staged_and_unreleased_frames() {
    let region = region(4);
    let (mut tx, mut rx) = ends(&region);
    assert_eq!(tx.free_slots(4), 4);
    for seq in 0..4 {
        tx.stage(header(seq), &payload(seq, MAX_PAYLOAD)).unwrap();
    }
    // Staged frames hold their slots although the consumer cannot see them yet.
    assert_eq!(tx.stage(header(4), &[]), Err(PushError::Full));
    assert_eq!(tx.free_slots(1), 0);
    tx.publish();
    expect_frame(&mut rx, 0);
    expect_frame(&mut rx, 1);
    // Consumed but unreleased slots still belong to the consumer.
    assert_eq!(rx.unreleased(), 2);
    assert_eq!(tx.stage(header(4), &[]), Err(PushError::Full));
    rx.release();
    assert_eq!(tx.free_slots(2), 2);
    tx.stage(header(4), &payload(4, MAX_PAYLOAD)).unwrap();
    tx.stage(header(5), &payload(5, MAX_PAYLOAD)).unwrap();
    assert_eq!(tx.stage(header(6), &[]), Err(PushError::Full));
    tx.publish();
    for seq in 2..6 {
        expect_frame(&mut rx, seq);
    }
}

#[test]
fn empty_until_published() {
    let region = region(8);
    let (mut tx, mut rx) = ends(&region);
    assert_eq!(rx.pop_with(|_, _| ()), Err(PopError::Empty));
    for seq in 0..3 {
        tx.stage(header(seq), &payload(seq, MAX_PAYLOAD)).unwrap();
    }
    assert_eq!(tx.staged(), 3);
    assert_eq!(rx.available(3), 0, "staged frames are invisible");
    assert_eq!(rx.pop_with(|_, _| ()), Err(PopError::Empty));
    assert_eq!(region.control().input_tail.value.load(Ordering::Acquire), 0);
    tx.publish();
    assert_eq!(tx.staged(), 0);
    assert_eq!(region.control().input_tail.value.load(Ordering::Acquire), 3);
    assert_eq!(rx.available(3), 3);
    for seq in 0..3 {
        expect_frame(&mut rx, seq);
    }
    assert_eq!(rx.pop_with(|_, _| ()), Err(PopError::Empty));
}

#[test]
fn too_large_is_rejected_before_writing() {
    let ring = VecRing::new(2, SLOT as usize);
    let mut tx = Producer::new(&ring);
    let mut rx = Consumer::new(&ring);
    let big = vec![0xab; MAX_PAYLOAD + 1];
    assert_eq!(tx.stage(header(0), &big), Err(PushError::TooLarge { length: MAX_PAYLOAD + 1, max: MAX_PAYLOAD }));
    assert_eq!(tx.staged(), 0);
    assert!(ring.slot_bytes(0).iter().all(|&b| b == 0), "a rejected payload wrote its slot");

    // A full ring still reports the size first: the check precedes any look at the indices.
    tx.push(header(0), &payload(0, MAX_PAYLOAD)).unwrap();
    tx.push(header(1), &payload(1, MAX_PAYLOAD)).unwrap();
    assert!(matches!(tx.stage(header(2), &big), Err(PushError::TooLarge { .. })));
    expect_frame(&mut rx, 0);
    expect_frame(&mut rx, 1);
    rx.release();

    // The largest payload that fits is accepted.
    tx.push(header(2), &[0x5a; MAX_PAYLOAD]).unwrap();
    assert_eq!(rx.pop_with(|h, p| (h.length, p.to_vec())), Ok((MAX_PAYLOAD as u32, vec![0x5a; MAX_PAYLOAD])));
}

#[test]
fn stage_with_rejects_an_overlong_header_and_stages_nothing() {
    let region = region(2);
    let (mut tx, mut rx) = ends(&region);
    let too_long = |area: &mut [u8]| Some(FrameHeader { length: area.len() as u32 + 1, ..header(9) });
    assert_eq!(tx.stage_with(too_long), Err(PushError::TooLarge { length: MAX_PAYLOAD + 1, max: MAX_PAYLOAD }));
    assert_eq!(tx.stage_with(|_| None), Ok(false));
    assert_eq!(tx.staged(), 0);
    // The next frame takes the position the rejected ones would have used.
    let sent = payload(0, MAX_PAYLOAD);
    let staged = tx.stage_with(|area| {
        area[..sent.len()].copy_from_slice(&sent);
        Some(FrameHeader { length: sent.len() as u32, ..header(0) })
    });
    assert_eq!(staged, Ok(true));
    tx.publish();
    expect_frame(&mut rx, 0);
    assert_eq!(rx.pop_with(|_, _| ()), Err(PopError::Empty));
}

#[test]
fn bad_frame_is_consumed_and_skipped() {
    let ring = VecRing::new(4, SLOT as usize);
    let mut tx = Producer::new(&ring);
    let mut rx = Consumer::new(&ring);
    for seq in 0..3 {
        tx.stage(header(seq), &payload(seq, MAX_PAYLOAD)).unwrap();
    }
    ring.write_length(1, MAX_PAYLOAD as u32 + 1);
    tx.publish();
    expect_frame(&mut rx, 0);
    assert_eq!(
        rx.pop_with(|_, _| panic!("a corrupt frame reached the reader")),
        Err(PopError::BadFrame { header: FrameHeader { length: MAX_PAYLOAD as u32 + 1, ..header(1) }, max: MAX_PAYLOAD })
    );
    expect_frame(&mut rx, 2);
    rx.release();
    assert_eq!(ring.head.load(Ordering::Acquire), 3, "the bad frame's slot is released with the rest");
}

#[test]
fn producer_rereads_head_only_when_its_cache_shows_too_few_slots() {
    let ring = VecRing::new(4, SLOT as usize);
    let mut tx = Producer::new(&ring);
    let mut rx = Consumer::new(&ring);
    ring.head_touches.set(0);
    for seq in 0..4 {
        tx.stage(header(seq), &payload(seq, MAX_PAYLOAD)).unwrap();
    }
    tx.publish();
    assert_eq!(ring.head_touches.get(), 0, "a fresh ring needs no look at head for 4 frames");
    assert_eq!(tx.stage(header(4), &[]), Err(PushError::Full));
    assert_eq!(ring.head_touches.get(), 1, "full: head is re-read once");

    expect_frame(&mut rx, 0);
    expect_frame(&mut rx, 1);
    rx.release();
    ring.head_touches.set(0);
    tx.stage(header(4), &payload(4, MAX_PAYLOAD)).unwrap();
    assert_eq!(ring.head_touches.get(), 1, "the stale cache showed no room: re-read");
    tx.stage(header(5), &payload(5, MAX_PAYLOAD)).unwrap();
    assert_eq!(ring.head_touches.get(), 1, "the refreshed cache covers the second frame");
}

#[test]
fn consumer_sees_frames_only_after_publish_and_rereads_tail_only_when_its_cache_runs_out() {
    let ring = VecRing::new(8, SLOT as usize);
    let mut tx = Producer::new(&ring);
    let mut rx = Consumer::new(&ring);
    for seq in 0..5 {
        tx.stage(header(seq), &payload(seq, MAX_PAYLOAD)).unwrap();
    }
    ring.tail_touches.set(0);
    assert_eq!(rx.available(1), 0);
    assert_eq!(ring.tail_touches.get(), 1, "an empty cache re-reads tail");
    tx.publish();
    ring.tail_touches.set(0);
    expect_frame(&mut rx, 0);
    assert_eq!(ring.tail_touches.get(), 1, "the first pop after publish refreshes the cache");
    for seq in 1..5 {
        expect_frame(&mut rx, seq);
    }
    assert_eq!(ring.tail_touches.get(), 1, "the next four frames come from the cache");
    assert_eq!(rx.pop_with(|_, _| ()), Err(PopError::Empty));
    assert_eq!(ring.tail_touches.get(), 2);
}

#[test]
fn ends_resume_from_the_positions_in_memory() {
    let region = region(4);
    let start = 1_000_003;
    region.control().input_head.value.store(start, Ordering::Relaxed);
    region.control().input_tail.value.store(start, Ordering::Relaxed);
    let mut rx = Consumer::new(region.input());
    {
        let mut tx = Producer::new(region.input());
        tx.push(header(0), &payload(0, MAX_PAYLOAD)).unwrap();
        tx.push(header(1), &payload(1, MAX_PAYLOAD)).unwrap();
    }
    expect_frame(&mut rx, 0);
    rx.release();
    // A second producer picks up at the tail the first one left, with one slot still occupied.
    let mut tx = Producer::new(region.input());
    assert_eq!(tx.free_slots(4), 3);
    for seq in 2..5 {
        tx.push(header(seq), &payload(seq, MAX_PAYLOAD)).unwrap();
    }
    assert_eq!(tx.stage(header(5), &[]), Err(PushError::Full));
    for seq in 1..5 {
        expect_frame(&mut rx, seq);
    }
    rx.release();
    assert_eq!(region.control().input_head.value.load(Ordering::Acquire), start + 5);
    assert_eq!(region.control().input_tail.value.load(Ordering::Acquire), start + 5);
}

#[test]
fn two_threads_move_every_frame_in_order() {
    let messages: u64 = if cfg!(miri) { 300 } else { 200_000 };
    let region = region(8);
    let (mut tx, mut rx) = ends(&region);
    let limit = Duration::from_secs(30);
    let producer = thread::spawn(move || {
        let deadline = Instant::now() + limit;
        let mut seq = 0;
        while seq < messages {
            // Batches of 1 to 8 frames per publish.
            let batch = mix(seq) % 8 + 1;
            let mut staged = 0;
            while staged < batch && seq < messages {
                match tx.stage(header(seq), &payload(seq, MAX_PAYLOAD)) {
                    Ok(()) => {
                        seq += 1;
                        staged += 1;
                    }
                    Err(PushError::Full) => {
                        tx.publish();
                        assert!(Instant::now() < deadline, "producer stuck at message {seq}");
                        thread::yield_now();
                    }
                    Err(e) => panic!("message {seq}: {e:?}"),
                }
            }
            tx.publish();
        }
    });
    let deadline = Instant::now() + limit;
    let mut total = 0u64;
    let mut seq = 0;
    while seq < messages {
        match rx.pop_with(|h, p| (h, checksum(p))) {
            Ok((h, sum)) => {
                assert_eq!(h.correlation_id, seq, "message {seq}: out of order");
                let want = payload(seq, MAX_PAYLOAD);
                assert_eq!(h.length as usize, want.len(), "message {seq}: length");
                assert_eq!(sum, checksum(&want), "message {seq}: checksum");
                total = total.wrapping_add(sum);
                seq += 1;
                if seq % 3 == 0 {
                    rx.release();
                }
            }
            Err(PopError::Empty) => {
                rx.release();
                assert!(Instant::now() < deadline, "consumer timed out waiting for message {seq}");
                thread::yield_now();
            }
            Err(e) => panic!("message {seq}: {e:?}"),
        }
    }
    rx.release();
    producer.join().expect("producer thread");
    assert_eq!(rx.pop_with(|_, _| ()), Err(PopError::Empty), "a frame past the last message");
    let expected = (0..messages).fold(0u64, |acc, seq| acc.wrapping_add(checksum(&payload(seq, MAX_PAYLOAD))));
    assert_eq!(total, expected);
}

/// A ring in a plain `Vec` for single-threaded tests: it can corrupt a frame, and it counts how often each end reaches for the other side's index.
struct VecRing {
    head: AtomicU64,
    tail: AtomicU64,
    slot_size: usize,
    slots: Vec<UnsafeCell<Vec<u8>>>,
    head_touches: Cell<u32>,
    tail_touches: Cell<u32>,
}

impl VecRing {
    fn new(capacity: usize, slot_size: usize) -> Self {
        Self {
            head: AtomicU64::new(0),
            tail: AtomicU64::new(0),
            slot_size,
            slots: (0..capacity).map(|_| UnsafeCell::new(vec![0; slot_size])).collect(),
            head_touches: Cell::new(0),
            tail_touches: Cell::new(0),
        }
    }

    /// Overwrites the `length` field of the frame in `slot`, as a misbehaving peer would.
    fn write_length(&self, slot: usize, length: u32) {
        // SAFETY: the ring is used from one thread and no slot borrow outlives a
        // `with_slot`/`with_slot_mut` call, so this is the only reference to the slot.
        let bytes = unsafe { &mut *self.slots[slot].get() };
        bytes[..4].copy_from_slice(&length.to_le_bytes());
    }

    fn slot_bytes(&self, slot: usize) -> Vec<u8> {
        // SAFETY: as in `write_length`.
        unsafe { &*self.slots[slot].get() }.clone()
    }
}

// SAFETY: head and tail are fixed fields; each slot is its own `slot_size`-byte allocation. The
// `&VecRing` is not `Send`, so both ends live on the creating thread.
unsafe impl RingMemory for &VecRing {
    fn head(&self) -> &AtomicU64 {
        self.head_touches.set(self.head_touches.get() + 1);
        &self.head
    }

    fn tail(&self) -> &AtomicU64 {
        self.tail_touches.set(self.tail_touches.get() + 1);
        &self.tail
    }

    fn capacity(&self) -> u32 {
        self.slots.len() as u32
    }

    fn slot_size(&self) -> usize {
        self.slot_size
    }

    unsafe fn with_slot_mut<R>(&self, slot: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        // SAFETY: single-threaded, and the caller owns the slot (I2): no other borrow exists.
        f(unsafe { &mut *self.slots[slot].get() })
    }

    unsafe fn with_slot<R>(&self, slot: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        // SAFETY: single-threaded, and the caller owns the slot (I3): no mutable borrow exists.
        f(unsafe { &*self.slots[slot].get() })
    }
}
