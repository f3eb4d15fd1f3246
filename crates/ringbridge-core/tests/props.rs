//! Property tests of one ring: random capacities, slot sizes, message sizes, batch sizes and
//! schedules, single-threaded against a model and across two threads. Every frame arrives once,
//! whole and in order.

use std::collections::VecDeque;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use ringbridge_core::protocol::{FrameHeader, RingConfig, FRAME_HEADER_BYTES};
use ringbridge_core::ring::{Consumer, PopError, Producer, PushError};
use ringbridge_core::transport::Region;
use ringbridge_core::Ordering;

fn region(capacity: u32, slot_size: u32) -> Arc<Region> {
    Region::alloc(RingConfig { capacity, slot_size }, RingConfig { capacity: 1, slot_size: 32 }).expect("valid ring shape")
}

/// Message `seq` of `len` bytes; every byte depends on both.
fn payload(seq: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seq as u8).wrapping_mul(157) ^ (i as u8).wrapping_mul(31) ^ (seq >> 8) as u8).collect()
}

fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

fn header(seq: u64, len: usize) -> FrameHeader {
    // The type carries the payload's checksum so a torn or mixed-up frame cannot pass.
    FrameHeader { length: 0, type_id: checksum(&payload(seq, len)) as u16, flags: 0, correlation_id: seq }
}

/// Checks a received frame against message `seq` of `len` bytes.
fn check(seq: u64, len: usize, h: FrameHeader, bytes: &[u8]) -> Result<(), TestCaseError> {
    prop_assert_eq!(h.correlation_id, seq, "lost, duplicated or reordered frame");
    prop_assert_eq!(h.length as usize, len, "message {}: length", seq);
    prop_assert_eq!(h.type_id, checksum(bytes) as u16, "message {}: checksum", seq);
    prop_assert_eq!(bytes, &payload(seq, len)[..], "message {}: payload", seq);
    Ok(())
}

#[derive(Clone, Debug)]
enum Op {
    /// Stage `count` frames; a payload length is `size % (max_payload + 2)`, so now and then one
    /// is a byte too large.
    Stage {
        size: u16,
        count: u8,
    },
    Publish,
    Pop {
        count: u8,
    },
    Release,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (any::<u16>(), 1..=8u8).prop_map(|(size, count)| Op::Stage { size, count }),
        2 => Just(Op::Publish),
        3 => (1..=8u8).prop_map(|count| Op::Pop { count }),
        2 => Just(Op::Release),
    ]
}

fn shape() -> impl Strategy<Value = (u32, u32)> {
    (0..=6u32, 5..=9u32).prop_map(|(c, s)| (1 << c, 1 << s))
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases: if cfg!(miri) { 2 } else { cases }, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config(512))]

    /// One thread plays both ends in a random order; a model predicts every Full, Empty and
    /// TooLarge, the published tail and the released head.
    #[test]
    fn random_schedule_matches_the_model(
        (capacity, slot_size) in shape(),
        ops in prop::collection::vec(op(), 1..200),
    ) {
        let region = region(capacity, slot_size);
        let mut tx = Producer::new(region.input());
        let mut rx = Consumer::new(region.input());
        let max = slot_size as usize - FRAME_HEADER_BYTES;
        let cap = u64::from(capacity);
        // Model: lengths of staged-or-published, unconsumed frames, oldest first, and four counters.
        let mut in_flight: VecDeque<(u64, usize)> = VecDeque::new();
        let (mut next, mut published, mut consumed, mut released) = (0u64, 0u64, 0u64, 0u64);
        for op in ops {
            match op {
                Op::Stage { size, count } => {
                    for k in 0..u64::from(count) {
                        let len = (usize::from(size) + k as usize * 7) % (max + 2);
                        let result = tx.stage(header(next, len), &payload(next, len));
                        if len > max {
                            prop_assert_eq!(result, Err(PushError::TooLarge { length: len, max }));
                        } else if next - released == cap {
                            prop_assert_eq!(result, Err(PushError::Full));
                        } else {
                            prop_assert_eq!(result, Ok(()));
                            in_flight.push_back((next, len));
                            next += 1;
                        }
                    }
                }
                Op::Publish => {
                    tx.publish();
                    published = next;
                }
                Op::Pop { count } => {
                    for _ in 0..count {
                        let got = rx.pop_with(|h, p| (h, p.to_vec()));
                        if consumed == published {
                            prop_assert_eq!(got, Err(PopError::Empty));
                        } else {
                            let (seq, len) = in_flight.pop_front().expect("model holds the frame");
                            let (h, bytes) = got.map_err(|e| TestCaseError::fail(format!("message {seq}: {e:?}")))?;
                            check(seq, len, h, &bytes)?;
                            consumed += 1;
                        }
                    }
                }
                Op::Release => {
                    rx.release();
                    released = consumed;
                }
            }
            prop_assert_eq!(tx.staged(), next - published);
            prop_assert_eq!(rx.unreleased(), consumed - released);
            let cb = region.control();
            prop_assert_eq!(cb.input_tail.value.load(Ordering::Acquire), published);
            prop_assert_eq!(cb.input_head.value.load(Ordering::Acquire), released);
        }
        // Drain: everything published and not yet consumed is still there, in order.
        tx.publish();
        while let Some((seq, len)) = in_flight.pop_front() {
            let (h, bytes) = rx.pop_with(|h, p| (h, p.to_vec()))
                .map_err(|e| TestCaseError::fail(format!("message {seq} lost: {e:?}")))?;
            check(seq, len, h, &bytes)?;
        }
        prop_assert_eq!(rx.pop_with(|_, _| ()), Err(PopError::Empty));
    }
}

