//! The chunk API (spec §5.3) end to end through an echo kernel: `SendHalf::write_chunk` /
//! `RecvHalf::read_chunk`, slots filled and read in place, one index store per chunk.
//!
//! On the cpu backend (runs everywhere): random chunk sizes that wrap (proptest) over
//! capacities 2, 4 and 16; a chunk reserved and never committed; a reply chunk held while more
//! replies arrive; terminate with chunks in flight. On the GPU (ignored without `--ignored`;
//! `scripts/gpu-suite.sh reliability` runs them): `RINGBRIDGE_CHUNK_MESSAGES` (default 10^7)
//! checksummed messages per transport, and capacities 2 and 4 on `dma`.
//!
//! Every reply is checked in full: its position (correlation id and the payload's first word),
//! a checksum of it, its length and flags. So a lost, duplicated, reordered, stale or torn
//! reply fails with the position it was found at. Every wait is bounded.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use ringbridge_core::backend::LaunchSpec;
use ringbridge_core::host::Session;
use ringbridge_core::protocol::{FrameHeader, RingConfig, FRAME_HEADER_BYTES};

const STALL: Duration = Duration::from_secs(30);

fn launch(backend: &str, transport: &str, capacity: u32, slot: u32) -> Session {
    let spec = LaunchSpec { transport, ..LaunchSpec::new(backend, "echo") };
    let ring = RingConfig { capacity, slot_size: slot };
    Session::launch_spec(&spec, ring, ring).unwrap_or_else(|e| panic!("launch {backend}/{transport}: {e}"))
}

fn check_of(pos: u64) -> u64 {
    pos.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xc0ff_ee00_1234_5678
}

/// Writes message `pos` into a whole slot: header, position, checksum.
fn write_message(slot: &mut [u8], pos: u64) {
    let len = slot.len() - FRAME_HEADER_BYTES;
    FrameHeader { length: len as u32, type_id: 3, flags: 0, correlation_id: pos }.write_to(slot);
    slot[16..24].copy_from_slice(&pos.to_le_bytes());
    slot[24..32].copy_from_slice(&check_of(pos).to_le_bytes());
}

/// Checks that a whole reply slot is the echo of message `pos`.
fn check_reply(slot: &[u8], pos: u64) {
    let h = FrameHeader::read_from(slot);
    let word = |at: usize| u64::from_le_bytes(slot[at..at + 8].try_into().unwrap());
    let len = (slot.len() - FRAME_HEADER_BYTES) as u32;
    assert!(
        h.correlation_id == pos && h.length == len && h.flags == 0 && h.type_id == 3 && word(16) == pos && word(24) == check_of(pos),
        "reply at position {pos}: header {h:?}, payload words {} / {:#x}",
        word(16),
        word(24)
    );
}

/// The `i`th whole slot of a chunk's two runs.
fn nth<'s>(a: &'s [u8], b: &'s [u8], size: usize, i: usize) -> &'s [u8] {
    let at = i * size;
    if at < a.len() {
        &a[at..at + size]
    } else {
        &b[at - a.len()..at - a.len() + size]
    }
}

/// Writes messages `first..` into every slot of `c` and commits them all; returns how many.
fn fill_and_commit(mut c: ringbridge_core::host::SendChunk<'_>, first: u64) -> u64 {
    let size = c.slot_size();
    let (a, b) = c.as_mut_slices();
    for (i, slot) in a.chunks_exact_mut(size).chain(b.chunks_exact_mut(size)).enumerate() {
        write_message(slot, first + i as u64);
    }
    let n = c.len();
    c.commit(n) as u64
}

/// Checks that `c` holds the replies to messages `first..` and releases them all; returns how many.
fn check_and_release(c: ringbridge_core::host::ReplyChunk<'_>, first: u64) -> u64 {
    let size = c.slot_size();
    let (a, b) = c.as_slices();
    for i in 0..c.len() {
        check_reply(nth(a, b, size, i), first + i as u64);
    }
    let n = c.len();
    c.release(n) as u64
}

