//! GPU figures of the CUDA backend from Rust, one `name value unit` line each, to set beside
//! `ringbench.cu` (the raw CUDA baseline) run in the same GPU session. Not criterion: each
//! figure is a long, checked run on a device criterion cannot see. Without a GPU it prints a
//! skip line and exits 0 (`cargo test --benches` runs it in CI as a smoke test).

use std::time::{Duration, Instant};

use ringbridge_core::backend::cuda::{runtime, Shape};
use ringbridge_core::backend::LaunchSpec;
use ringbridge_core::host::Session;
use ringbridge_core::protocol::{FrameHeader, RingConfig};

const LIMIT: Duration = Duration::from_secs(30);

/// One echo kernel (`stages` 1), or a route of `stages` echo kernels on the GPU, every ring
/// of the same shape.
fn session(stages: usize, transport: &str, ring: RingConfig, shape: Option<Shape>) -> Session {
    let spec = LaunchSpec { transport, shape, ..LaunchSpec::new("cuda", "echo") };
    if stages == 1 {
        return Session::launch_spec(&spec, ring, ring).unwrap_or_else(|e| panic!("launch on {transport}: {e}"));
    }
    let specs = vec![spec; stages];
    Session::launch_route(&specs, &vec![ring; stages + 1]).unwrap_or_else(|e| panic!("route of {stages} on {transport}: {e}")).0
}

fn label(stages: usize, transport: &str) -> String {
    if stages == 1 {
        transport.to_owned()
    } else {
        format!("route{stages}_{transport}")
    }
}

