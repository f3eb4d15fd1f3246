//! Model checks of the ring's orderings under loom, one model per spec invariant, named after it.
//!
//! Run with `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p ringbridge-core
//! --test loom --release`. Under `--cfg loom` the crate's atomics are loom's, so the models drive
//! the real [`Producer`] / [`Consumer`]; the slots are loom cells, so a slot access that the
//! orderings do not hand over is reported as a data race.
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::atomic::fence;
use loom::sync::Arc;
use loom::thread;
use ringbridge_core::protocol::{FrameHeader, FRAME_HEADER_BYTES};
use ringbridge_core::ring::{Consumer, PopError, Producer, PushError, RingMemory};
use ringbridge_core::{AtomicU64, Ordering};

/// Smallest legal slot: a header and 16 bytes of payload.
const SLOT: usize = 32;

struct Slots {
    head: AtomicU64,
    tail: AtomicU64,
    slots: Vec<UnsafeCell<[u8; SLOT]>>,
}

// SAFETY: slots are only reached through `with_slot`/`with_slot_mut`, whose callers own the slot
// under (I2)/(I3); the loom cells check exactly that claim in every explored execution.
unsafe impl Sync for Slots {}

/// One ring in loom-checked memory; clones share it (one for each end).
#[derive(Clone)]
struct LoomRing(Arc<Slots>);

impl LoomRing {
    fn new(capacity: usize) -> Self {
        Self(Arc::new(Slots {
            head: AtomicU64::new(0),
            tail: AtomicU64::new(0),
            slots: (0..capacity).map(|_| UnsafeCell::new([0; SLOT])).collect(),
        }))
    }
}

// SAFETY: head and tail are fixed fields of the shared `Slots`; each slot is its own cell of
// `SLOT` bytes, so slots overlap neither each other nor the indices.
unsafe impl RingMemory for LoomRing {
    fn head(&self) -> &AtomicU64 {
        &self.0.head
    }

    fn tail(&self) -> &AtomicU64 {
        &self.0.tail
    }

    fn capacity(&self) -> u32 {
        self.0.slots.len() as u32
    }

    fn slot_size(&self) -> usize {
        SLOT
    }

    unsafe fn with_slot_mut<R>(&self, slot: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        self.0.slots[slot].with_mut(|bytes| {
            // SAFETY: the caller owns the slot (I2); loom fails the model if another thread's
            // access is not ordered before this one.
            f(unsafe { &mut *bytes })
        })
    }

    unsafe fn with_slot<R>(&self, slot: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        self.0.slots[slot].with(|bytes| {
            // SAFETY: the caller owns the slot for reading (I3); loom checks it as above.
            f(unsafe { &*bytes })
        })
    }
}

/// The frame the models send as message `seq`: its id and a payload of 16 distinct bytes.
fn frame(seq: u64) -> (FrameHeader, [u8; SLOT - FRAME_HEADER_BYTES]) {
    let header = FrameHeader { length: 0, type_id: 7, flags: 0, correlation_id: 100 + seq };
    (header, std::array::from_fn(|i| (seq as u8).wrapping_mul(31).wrapping_add(i as u8)))
}

/// Pushes `seq`, yielding to the consumer while the ring is full.
fn push_spinning(tx: &mut Producer<LoomRing>, seq: u64) {
    let (header, payload) = frame(seq);
    loop {
        match tx.push(header, &payload) {
            Ok(()) => return,
            Err(PushError::Full) => thread::yield_now(),
            Err(e) => panic!("push of message {seq}: {e:?}"),
        }
    }
}

/// Pops one frame, checks it is message `seq` in full, and releases its slot.
fn pop_spinning(rx: &mut Consumer<LoomRing>, seq: u64) {
    let (want_header, want_payload) = frame(seq);
    loop {
        match rx.pop_with(|h, p| (h.correlation_id, h.length, p.to_vec())) {
            Ok((id, length, payload)) => {
                assert_eq!(id, want_header.correlation_id, "message {seq}: wrong frame");
                assert_eq!(length as usize, want_payload.len(), "message {seq}: length");
                assert_eq!(payload, want_payload, "message {seq}: payload");
                rx.release();
                return;
            }
            Err(PopError::Empty) => thread::yield_now(),
            Err(e) => panic!("pop of message {seq}: {e:?}"),
        }
    }
}

