//! Ring throughput without a kernel: one thread staging, publishing, popping and releasing 64-byte
//! messages in batches of 1, 64 and 1024; the same through chunks (spec §5.3: slots filled and
//! read in place, one index store per chunk), in the same process as the per-message baseline;
//! and a producer thread streaming to a consumer thread.

use std::hint::{black_box, spin_loop};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringbridge_core::protocol::{FrameHeader, RingConfig};
use ringbridge_core::ring::{Consumer, PopError, Producer, PushError};
use ringbridge_core::transport::{Region, RegionRing};

const MESSAGE: usize = 64;
const CAPACITY: u32 = 1024;
const STREAM_BATCH: u64 = 64;

fn ring() -> (Producer<RegionRing>, Consumer<RegionRing>) {
    let region: Arc<Region> = Region::alloc(RingConfig { capacity: CAPACITY, slot_size: 128 }, RingConfig { capacity: 1, slot_size: 32 })
        .expect("valid ring shape");
    (Producer::new(region.input()), Consumer::new(region.input()))
}

fn header(seq: u64) -> FrameHeader {
    FrameHeader { length: 0, type_id: 1, flags: 0, correlation_id: seq }
}

/// Message `seq`: 64 bytes, its first eight the sequence number.
fn message(seq: u64) -> [u8; MESSAGE] {
    let mut m = [0x5a; MESSAGE];
    m[..8].copy_from_slice(&seq.to_le_bytes());
    m
}

/// One round: stage and publish `batch` messages, then pop and release them all. Returns the
/// sum of the correlation ids read, so the reads cannot be optimised away.
fn round(tx: &mut Producer<RegionRing>, rx: &mut Consumer<RegionRing>, first: u64, batch: u64) -> u64 {
    for seq in first..first + batch {
        tx.stage(header(seq), &message(seq)).expect("a batch fits the ring");
    }
    tx.publish();
    let mut sum = 0;
    for _ in 0..batch {
        sum += rx.pop_with(|h, p| h.correlation_id + u64::from(p[MESSAGE - 1])).expect("a published frame");
    }
    rx.release();
    sum
}

fn single_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("push_pop/single_thread");
    for batch in [1u64, 64, 1024] {
        let (mut tx, mut rx) = ring();
        // Correctness first: one batch arrives whole and in order.
        for seq in 0..batch {
            tx.stage(header(seq), &message(seq)).unwrap();
        }
        tx.publish();
        for seq in 0..batch {
            let (id, bytes) = rx.pop_with(|h, p| (h.correlation_id, p.to_vec())).unwrap();
            assert_eq!((id, bytes.as_slice()), (seq, &message(seq)[..]), "batch {batch}, message {seq}");
        }
        rx.release();

        group.throughput(Throughput::Elements(batch));
        let mut next = batch;
        group.bench_function(BenchmarkId::from_parameter(batch), |b| {
            b.iter(|| {
                let sum = round(&mut tx, &mut rx, next, batch);
                next += batch;
                black_box(sum)
            })
        });
    }
    group.finish();
}

/// One round through chunks: reserve `batch` slots, write each one's sequence number in place,
/// commit; read them in place, release. Returns the sum of the sequence numbers read.
fn chunk_round(tx: &mut Producer<RegionRing>, rx: &mut Consumer<RegionRing>, first: u64, batch: u64) -> u64 {
    let mut w = tx.write_chunk(batch);
    let size = w.slot_size();
    let (a, b) = w.as_mut_slices();
    for (i, slot) in a.chunks_exact_mut(size).chain(b.chunks_exact_mut(size)).enumerate() {
        slot[16..24].copy_from_slice(&(first + i as u64).to_le_bytes());
    }
    w.commit(batch as usize);
    let r = rx.read_chunk(batch);
    let (a, b) = r.as_slices();
    let sum = a.chunks_exact(size).chain(b.chunks_exact(size)).map(|slot| u64::from_le_bytes(slot[16..24].try_into().unwrap())).sum();
    r.release(batch as usize);
    sum
}

fn chunks(c: &mut Criterion) {
    let mut group = c.benchmark_group("push_pop/chunks");
    for batch in [64u64, 1024] {
        let (mut tx, mut rx) = ring();
        {
            let mut w = tx.write_chunk(u64::from(CAPACITY));
            w.stamp(FrameHeader { length: MESSAGE as u32, type_id: 1, flags: 0, correlation_id: 0 });
        }
        // Correctness first: a chunk arrives whole and in order, wrapping the ring.
        for k in 0..3 {
            let first = k * batch;
            assert_eq!(chunk_round(&mut tx, &mut rx, first, batch), (first..first + batch).sum::<u64>(), "batch {batch}, round {k}");
        }
        group.throughput(Throughput::Elements(batch));
        let mut next = 3 * batch;
        group.bench_function(BenchmarkId::from_parameter(batch), |b| {
            b.iter(|| {
                let sum = chunk_round(&mut tx, &mut rx, next, batch);
                next += batch;
                black_box(sum)
            })
        });
    }
    group.finish();
}

/// Streams `messages` from a producer thread to this thread, in publishes of [`STREAM_BATCH`];
/// returns the time from start to the last pop. Fails if a frame arrives out of order.
fn stream(messages: u64) -> Duration {
    let (mut tx, mut rx) = ring();
    let start = Instant::now();
    let producer = thread::spawn(move || {
        let mut seq = 0;
        while seq < messages {
            match tx.stage(header(seq), &message(seq)) {
                Ok(()) => {
                    seq += 1;
                    if seq % STREAM_BATCH == 0 {
                        tx.publish();
                    }
                }
                Err(PushError::Full) => {
                    tx.publish();
                    spin_loop();
                }
                Err(e) => panic!("message {seq}: {e:?}"),
            }
        }
        tx.publish();
    });
    let mut seq = 0;
    while seq < messages {
        match rx.pop_with(|h, p| (h.correlation_id, p[0])) {
            Ok((id, first)) => {
                assert_eq!((id, first), (seq, seq as u8), "message {seq} out of order");
                seq += 1;
                if seq % STREAM_BATCH == 0 {
                    rx.release();
                }
            }
            Err(PopError::Empty) => {
                rx.release();
                spin_loop();
            }
            Err(e) => panic!("message {seq}: {e:?}"),
        }
    }
    rx.release();
    let elapsed = start.elapsed();
    producer.join().expect("producer thread");
    elapsed
}

fn two_threads(c: &mut Criterion) {
    // Correctness first: a stream longer than the ring arrives in order (checked inside).
    stream(u64::from(CAPACITY) * 8);
    let mut group = c.benchmark_group("push_pop/two_threads");
    group.throughput(Throughput::Elements(1));
    group.bench_function("stream_64B", |b| b.iter_custom(stream));
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = single_thread, chunks, two_threads
}
criterion_main!(benches);