/// Streams `total` messages from a producer thread through chunks of at most `chunk` slots
/// (the sizes cycle through `sizes`, each capped by `chunk`), the consumer releasing at most
/// `take` replies a chunk, everything checked.
fn stream(s: &mut Session, total: u64, sizes: &[u64], take: u64) {
    let (mut tx, mut rx) = s.halves();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let (mut sent, mut k) = (0u64, 0usize);
            let mut last = Instant::now();
            while sent < total {
                let want = sizes[k % sizes.len()].clamp(1, total - sent);
                let c = tx.write_chunk(want);
                if c.is_empty() {
                    assert!(last.elapsed() < STALL, "no room for {STALL:?} at {sent}");
                    std::thread::yield_now();
                    continue;
                }
                sent += fill_and_commit(c, sent);
                k += 1;
                last = Instant::now();
            }
        });
        let mut got = 0u64;
        let mut last = Instant::now();
        while got < total {
            let c = rx.read_chunk(take);
            if c.is_empty() {
                assert!(last.elapsed() < STALL, "no reply for {STALL:?} at {got}");
                std::thread::yield_now();
                continue;
            }
            got += check_and_release(c, got);
            last = Instant::now();
        }
    });
    assert_eq!(s.pending_replies(), 0, "a reply beyond the {total} sent");
}

fn stream_and_drain(backend: &str, transport: &str, capacity: u32, slot: u32, total: u64, sizes: &[u64], take: u64) {
    let mut s = launch(backend, transport, capacity, slot);
    stream(&mut s, total, sizes, take);
    let t = s.terminate(true, STALL).expect("drain");
    assert_eq!(t.undelivered, 0, "messages left undelivered");
    assert!(t.replies.is_empty(), "{} replies beyond the {total} sent", t.replies.len());
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 2 } else { 24 },
        // Miri isolates file access.
        failure_persistence: if cfg!(miri) { None } else { Some(Box::new(proptest::test_runner::FileFailurePersistence::SourceParallel("proptest-regressions"))) },
        ..ProptestConfig::default()
    })]

    /// Random chunk sizes, wrapping every ring, on capacities 2, 4 and 16: no loss,
    /// duplication, reordering or tearing.
    #[test]
    fn random_wrapping_chunks_arrive_whole_and_in_order(
        capacity in prop::sample::select(vec![2u32, 4, 16]),
        sizes in prop::collection::vec(1u64..40, 1..12),
        take in 1u64..20,
        total in 1u64..(if cfg!(miri) { 60 } else { 3000 }),
    ) {
        stream_and_drain("cpu", "auto", capacity, 64, total, &sizes, take);
    }
}

#[test]
fn cpu_a_million_messages_through_capacities_2_and_4() {
    // RINGBRIDGE_CHUNK_CPU_MESSAGES cuts it for the sanitizer runs (ThreadSanitizer in CI).
    let env = std::env::var("RINGBRIDGE_CHUNK_CPU_MESSAGES").ok().and_then(|v| v.parse().ok());
    let total = if cfg!(miri) { 300 } else { env.unwrap_or(1_000_000) };
    for capacity in [2, 4] {
        stream_and_drain("cpu", "auto", capacity, 32, total, &[capacity as u64], u64::MAX);
    }
}

/// Streams `total` messages with the halves' waits instead of spinning: the producer waits for
/// room (`write_chunk_within`), the consumer for replies (`read_chunk_within`), both on the
/// session's one doorbell and `host_waiting` word at once. Everything checked, every wait bounded.
fn stream_waiting(s: &mut Session, total: u64, chunk: u64) {
    let (mut tx, mut rx) = s.halves();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut sent = 0u64;
            while sent < total {
                let c = tx.write_chunk_within(chunk.min(total - sent), STALL).unwrap_or_else(|e| panic!("room at {sent}: {e}"));
                assert!(!c.is_empty(), "write_chunk_within returned no slot at {sent}");
                sent += fill_and_commit(c, sent);
            }
        });
        let mut got = 0u64;
        while got < total {
            let c = rx.read_chunk_within(u64::MAX, STALL).unwrap_or_else(|e| panic!("replies at {got}: {e}"));
            assert!(!c.is_empty(), "read_chunk_within returned no reply at {got}");
            got += check_and_release(c, got);
        }
    });
}

