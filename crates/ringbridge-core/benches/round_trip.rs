//! Host ↔ kernel through a `Session` on the cpu backend's `echo` kernel: the latency of one
//! message round trip, and the throughput of a stream of batched sends with replies drained as
//! they come.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringbridge_core::host::Session;
use ringbridge_core::protocol::{FrameHeader, RingConfig};
use ringbridge_core::ring::PopError;

const LIMIT: Duration = Duration::from_secs(10);
const SHAPE: RingConfig = RingConfig { capacity: 1024, slot_size: 128 };
const STREAM: u64 = 4096;

fn session() -> Session {
    Session::launch("cpu", "echo", SHAPE, SHAPE).expect("launch echo on cpu")
}

/// Message `seq`: 64 bytes, its first eight the sequence number.
fn message(seq: u64) -> [u8; 64] {
    let mut m = [0xa5; 64];
    m[..8].copy_from_slice(&seq.to_le_bytes());
    m
}

fn round_trip(c: &mut Criterion) {
    let mut session = session();
    // Correctness first: the echo is the message sent, under its id.
    session.send(2, 7, &message(7), LIMIT).unwrap();
    let (id, bytes) = session.recv_with(LIMIT, |h, p| (h.correlation_id, p.to_vec())).unwrap();
    assert_eq!((id, bytes.as_slice()), (7, &message(7)[..]));

    let payload = message(1);
    c.bench_function("round_trip/echo_64B", |b| {
        b.iter(|| {
            session.send(2, 1, &payload, LIMIT).expect("send");
            black_box(session.recv_with(LIMIT, |h, p| h.correlation_id + u64::from(p[0])).expect("reply"))
        })
    });
    assert_eq!(session.terminate(true, std::time::Duration::from_secs(10)).unwrap().undelivered, 0);
}

/// Sends messages `first..first + count`, staging as many as the ring takes per flush and
/// draining replies as they arrive. Fails on a reply out of order.
fn stream(session: &mut Session, first: u64, count: u64) {
    let end = first + count;
    let (mut sent, mut received) = (first, first);
    let check = |h: FrameHeader, p: &[u8], want: u64| {
        assert_eq!(h.correlation_id, want, "reply {want} out of order");
        assert_eq!(p[..8], want.to_le_bytes(), "reply {want}: payload");
    };
    while received < end {
        while sent < end && session.free_slots(1) > 0 {
            session.stage(2, sent, &message(sent)).expect("a free slot was counted");
            sent += 1;
        }
        session.flush();
        let mut took = false;
        loop {
            match session.try_recv_with(|h, p| check(h, p, received)) {
                Ok(()) => {
                    received += 1;
                    took = true;
                }
                Err(PopError::Empty) => break,
                Err(e) => panic!("reply {received}: {e:?}"),
            }
        }
        if !took && received < sent {
            session.recv_with(LIMIT, |h, p| check(h, p, received)).unwrap_or_else(|e| panic!("reply {received}: {e}"));
            received += 1;
        }
    }
}

fn streaming(c: &mut Criterion) {
    let mut session = session();
    // Correctness first: a stream longer than the ring comes back whole and in order.
    stream(&mut session, 0, STREAM);
    let mut next = STREAM;
    let mut group = c.benchmark_group("round_trip/stream");
    group.throughput(Throughput::Elements(STREAM));
    group.bench_function("echo_64B", |b| {
        b.iter(|| {
            stream(&mut session, next, STREAM);
            next += STREAM;
        })
    });
    group.finish();
    assert_eq!(session.terminate(true, std::time::Duration::from_secs(10)).unwrap().undelivered, 0);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    targets = round_trip, streaming
}
criterion_main!(benches);