/// (I2)(I3): three frames through a ring of two slots — full once, wrapping once — arrive whole,
/// in order, and every slot changes hands without a race.
#[test]
fn i2_i3_spsc_transfer() {
    loom::model(|| {
        let ring = LoomRing::new(2);
        let mut tx = Producer::new(ring.clone());
        let mut rx = Consumer::new(ring.clone());
        let producer = thread::spawn(move || {
            for seq in 0..3 {
                push_spinning(&mut tx, seq);
            }
        });
        for seq in 0..3 {
            pop_spinning(&mut rx, seq);
        }
        producer.join().unwrap();
        assert_eq!(ring.0.head.load(Ordering::Relaxed), 3);
        assert_eq!(ring.0.tail.load(Ordering::Relaxed), 3);
    });
}

/// (P4)(C2): a consumer that sees the published tail sees the whole frame written before it;
/// one that does not sees nothing at all.
#[test]
fn p4_c2_publish_makes_slot_visible() {
    loom::model(|| {
        let ring = LoomRing::new(1);
        let mut tx = Producer::new(ring.clone());
        let mut rx = Consumer::new(ring);
        let producer = thread::spawn(move || {
            let (header, payload) = frame(0);
            tx.stage(header, &payload).unwrap();
            tx.publish();
        });
        let (want_header, want_payload) = frame(0);
        match rx.pop_with(|h, p| (h.correlation_id, p.to_vec())) {
            Ok((id, payload)) => {
                assert_eq!(id, want_header.correlation_id);
                assert_eq!(payload, want_payload);
            }
            Err(PopError::Empty) => {}
            Err(e) => panic!("{e:?}"),
        }
        producer.join().unwrap();
    });
}

/// (C4)(P2): the producer reuses a slot only after the consumer's release, so the consumer's
/// read of the old frame never races the producer's write of the next one (capacity 1: every
/// frame reuses the slot).
#[test]
fn c4_p2_release_before_reuse() {
    loom::model(|| {
        let ring = LoomRing::new(1);
        let mut tx = Producer::new(ring.clone());
        let mut rx = Consumer::new(ring);
        let producer = thread::spawn(move || {
            push_spinning(&mut tx, 0);
            push_spinning(&mut tx, 1);
        });
        pop_spinning(&mut rx, 0);
        pop_spinning(&mut rx, 1);
        producer.join().unwrap();
    });
}

/// (D1)(D2): the kernel announces sleep (SeqCst store of `kernel_sleeping`, SeqCst fence) and
/// re-checks the input tail (SeqCst load); the host publishes the tail (Release), fences (SeqCst)
/// and loads `kernel_sleeping`. In no execution does the kernel go to sleep while the host skips
/// the wake.
///
/// NB: `CpuHooks::idle` today has no fence between its SeqCst store and SeqCst load. That pair
/// is enough under the C++20 model (the store, the load and the host's fence cannot be ordered
/// in S otherwise), but loom treats SeqCst accesses as AcqRel (loom README, "Unsupported
/// features"; tokio-rs/loom#180) and reports a lost wake-up for it. The model checks the fenced
/// form, which the GPU kernel needs anyway (`fence.sc`); the fence is proposed for the CPU side.
#[test]
fn d1_d2_no_lost_wakeup() {
    loom::model(|| {
        let kernel_sleeping = Arc::new(AtomicU64::new(0));
        let tail = Arc::new(AtomicU64::new(0));
        let kernel = {
            let (kernel_sleeping, tail) = (Arc::clone(&kernel_sleeping), Arc::clone(&tail));
            thread::spawn(move || {
                kernel_sleeping.store(1, Ordering::SeqCst);
                fence(Ordering::SeqCst);
                tail.load(Ordering::SeqCst) == 0
            })
        };
        tail.store(1, Ordering::Release);
        fence(Ordering::SeqCst);
        let host_wakes = kernel_sleeping.load(Ordering::Relaxed) != 0;
        let kernel_sleeps = kernel.join().unwrap();
        assert!(host_wakes || !kernel_sleeps, "lost wake-up: the kernel sleeps on a published tail");
    });
}