#[test]
fn cpu_chunks_that_wait_for_room_and_replies_lose_nothing() {
    let env = std::env::var("RINGBRIDGE_CHUNK_CPU_MESSAGES").ok().and_then(|v| v.parse().ok());
    let total = if cfg!(miri) { 200 } else { env.unwrap_or(1_000_000) };
    for (capacity, chunk) in [(2u32, 2u64), (4, 3), (64, 64)] {
        let mut s = launch("cpu", "auto", capacity, 32);
        stream_waiting(&mut s, total, chunk);
        let t = s.terminate(true, STALL).expect("drain");
        assert_eq!(t.undelivered, 0);
        assert!(t.replies.is_empty());
    }
}

#[test]
fn chunk_waits_time_out_and_report_a_terminated_kernel() {
    use ringbridge_core::protocol::TERMINATE_ABANDON;
    use ringbridge_core::Error;
    let mut s = launch("cpu", "auto", 4, 64);
    let control = std::sync::Arc::clone(s.region());
    {
        let (mut tx, mut rx) = s.halves();
        // Nothing sent: no reply comes.
        assert!(matches!(rx.read_chunk_within(4, Duration::from_millis(30)), Err(Error::Timeout { .. })));
        // A paused kernel takes nothing: once the ring is full, no room comes.
        control.control().active.store(0, ringbridge_core::Ordering::Release);
        let mut c = tx.write_chunk(4);
        assert_eq!(c.len(), 4);
        let size = c.slot_size();
        let (a, _) = c.as_mut_slices();
        for (i, slot) in a.chunks_exact_mut(size).enumerate() {
            write_message(slot, i as u64);
        }
        c.commit(4);
        assert!(matches!(tx.write_chunk_within(1, Duration::from_millis(30)), Err(Error::Timeout { .. })));
        // No slot wanted: no wait.
        assert!(tx.write_chunk_within(0, Duration::ZERO).expect("no wait").is_empty());
        // Resumed, the kernel answers all four and frees their slots.
        control.control().active.store(1, ringbridge_core::Ordering::Release);
        let mut got = 0u64;
        while got < 4 {
            let r = rx.read_chunk_within(4, STALL).expect("replies");
            let n = r.len();
            got += r.release(n) as u64;
        }
        assert!(!tx.write_chunk_within(4, STALL).expect("room").is_empty());
        // Abandoned, the kernel ends: a wait for replies reports it instead of timing out.
        control.control().terminate.store(TERMINATE_ABANDON, ringbridge_core::Ordering::Release);
        assert!(matches!(rx.read_chunk_within(1, STALL), Err(Error::Closed)));
    }
    let _ = s.terminate(false, STALL);
}

#[test]
fn a_chunk_reserved_and_never_committed_sends_nothing() {
    let mut s = launch("cpu", "auto", 8, 64);
    {
        let (mut tx, _) = s.halves();
        let mut c = tx.write_chunk(5);
        assert_eq!(c.len(), 5);
        let size = c.slot_size();
        let (a, _) = c.as_mut_slices();
        for (i, slot) in a.chunks_exact_mut(size).enumerate() {
            write_message(slot, 1000 + i as u64);
        }
        // Dropped uncommitted.
    }
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(s.pending_replies(), 0, "an uncommitted chunk was sent");
    let tail = s.region().control().input_tail.value.load(ringbridge_core::Ordering::Acquire);
    assert_eq!(tail, 0, "an uncommitted chunk moved the input tail");
    // The next reservation hands out the same slots: what is committed now is what arrives.
    stream(&mut s, 20, &[3], 2);
    let t = s.terminate(true, STALL).unwrap();
    assert_eq!(t.undelivered, 0);
    assert!(t.replies.is_empty(), "the kernel answered more than the committed messages");
}