fn pct(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

/// One 64 B message at a time: send, wait for its reply.
fn round_trip(stages: usize, transport: &str, iters: usize) {
    let ring = RingConfig { capacity: 64, slot_size: 64 };
    round_trip_on(session(stages, transport, ring, None), &label(stages, transport), iters);
}

/// [`round_trip`] through a session launched by the caller, printed under `name`.
fn round_trip_on(mut s: Session, name: &str, iters: usize) {
    let transport = name;
    let payload = [7u8; 48];
    let mut us = Vec::with_capacity(iters);
    for i in 0..iters + 1000 {
        let t = Instant::now();
        s.try_send(1, i as u64, &payload).expect("ring has room");
        let id = loop {
            if let Ok(id) = s.try_recv_with(|h, p| {
                assert_eq!(p, &payload[..]);
                h.correlation_id
            }) {
                break id;
            }
            assert!(t.elapsed() < LIMIT, "{transport}: no reply to {i}");
            std::hint::spin_loop();
        };
        assert_eq!(id, i as u64);
        if i >= 1000 {
            us.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    us.sort_by(f64::total_cmp);
    println!("rust_rtt_{name}_p50 {:.2} us", pct(&us, 0.5));
    println!("rust_rtt_{name}_p99 {:.2} us", pct(&us, 0.99));
    s.terminate(true, LIMIT).unwrap();
}

/// Streams `total` messages of `slot - 16` payload bytes, written and read in place (the
/// producer writes only the header and a sequence number, as a zero-copy producer would; the
/// transport still moves whole frames), the producer and the consumer on two threads; returns
/// messages per second.
fn stream(stages: usize, transport: &str, capacity: u32, slot: u32, total: u64, shape: Option<Shape>) -> f64 {
    let ring = RingConfig { capacity, slot_size: slot };
    stream_on(session(stages, transport, ring, shape), transport, slot, total)
}

/// [`stream`] through a session launched by the caller.
fn stream_on(mut s: Session, transport: &str, slot: u32, total: u64) -> f64 {
    let len = slot as usize - 16;
    let start = Instant::now();
    {
        let (mut tx, mut rx) = s.halves();
        std::thread::scope(|scope| {
            scope.spawn(move || {
                let mut sent = 0u64;
                let mut last = Instant::now();
                while sent < total {
                    let n = tx.free_slots(u64::MAX).min(total - sent);
                    for _ in 0..n {
                        tx.stage_with(1, sent, |area| {
                            area[..8].copy_from_slice(&sent.to_le_bytes());
                            len
                        })
                        .unwrap();
                        sent += 1;
                    }
                    tx.flush();
                    if n > 0 {
                        last = Instant::now();
                    } else {
                        assert!(last.elapsed() < LIMIT, "{transport}: no room for {LIMIT:?} at {sent}");
                        std::hint::spin_loop();
                    }
                }
            });
            let mut got = 0u64;
            let mut last = Instant::now();
            while got < total {
                let mut bad = false;
                let taken = rx
                    .recv_batch_with(u64::MAX, |h, p| {
                        bad |= h.correlation_id != got || p.len() != len || p[..8] != got.to_le_bytes();
                        got += 1;
                    })
                    .unwrap();
                assert!(!bad, "{transport}: a reply before {got} is out of order or wrong");
                if taken > 0 {
                    last = Instant::now();
                } else {
                    assert!(last.elapsed() < LIMIT, "{transport}: stalled at {got}");
                    std::hint::spin_loop();
                }
            }
        });
    }
    let rate = total as f64 / start.elapsed().as_secs_f64();
    s.terminate(true, LIMIT).unwrap();
    rate
}

/// Positions whose replies the sampled run checks (and whose payload it writes): one in this many.
const SAMPLE_EVERY: u64 = 4096;

/// Streams `total` frames through the chunk API (spec §5.3) the way the raw launch pipeline
/// moves data: the input ring's slots are pre-filled once (header and payload), the producer
/// commits them a chunk at a time, writing only the position into every `SAMPLE_EVERY`th slot,
/// and the consumer releases replies a chunk at a time after checking those positions. With
/// `full`, every payload carries its position and every reply is checked (host-bound). Returns
/// messages per second.
fn stream_chunks(transport: &str, capacity: u32, slot: u32, total: u64, full: bool) -> f64 {
    let ring = RingConfig { capacity, slot_size: slot };
    let mut s = session(1, transport, ring, None);
    let size = slot as usize;
    let len = size - 16;
    let chunk_max = u64::from(capacity / 4).clamp(1, 1 << 16);
    {
        // Pre-fill every slot: one header (correlation id 0, a streamed message) and a payload.
        let (mut tx, _) = s.halves();
        let mut c = tx.write_chunk(u64::from(capacity));
        assert_eq!(c.len(), capacity as usize, "{transport}: a fresh ring is empty");
        c.stamp(FrameHeader { length: len as u32, type_id: 1, flags: 0, correlation_id: 0 });
        let (a, b) = c.as_mut_slices();
        for (i, slot) in a.chunks_exact_mut(size).chain(b.chunks_exact_mut(size)).enumerate() {
            slot[16..].fill(i as u8);
        }
        // Reserved and dropped: nothing is sent (W1–W2 change nothing shared).
    }
    let put = |slot: &mut [u8], pos: u64| slot[16..24].copy_from_slice(&pos.to_le_bytes());
    let start = Instant::now();
    {
        let (mut tx, mut rx) = s.halves();
        std::thread::scope(|scope| {
            scope.spawn(move || {
                let mut sent = 0u64;
                let mut last = Instant::now();
                while sent < total {
                    let mut c = tx.write_chunk(chunk_max.min(total - sent));
                    let n = c.len() as u64;
                    if n == 0 {
                        assert!(last.elapsed() < LIMIT, "{transport}: no room for {LIMIT:?} at {sent}");
                        std::hint::spin_loop();
                        continue;
                    }
                    let (a, b) = c.as_mut_slices();
                    if full {
                        for (i, slot) in a.chunks_exact_mut(size).chain(b.chunks_exact_mut(size)).enumerate() {
                            put(slot, sent + i as u64);
                        }
                    } else {
                        let mut i = (SAMPLE_EVERY - sent % SAMPLE_EVERY) % SAMPLE_EVERY;
                        while i < n {
                            let at = i as usize * size;
                            let slot = if at < a.len() { &mut a[at..at + size] } else { &mut b[at - a.len()..at - a.len() + size] };
                            put(slot, sent + i);
                            i += SAMPLE_EVERY;
                        }
                    }
                    c.commit(n as usize);
                    sent += n;
                    last = Instant::now();
                }
            });
            let mut got = 0u64;
            let mut last = Instant::now();
            while got < total {
                let c = rx.read_chunk(u64::MAX);
                let n = c.len() as u64;
                if n == 0 {
                    assert!(last.elapsed() < LIMIT, "{transport}: stalled at {got}");
                    std::hint::spin_loop();
                    continue;
                }
                let (a, b) = c.as_slices();
                let check = |i: usize, slot: &[u8]| {
                    let pos = got + i as u64;
                    let h = FrameHeader::read_from(slot);
                    let ok = h.length as usize == len && h.flags == 0 && slot[16..24] == pos.to_le_bytes();
                    assert!(ok, "{transport}: reply {pos} is wrong ({h:?}, {:?})", &slot[16..24]);
                };
                if full {
                    for (i, slot) in a.chunks_exact(size).chain(b.chunks_exact(size)).enumerate() {
                        check(i, slot);
                    }
                } else {
                    let first = (SAMPLE_EVERY - got % SAMPLE_EVERY) % SAMPLE_EVERY;
                    let mut i = first;
                    while i < n {
                        let at = i as usize * size;
                        let slot = if at < a.len() { &a[at..at + size] } else { &b[at - a.len()..at - a.len() + size] };
                        check(i as usize, slot);
                        i += SAMPLE_EVERY;
                    }
                    let h = c.header(n as usize - 1);
                    assert!(h.length as usize == len && h.flags == 0, "{transport}: reply {} is wrong ({h:?})", got + n - 1);
                }
                c.release(n as usize);
                got += n;
                last = Instant::now();
            }
        });
    }
    let rate = total as f64 / start.elapsed().as_secs_f64();
    s.terminate(true, LIMIT).unwrap();
    rate
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            println!("gpu_bench skipped: no CUDA device ({e})");
            return;
        }
    };
    println!("# {}", rt.describe());
    let quick = std::env::args().any(|a| a == "--bench").then_some(()).is_none();
    let iters = if quick { 200 } else { 20_000 };
    let total: u64 = if quick { 100_000 } else { 20_000_000 };
    if std::env::args().any(|a| a == "--routes") {
        return routes(iters, total / 4, quick);
    }
    if std::env::args().any(|a| a == "--stream") {
        return streaming(total, quick);
    }
    for t in ["mapped", "hybrid", "dma", "managed"] {
        round_trip(1, t, iters);
    }
    for t in ["mapped", "hybrid", "dma", "managed"] {
        let r = stream(1, t, 65_536, 64, if t == "managed" { total / 10 } else { total }, None);
        println!("rust_stream_echo64_{t}_cap65536 {r:.3e} msg/s");
    }
    let sms = rt.gpu.sms;
    let r = stream(1, "mapped", 65_536, 64, total, Some(Shape { blocks: sms, threads: 256 }));
    println!("rust_stream_echo64_mapped_cap65536_blocks{sms} {r:.3e} msg/s");
    streaming(total, quick);
    for t in ["mapped", "hybrid", "dma"] {
        let n = if quick { 10_000 } else { 400_000 };
        let r = stream(1, t, 4096, 4096, n, None);
        println!("rust_bw_4KiB_{t} {:.2} GB/s", r * 4080.0 / 1e9);
    }
}

/// The chunk API's streaming figures (spec §5.3): 64 B messages sampled and in full, and 4 KiB
/// messages, beside the per-message stream of the same ring.
fn streaming(total: u64, quick: bool) {
    // hybrid (spec §11.2) beside the two transports it combines, same process: its round trip
    // against mapped's, its deep streams against dma's.
    let iters = if quick { 200 } else { 20_000 };
    for t in ["mapped", "hybrid", "dma"] {
        round_trip(1, t, iters);
    }
    for t in ["dma", "hybrid"] {
        let r = stream(1, t, 1 << 20, 64, total * 4, None);
        println!("rust_stream_echo64_{t}_cap1048576 {r:.3e} msg/s");
    }
    for (t, cap) in [("dma", 1u32 << 20), ("hybrid", 1 << 20), ("dma", 65_536), ("hybrid", 65_536), ("mapped", 65_536)] {
        let r = stream_chunks(t, cap, 64, total * 10, false);
        println!("rust_stream_chunk64_{t}_cap{cap} {r:.3e} msg/s");
    }
    let r = stream_chunks("dma", 1 << 20, 64, total * 4, true);
    println!("rust_stream_chunk64_full_dma_cap1048576 {r:.3e} msg/s");
    for t in ["dma", "hybrid", "mapped"] {
        let n = if quick { 10_000 } else { 2_000_000 };
        let r = stream_chunks(t, 4096, 4096, n, false);
        println!("rust_bw_chunk_4KiB_{t} {:.2} GB/s", r * 4096.0 / 1e9);
    }
    // Goal 4 against ring size: chunks are a quarter of the ring, so these copy 16 and 64 MiB
    // spans where the 4096-slot ring copies 4 MiB (the copy engines' both-ways rate grows with
    // the span: persistent_stream.cu's ce_bidir_* lines).
    for cap in [16_384u32, 65_536] {
        let n = if quick { 10_000 } else { 4_000_000 };
        let r = stream_chunks("dma", cap, 4096, n, false);
        println!("rust_bw_chunk_4KiB_dma_cap{cap} {:.2} GB/s", r * 4096.0 / 1e9);
    }
}

/// Routes on one GPU beside one kernel, same process and run: the round trip through 1, 2 and
/// 3 kernels (each added stage is one GPU→GPU hop), and streaming through 1 and 2 kernels; with
/// two GPUs, the same across them (device 0 → device 1: host-staged, and peer where possible).
fn routes(iters: usize, total: u64, quick: bool) {
    if ringbridge_core::cuda::driver::device_count().unwrap_or(0) >= 2 {
        across_gpus(iters, total);
    } else {
        println!("route_across_gpus n/a (1 device)");
    }
    for stages in [1, 2, 3] {
        round_trip(stages, "mapped", iters);
        round_trip(stages, "dma", iters);
    }
    for stages in [1, 2] {
        for t in ["mapped", "dma"] {
            let r = stream(stages, t, 65_536, 64, total, None);
            println!("rust_stream_echo64_{}_cap65536 {r:.3e} msg/s", label(stages, t));
        }
        let n = if quick { 10_000 } else { 200_000 };
        let r = stream(stages, "dma", 4096, 4096, n, None);
        println!("rust_bw_4KiB_{} {:.2} GB/s", label(stages, "dma"), r * 4080.0 / 1e9);
    }
}

/// Device 0 → device 1, per path: the second stage `mapped` (host-staged: its ring in host
/// memory both GPUs reach) and `dma` (its ring in device 1's memory, through peer access; refused
/// with the reason where the GPUs have none).
fn across_gpus(iters: usize, total: u64) {
    for (second, path) in [("mapped", "host_staged"), ("dma", "peer")] {
        let launch = |capacity: u32| {
            let a = LaunchSpec { transport: "dma", ..LaunchSpec::new("cuda", "echo") };
            let b = LaunchSpec { transport: second, device: 1, ..a.clone() };
            let ring = RingConfig { capacity, slot_size: 64 };
            Session::launch_route(&[a, b], &[ring; 3]).map(|(s, _)| s)
        };
        match launch(64) {
            Ok(s) => round_trip_on(s, &format!("gpu0_gpu1_{path}"), iters),
            Err(e) => {
                println!("route_gpu0_gpu1_{path} n/a ({e})");
                continue;
            }
        }
        let s = launch(65_536).expect("the same route launched a moment ago");
        let r = stream_on(s, path, 64, total);
        println!("rust_stream_echo64_gpu0_gpu1_{path} {r:.3e} msg/s");
    }
}