/// (H7)(K7): the host announces it waits (`host_waiting`, SeqCst store + SeqCst fence) and
/// re-checks the output tail; the kernel publishes the tail (Release), fences (SeqCst) and loads
/// `host_waiting`. In no execution does the host sleep on a reply the kernel does not ring for.
#[test]
fn h7_k7_no_lost_reply_wakeup() {
    loom::model(|| {
        let host_waiting = Arc::new(AtomicU64::new(0));
        let tail = Arc::new(AtomicU64::new(0));
        let host = {
            let (host_waiting, tail) = (Arc::clone(&host_waiting), Arc::clone(&tail));
            thread::spawn(move || {
                host_waiting.store(1, Ordering::SeqCst);
                fence(Ordering::SeqCst);
                tail.load(Ordering::Acquire) == 0
            })
        };
        tail.store(1, Ordering::Release);
        fence(Ordering::SeqCst);
        let kernel_rings = host_waiting.load(Ordering::Relaxed) != 0;
        let host_sleeps = host.join().unwrap();
        assert!(kernel_rings || !host_sleeps, "lost wake-up: the host sleeps on a published reply");
    });
}

/// (§14, D1/D2 between route stages): stage A publishes the next stage's input tail, fences,
/// and wakes B if B announced sleep; B announces sleep, fences, re-checks that tail, and when it
/// finds the frame, consumes it, releases the head, fences and wakes A if A announced sleep
/// while waiting for room. Both handshakes at once, as `CpuHooks::published` runs them: in no
/// execution does a stage sleep on an index its neighbour moved without being woken.
#[test]
fn route_neighbours_no_lost_wakeup() {
    loom::model(|| {
        let (a_sleeping, b_sleeping) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (tail, head) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let b = {
            let (a_sleeping, b_sleeping, tail, head) =
                (Arc::clone(&a_sleeping), Arc::clone(&b_sleeping), Arc::clone(&tail), Arc::clone(&head));
            thread::spawn(move || {
                b_sleeping.store(1, Ordering::SeqCst);
                fence(Ordering::SeqCst);
                if tail.load(Ordering::SeqCst) == 0 {
                    return (true, false); // B sleeps; A must wake it
                }
                b_sleeping.store(0, Ordering::Relaxed);
                head.store(1, Ordering::Release);
                fence(Ordering::SeqCst);
                (false, a_sleeping.load(Ordering::Relaxed) != 0)
            })
        };
        tail.store(1, Ordering::Release);
        fence(Ordering::SeqCst);
        let a_wakes_b = b_sleeping.load(Ordering::Relaxed) != 0;
        // A's ring is full until B releases: A announces sleep and re-checks the head.
        a_sleeping.store(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let a_sleeps = head.load(Ordering::SeqCst) == 0;
        let (b_slept, b_wakes_a) = b.join().unwrap();
        assert!(!b_slept || a_wakes_b, "lost wake-up: B sleeps on a tail A published");
        assert!(b_slept || !a_sleeps || b_wakes_a, "lost wake-up: A sleeps on a head B released");
    });
}

/// The host's wait for input room (H7 with `WAIT_INPUT`) against the kernel's K5–K7 as the JS
/// worker kernel (`ts/worker-kernel.ts`) runs them: the kernel releases the input head, then
/// checks `host_waiting`; the host announces it waits for room, then re-reads the head. `rings`
/// is whether the kernel checks after the release (the fixed order) or before it.
fn room_wakeup(ring_after_release: bool) {
    loom::model(move || {
        let host_waiting = Arc::new(AtomicU64::new(0));
        let head = Arc::new(AtomicU64::new(0));
        let host = {
            let (host_waiting, head) = (Arc::clone(&host_waiting), Arc::clone(&head));
            thread::spawn(move || {
                host_waiting.store(1, Ordering::SeqCst);
                fence(Ordering::SeqCst);
                head.load(Ordering::SeqCst) == 0 // no room seen: the host sleeps
            })
        };
        let mut kernel_rings = false;
        if !ring_after_release {
            fence(Ordering::SeqCst);
            kernel_rings = host_waiting.load(Ordering::Relaxed) != 0;
        }
        head.store(1, Ordering::Release);
        if ring_after_release {
            fence(Ordering::SeqCst);
            kernel_rings = host_waiting.load(Ordering::Relaxed) != 0;
        }
        let host_sleeps = host.join().unwrap();
        assert!(kernel_rings || !host_sleeps, "lost wake-up: the host sleeps on input room the kernel released");
    });
}

/// (H7)(K7) for input room: ringing after the input release, no execution leaves the host
/// asleep on room the kernel made (issue #10, item 6: the JS worker rang before it released).
#[test]
fn h7_k7_no_lost_room_wakeup() {
    room_wakeup(true);
}

/// The order the JS worker kernel had (ring, then release): loom finds the lost wake-up, so the
/// model above can fail and does check something.
#[test]
#[should_panic(expected = "lost wake-up")]
fn h7_k7_ring_before_release_loses_the_wakeup() {
    room_wakeup(false);
}

/// H7 with two waiters at once: the two halves of a session (`SendHalf::write_chunk_within`,
/// `RecvHalf::read_chunk_within`) wait on one `host_waiting` word, one for room (`WAIT_INPUT`),
/// one for replies (`WAIT_OUTPUT`). The kernel publishes a reply and releases input room, then
/// K7 (fence, load `host_waiting`). `rmw`: each waiter sets and clears only its own bit with
/// read-modify-writes, as `host::wait_on` does; else with plain stores.
fn two_waiters(rmw: bool) {
    const OUTPUT: u64 = 1;
    const INPUT: u64 = 2;
    loom::model(move || {
        let host_waiting = Arc::new(AtomicU64::new(0));
        let (tail, head) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let waiter = |bit: u64, index: Arc<AtomicU64>| {
            let host_waiting = Arc::clone(&host_waiting);
            thread::spawn(move || {
                if rmw {
                    host_waiting.fetch_or(bit, Ordering::SeqCst);
                } else {
                    host_waiting.store(bit, Ordering::SeqCst);
                }
                fence(Ordering::SeqCst);
                if index.load(Ordering::SeqCst) == 0 {
                    return true; // it sleeps on the doorbell
                }
                if rmw {
                    host_waiting.fetch_and(!bit, Ordering::Relaxed);
                } else {
                    host_waiting.store(0, Ordering::Relaxed);
                }
                false
            })
        };
        let replies = waiter(OUTPUT, Arc::clone(&tail));
        let room = waiter(INPUT, Arc::clone(&head));
        tail.store(1, Ordering::Release);
        head.store(1, Ordering::Release);
        fence(Ordering::SeqCst);
        let kernel_rings = host_waiting.load(Ordering::Relaxed) != 0;
        let (replies_sleeps, room_sleeps) = (replies.join().unwrap(), room.join().unwrap());
        assert!(kernel_rings || !(replies_sleeps || room_sleeps), "lost wake-up: a half sleeps on an index the kernel moved");
    });
}

/// Each half sets and clears only its bit: no execution leaves either asleep unrung.
#[test]
fn h7_two_waiters_no_lost_wakeup() {
    two_waiters(true);
}

/// With plain stores one half's clear (or announcement) erases the other's: loom finds the lost
/// wake-up, so the model above can fail and does check something.
#[test]
#[should_panic(expected = "lost wake-up")]
fn h7_two_waiters_store_loses_a_wakeup() {
    two_waiters(false);
}

/// §5.3 (W3 with R1–R3): chunks of two and one frames through a ring of two slots, written and
/// read in place through `WriteChunk::with_slot_mut` / `ReadChunk::with_slot`, published and
/// released with one index store each: every slot changes hands without a race, a chunk never
/// shows a frame before its commit, and the frames arrive whole and in order. The producer
/// first reserves a chunk and drops it uncommitted, which must send nothing.
#[test]
fn w3_r3_chunks_transfer() {
    loom::model(|| {
        let ring = LoomRing::new(2);
        let mut tx = Producer::new(ring.clone());
        let mut rx = Consumer::new(ring.clone());
        let producer = thread::spawn(move || {
            {
                let mut c = tx.write_chunk(2);
                assert_eq!(c.len(), 2);
                c.with_slot_mut(0, |slot| slot.fill(0xEE));
                // Dropped uncommitted.
            }
            let mut seq = 0u64;
            for want in [2u64, 1] {
                loop {
                    let mut c = tx.write_chunk(want);
                    if c.len() as u64 == want {
                        for i in 0..c.len() {
                            let (header, payload) = frame(seq + i as u64);
                            c.with_slot_mut(i, |slot| {
                                let mut h = header;
                                h.length = payload.len() as u32;
                                h.write_to(slot);
                                slot[FRAME_HEADER_BYTES..].copy_from_slice(&payload);
                            });
                        }
                        seq += c.commit(want as usize) as u64;
                        break;
                    }
                    drop(c);
                    thread::yield_now();
                }
            }
        });
        let mut seq = 0u64;
        while seq < 3 {
            let c = rx.read_chunk(u64::MAX);
            if c.is_empty() {
                drop(c);
                thread::yield_now();
                continue;
            }
            for i in 0..c.len() {
                let (want_header, want_payload) = frame(seq + i as u64);
                c.with_slot(i, |slot| {
                    let h = FrameHeader::read_from(slot);
                    assert_eq!(h.correlation_id, want_header.correlation_id, "chunk frame {i}: wrong frame");
                    assert_eq!(&slot[FRAME_HEADER_BYTES..], &want_payload[..], "chunk frame {i}: payload");
                });
            }
            let n = c.len();
            seq += c.release(n) as u64;
        }
        producer.join().unwrap();
        assert_eq!(ring.0.head.load(Ordering::Relaxed), 3);
        assert_eq!(ring.0.tail.load(Ordering::Relaxed), 3);
    });
}

/// One reply slot of the `hybrid` models: written by one side, read by another, so loom reports
/// any two accesses the orderings do not separate.
struct ReplySlots(Vec<UnsafeCell<u64>>);

// SAFETY: every access goes through loom cells, which check the claim the model makes.
unsafe impl Sync for ReplySlots {}

impl ReplySlots {
    fn new(n: usize) -> Arc<Self> {
        Arc::new(Self((0..n).map(|_| UnsafeCell::new(0)).collect()))
    }
    fn write(&self, pos: usize, value: u64) {
        // SAFETY: checked by loom (see the type).
        self.0[pos].with_mut(|p| unsafe { *p = value });
    }
    fn read(&self, pos: usize) -> u64 {
        // SAFETY: checked by loom (see the type).
        self.0[pos].with(|p| unsafe { *p })
    }
}

/// The words of spec §11.2's output handoff: the kernel's mirror and `direct_upto`, and the
/// host's `output_tail`, which the bridge and (for direct rounds) the kernel both write.
struct HybridOut {
    mirror: AtomicU64,
    direct_upto: AtomicU64,
    output_tail: AtomicU64,
    device: Arc<ReplySlots>,
    host: Arc<ReplySlots>,
}

impl HybridOut {
    /// One bridge step (HY5) with `bridge_step`'s conditions: the mirror (acquire), then
    /// `direct_upto` (relaxed, as `hybrid.rs` loads it), which may be ahead of the mirror; copies what is left and
    /// publishes `output_tail` after the copies. (The copy engine's write lands later than this
    /// store does; the kernel only reads the word, so landing later only delays a direct round.)
    fn bridge_step(&self, copied: &mut u64, honour_upto: bool) {
        let after = |a: u64, b: u64| (a.wrapping_sub(b) as i64) > 0;
        let done = self.mirror.load(Ordering::Acquire);
        let upto = self.direct_upto.load(Ordering::Relaxed);
        if honour_upto && after(upto, *copied) {
            *copied = upto;
        }
        if after(done, *copied) {
            for pos in *copied..done {
                self.host.write(pos as usize, self.device.read(pos as usize));
            }
            self.output_tail.store(done, Ordering::Release);
            *copied = done;
        }
    }

    /// What the host may read (C2): every reply below `output_tail`, whole. Returns the tail.
    fn host_reads(&self, last: u64) -> u64 {
        let tail = self.output_tail.load(Ordering::Acquire);
        assert!(tail >= last, "output_tail moved backwards: {last} -> {tail}");
        for pos in 0..tail {
            assert_eq!(self.host.read(pos as usize), pos + 100, "reply {pos} wrong");
        }
        tail
    }
}

/// (HY3)(HY4)(HY5): a kernel whose rounds of one reply each ask, in turn, for the direct path
/// (`want_direct`), beside a bridge taking two steps and a host reading twice, in every
/// interleaving; then the bridge runs to the end (as a join does) and the host reads all.
/// `honour_upto`: the bridge skips positions below `direct_upto` (the protocol) or ignores it;
/// `kernel_waits`: the kernel goes direct only once the bridge published its rounds (HY3) or
/// whenever a round asks; `upto_first`: the kernel stores `direct_upto` before the mirror's
/// release (HY4) or after it.
/// Every reply must reach the host whole and in order, no slot access may race, and
/// `output_tail` must never move backwards. No thread spins, so loom explores every execution.
fn hybrid_output(want_direct: &'static [bool], honour_upto: bool, kernel_waits: bool, upto_first: bool) {
    let n = want_direct.len() as u64;
    loom::model(move || {
        let w = Arc::new(HybridOut {
            mirror: AtomicU64::new(0),
            direct_upto: AtomicU64::new(0),
            output_tail: AtomicU64::new(0),
            device: ReplySlots::new(n as usize),
            host: ReplySlots::new(n as usize),
        });
        let bridge = {
            let w = Arc::clone(&w);
            thread::spawn(move || {
                let mut copied = 0u64;
                for _ in 0..2 {
                    w.bridge_step(&mut copied, honour_upto);
                }
                copied
            })
        };
        let host = {
            let w = Arc::clone(&w);
            thread::spawn(move || {
                let seen = w.host_reads(0);
                w.host_reads(seen)
            })
        };
        // The kernel's poller (HY3, HY4): a direct round publishes output_tail only; the next
        // bridged round tells the bridge where the direct rounds ended, before its mirror.
        let (mut pending, mut bridged_end) = (true, 0u64);
        let (mut direct_end, mut told) = (0u64, 0u64);
        for pos in 0..n {
            let direct = want_direct[pos as usize];
            if direct && pending && (!kernel_waits || w.output_tail.load(Ordering::Relaxed) == bridged_end) {
                pending = false;
            }
            let end = pos + 1;
            if direct && !pending {
                w.host.write(pos as usize, pos + 100);
                fence(Ordering::SeqCst);
                w.output_tail.store(end, Ordering::Release);
                direct_end = end;
            } else {
                w.device.write(pos as usize, pos + 100);
                fence(Ordering::SeqCst);
                let tell = direct_end != told;
                if tell && upto_first {
                    w.direct_upto.store(direct_end, Ordering::Relaxed);
                }
                w.mirror.store(end, Ordering::Release);
                if tell && !upto_first {
                    w.direct_upto.store(direct_end, Ordering::Relaxed);
                }
                told = direct_end;
                pending = true;
                bridged_end = end;
            }
        }
        let mut copied = bridge.join().unwrap();
        let seen = host.join().unwrap();
        w.bridge_step(&mut copied, honour_upto);
        assert_eq!(w.host_reads(seen), n, "every reply published");
    });
}

/// (HY3–HY5) bridged, then direct, then bridged again: the handoff both ways.
#[test]
fn hybrid_bridged_direct_bridged() {
    hybrid_output(&[false, true, false], true, true, true);
}

/// (HY3–HY5) direct rounds, then a bridged one: the bridge may read the mirror before the
/// bridged round and `direct_upto` after it, so `direct_upto` runs ahead of the mirror value it
/// read, and the step must then neither copy nor publish. (Three rounds: a fourth multiplies
/// the executions past what CI can wait for.)
#[test]
fn hybrid_direct_rounds_then_bridged() {
    hybrid_output(&[true, true, false], true, true, true);
}

/// (HY3–HY5) direct, bridged, direct: the kernel goes direct again only once the bridge has
/// published its round.
#[test]
fn hybrid_direct_bridged_direct() {
    hybrid_output(&[true, false, true], true, true, true);
}

/// A bridge that ignores `direct_upto` copies a direct round's device slot (never written) over
/// the host's reply: loom finds it, so the models above check something.
#[test]
#[should_panic(expected = "wrong")]
fn hybrid_bridge_ignoring_direct_upto_breaks_replies() {
    hybrid_output(&[true, false, true], false, true, true);
}

/// A kernel that goes direct while the bridge still has a round to copy publishes an
/// `output_tail` past a reply that is not in the host's slots yet, and the bridge's later
/// publish moves it back: loom finds it (HY3 is needed). Which of the model's checks fails
/// first (a wrong reply, a backward tail, a final tail short of the end) depends on the
/// execution loom tries first, so any panic counts.
#[test]
#[should_panic]
fn hybrid_kernel_not_waiting_for_the_bridge_publishes_uncopied_replies() {
    hybrid_output(&[false, true, true], true, false, true);
}

/// A kernel that stores `direct_upto` after the mirror lets a bridge see the bridged round's
/// mirror without the direct round's end, and copy the direct round's device slot (never
/// written) over the host's reply: loom finds it (HY4's order is needed).
#[test]
#[should_panic(expected = "wrong")]
fn hybrid_direct_upto_after_the_mirror_breaks_replies() {
    hybrid_output(&[true, false], true, true, false);
}