#[test]
fn a_reply_chunk_held_while_more_arrive_stays_intact() {
    let mut s = launch("cpu", "auto", 16, 64);
    let (mut tx, mut rx) = s.halves();
    let send = |tx: &mut ringbridge_core::host::SendHalf<'_>, from: u64, n: u64| {
        let mut c = tx.write_chunk(n);
        assert_eq!(c.len() as u64, n, "room for {n}");
        let size = c.slot_size();
        let (a, b) = c.as_mut_slices();
        for (i, slot) in a.chunks_exact_mut(size).chain(b.chunks_exact_mut(size)).enumerate() {
            write_message(slot, from + i as u64);
        }
        c.commit(n as usize);
    };
    send(&mut tx, 0, 6);
    let deadline = Instant::now() + STALL;
    let held = loop {
        let c = rx.read_chunk(4);
        if c.len() == 4 {
            break c;
        }
        assert!(Instant::now() < deadline, "no replies");
        std::thread::yield_now();
    };
    // More arrive while the chunk is held: 6 - 4 + 10 replies fit the 12 other slots.
    send(&mut tx, 6, 10);
    std::thread::sleep(Duration::from_millis(50));
    let size = held.slot_size();
    let (a, b) = held.as_slices();
    for i in 0..4 {
        check_reply(nth(a, b, size, i), i as u64);
    }
    // Only the 12 slots not held were writable: the kernel waits for room, nothing overwrote.
    held.release(4);
    let mut got = 4u64;
    while got < 16 {
        let c = rx.read_chunk(u64::MAX);
        let size = c.slot_size();
        let (a, b) = c.as_slices();
        for i in 0..c.len() {
            check_reply(nth(a, b, size, i), got + i as u64);
        }
        let n = c.len();
        got += c.release(n) as u64;
        assert!(Instant::now() < deadline, "stalled at {got}");
    }
}

#[test]
fn terminate_with_chunks_in_flight_delivers_or_reports_every_message() {
    for drain in [true, false] {
        let mut s = launch("cpu", "auto", 64, 64);
        {
            let (mut tx, _) = s.halves();
            for round in 0..3u64 {
                let mut c = tx.write_chunk(20);
                let size = c.slot_size();
                let (a, b) = c.as_mut_slices();
                for (i, slot) in a.chunks_exact_mut(size).chain(b.chunks_exact_mut(size)).enumerate() {
                    write_message(slot, round * 20 + i as u64);
                }
                c.commit(20);
            }
            // A fourth chunk reserved and left uncommitted at terminate.
            let _pending = tx.write_chunk(4);
        }
        let t = s.terminate(drain, STALL).expect("terminate");
        // Every committed message is answered, in order, or reported undelivered: none lost.
        let replies = t.replies.len() as u64;
        assert_eq!(replies + t.undelivered, 60, "drain={drain}: {replies} replies + {} undelivered", t.undelivered);
        if drain {
            assert_eq!(t.undelivered, 0);
        }
        for (i, (h, p)) in t.replies.iter().enumerate() {
            let mut slot = vec![0u8; FRAME_HEADER_BYTES + p.len()];
            h.write_to(&mut slot);
            slot[FRAME_HEADER_BYTES..].copy_from_slice(p);
            check_reply(&slot, i as u64);
        }
    }
}

// ---- GPU -----------------------------------------------------------------------------------

fn gpu_messages() -> u64 {
    std::env::var("RINGBRIDGE_CHUNK_MESSAGES").ok().and_then(|v| v.trim().replace('_', "").parse().ok()).unwrap_or(10_000_000)
}

fn require_gpu() {
    if let Err(e) = ringbridge_core::backend::cuda::runtime() {
        panic!("this test needs a CUDA device: {e}");
    }
}

#[test]
#[ignore = "needs a GPU: scripts/gpu-suite.sh reliability runs it with --ignored"]
fn gpu_chunks_checksummed_per_transport() {
    require_gpu();
    let n = gpu_messages();
    for transport in ["hybrid", "dma", "mapped", "managed"] {
        let total = if transport == "managed" { n / 10 } else { n };
        let t = Instant::now();
        stream_and_drain("cuda", transport, 1 << 16, 64, total, &[4096, 65_536, 777], u64::MAX);
        println!("CHUNKS ok {transport} cap 65536: {total} messages in {:.2} s", t.elapsed().as_secs_f64());
    }
}

#[test]
#[ignore = "needs a GPU: scripts/gpu-suite.sh reliability runs it with --ignored"]
fn gpu_chunks_small_rings() {
    require_gpu();
    let n = (gpu_messages() / 20).max(1000);
    for transport in ["hybrid", "dma", "mapped"] {
        for capacity in [2u32, 4] {
            let t = Instant::now();
            stream_and_drain("cuda", transport, capacity, 64, n, &[1, 3, 2], 3);
            println!("CHUNKS ok {transport} cap {capacity}: {n} messages in {:.2} s", t.elapsed().as_secs_f64());
        }
    }
}
