//! `MessageQueue`: each backpressure policy, close, and FIFO order under concurrent producers.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ringbridge_core::queue::{Backpressure, MessageQueue, PushOutcome};
use ringbridge_core::{Error, ErrorCode};

const LIMIT: Duration = Duration::from_secs(10);
const SHORT: Duration = Duration::from_millis(50);

fn queue(capacity: usize, policy: Backpressure) -> MessageQueue<u32> {
    MessageQueue::new(capacity, policy).expect("capacity is at least 1")
}

fn fill(q: &MessageQueue<u32>, items: std::ops::Range<u32>) {
    for item in items {
        assert_eq!(q.push(item, LIMIT).unwrap(), PushOutcome::Queued, "item {item}");
    }
}

fn pop_all(q: &MessageQueue<u32>) -> Vec<u32> {
    std::iter::from_fn(|| q.pop(Duration::ZERO)).collect()
}

#[test]
fn block_times_out_with_the_item_returned() {
    let q = queue(2, Backpressure::Block);
    fill(&q, 0..2);
    let start = Instant::now();
    assert_eq!(q.push(2, SHORT).unwrap(), PushOutcome::Rejected(2));
    assert!(start.elapsed() >= SHORT, "gave up after {:?}", start.elapsed());
    assert_eq!(q.dropped(), 0, "a timed-out item is returned, not dropped");
    assert_eq!(pop_all(&q), [0, 1]);
}

#[test]
fn block_waits_until_a_consumer_makes_room() {
    let q = Arc::new(queue(2, Backpressure::Block));
    fill(&q, 0..2);
    let consumer = {
        let q = Arc::clone(&q);
        thread::spawn(move || {
            thread::sleep(SHORT);
            q.pop(LIMIT)
        })
    };
    let start = Instant::now();
    assert_eq!(q.push(2, LIMIT).unwrap(), PushOutcome::Queued);
    assert!(start.elapsed() >= SHORT / 2, "pushed into a full queue after {:?}", start.elapsed());
    assert_eq!(consumer.join().unwrap(), Some(0));
    assert_eq!(pop_all(&q), [1, 2]);
}

#[test]
fn reject_returns_the_item_and_keeps_the_queue() {
    let q = queue(3, Backpressure::Reject);
    fill(&q, 0..3);
    assert_eq!(q.push(3, LIMIT).unwrap(), PushOutcome::Rejected(3));
    assert_eq!(q.push(4, LIMIT).unwrap(), PushOutcome::Rejected(4));
    assert_eq!(q.len(), 3);
    assert_eq!(q.dropped(), 0);
    assert_eq!(pop_all(&q), [0, 1, 2]);
    assert_eq!(q.push(5, LIMIT).unwrap(), PushOutcome::Queued, "room again after popping");
}

#[test]
fn drop_oldest_counts_and_returns_each_dropped_item() {
    let q = queue(3, Backpressure::DropOldest);
    fill(&q, 0..3);
    assert_eq!(q.push(3, LIMIT).unwrap(), PushOutcome::QueuedDroppedOldest(0));
    assert_eq!(q.push(4, LIMIT).unwrap(), PushOutcome::QueuedDroppedOldest(1));
    assert_eq!(q.dropped(), 2);
    assert_eq!(q.len(), 3);
    assert_eq!(pop_all(&q), [2, 3, 4]);
}

#[test]
fn drop_newest_counts_and_returns_each_dropped_item() {
    let q = queue(3, Backpressure::DropNewest);
    fill(&q, 0..3);
    assert_eq!(q.push(3, LIMIT).unwrap(), PushOutcome::DroppedNewest(3));
    assert_eq!(q.push(4, LIMIT).unwrap(), PushOutcome::DroppedNewest(4));
    assert_eq!(q.dropped(), 2);
    assert_eq!(pop_all(&q), [0, 1, 2]);
}

#[test]
fn close_returns_the_remaining_items_and_refuses_more() {
    let q = queue(4, Backpressure::Block);
    fill(&q, 0..3);
    assert_eq!(q.pop(LIMIT), Some(0));
    assert_eq!(q.close(), [1, 2]);
    assert!(q.is_empty());
    let err = q.push(9, LIMIT).expect_err("push after close");
    assert!(matches!(err, Error::Closed));
    assert_eq!(err.code(), ErrorCode::Closed);
    let start = Instant::now();
    assert_eq!(q.pop(LIMIT), None);
    assert!(start.elapsed() < LIMIT / 2, "pop of a closed, empty queue waited");
}

#[test]
fn close_wakes_blocked_pushers_and_poppers() {
    let full = Arc::new(queue(1, Backpressure::Block));
    fill(&full, 0..1);
    let pusher = {
        let q = Arc::clone(&full);
        thread::spawn(move || q.push(1, LIMIT).map_err(|e| e.code()))
    };
    let empty = Arc::new(queue(1, Backpressure::Block));
    let popper = {
        let q = Arc::clone(&empty);
        thread::spawn(move || q.pop(LIMIT))
    };
    thread::sleep(SHORT);
    let start = Instant::now();
    assert_eq!(full.close(), [0]);
    assert_eq!(empty.close(), Vec::<u32>::new());
    assert_eq!(pusher.join().unwrap(), Err(ErrorCode::Closed));
    assert_eq!(popper.join().unwrap(), None);
    assert!(start.elapsed() < LIMIT / 2, "waiters were not woken by close");
}

#[test]
fn four_producers_keep_their_own_order_and_lose_nothing() {
    let per_producer: u32 = if cfg!(miri) { 50 } else { 20_000 };
    let q = Arc::new(queue(16, Backpressure::Block));
    let producers: Vec<_> = (0..4u32)
        .map(|p| {
            let q = Arc::clone(&q);
            thread::spawn(move || {
                for seq in 0..per_producer {
                    let item = p << 24 | seq;
                    match q.push(item, LIMIT) {
                        Ok(PushOutcome::Queued) => {}
                        other => panic!("producer {p}, item {seq}: {other:?}"),
                    }
                }
            })
        })
        .collect();
    let mut next = [0u32; 4];
    for n in 0..4 * per_producer {
        let item = q.pop(LIMIT).unwrap_or_else(|| panic!("timed out waiting for item {n}"));
        let (p, seq) = ((item >> 24) as usize, item & 0xff_ffff);
        assert_eq!(seq, next[p], "producer {p}: item {seq} out of order or duplicated");
        next[p] += 1;
    }
    for producer in producers {
        producer.join().unwrap();
    }
    assert_eq!(next, [per_producer; 4]);
    assert!(q.is_empty());
    assert_eq!(q.dropped(), 0);
}

#[test]
fn zero_capacity_and_unknown_policy_names_are_invalid_arguments() {
    let err = MessageQueue::<u32>::new(0, Backpressure::Block).err().expect("capacity 0");
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    for (name, policy) in [
        ("block", Backpressure::Block),
        ("reject", Backpressure::Reject),
        ("drop-oldest", Backpressure::DropOldest),
        ("drop-newest", Backpressure::DropNewest),
    ] {
        assert_eq!(Backpressure::parse(name).unwrap(), policy);
    }
    for name in ["", "Block", "drop_oldest", "dropOldest"] {
        assert_eq!(Backpressure::parse(name).unwrap_err().code(), ErrorCode::InvalidArgument, "{name:?}");
    }
}