proptest! {
    #![proptest_config(config(96))]

    /// A producer thread and a consumer thread, each batching by its own random pattern.
    #[test]
    fn two_threads_lose_duplicate_and_reorder_nothing(
        (capacity, slot_size) in shape(),
        messages in 1..3000u64,
        publish_every in prop::collection::vec(1..=16u64, 1..8),
        release_every in prop::collection::vec(1..=16u64, 1..8),
        size_seed in any::<u64>(),
    ) {
        let messages = if cfg!(miri) { messages.min(50) } else { messages };
        let region = region(capacity, slot_size);
        let max = slot_size as usize - FRAME_HEADER_BYTES;
        let len_of = move |seq: u64| ((seq ^ size_seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) as usize % (max + 1);
        let limit = Duration::from_secs(10);
        let mut tx = Producer::new(region.input());
        let producer = thread::spawn(move || {
            let deadline = Instant::now() + limit;
            let mut seq = 0;
            for batch in publish_every.iter().cycle() {
                if seq == messages {
                    break;
                }
                let end = (seq + batch).min(messages);
                while seq < end {
                    match tx.stage(header(seq, len_of(seq)), &payload(seq, len_of(seq))) {
                        Ok(()) => seq += 1,
                        Err(PushError::Full) => {
                            // Publish what we have, or the consumer waits on us forever.
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
        let mut rx = Consumer::new(region.input());
        let deadline = Instant::now() + limit;
        let mut seq = 0;
        let mut batches = release_every.iter().cycle();
        let mut until_release = *batches.next().unwrap();
        while seq < messages {
            match rx.pop_with(|h, p| (h, p.to_vec())) {
                Ok((h, bytes)) => {
                    check(seq, len_of(seq), h, &bytes)?;
                    seq += 1;
                    until_release -= 1;
                    if until_release == 0 {
                        rx.release();
                        until_release = *batches.next().unwrap();
                    }
                }
                Err(PopError::Empty) => {
                    // Hand back what we hold, or a full ring stalls the producer.
                    rx.release();
                    prop_assert!(Instant::now() < deadline, "consumer timed out waiting for message {}", seq);
                    thread::yield_now();
                }
                Err(e) => return Err(TestCaseError::fail(format!("message {seq}: {e:?}"))),
            }
        }
        rx.release();
        producer.join().map_err(|_| TestCaseError::fail("producer thread panicked"))?;
        prop_assert_eq!(rx.pop_with(|_, _| ()), Err(PopError::Empty), "a frame past the last message");
        prop_assert_eq!(region.control().input_head.value.load(Ordering::Acquire), messages);
    }
}
