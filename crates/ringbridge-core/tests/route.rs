//! Routes (spec §14): one kernel's output ring is the next kernel's input ring. On the cpu
//! backend (CI) and, with `--ignored` and RINGBRIDGE_GPU=1, on the GPU (the GPU suite):
//! none lost, duplicated or reordered across the hops; errors of a stage reach the host under
//! their correlation id; drain and abandon keep every message the route took; the setup line of
//! a stage points at its successor's input ring; a route in one kernel host.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use ringbridge_core::backend::{self, Isolation, LaunchSpec};
use ringbridge_core::host::Session;
use ringbridge_core::isolate::HostCommand;
use ringbridge_core::protocol::{kernel_error, offsets, ErrorRecord, RingConfig, FLAG_ERROR, PRODUCER_HOST, PRODUCER_KERNEL};
use ringbridge_core::transport::Region;
use ringbridge_core::{ErrorCode, Ordering};

const LIMIT: Duration = Duration::from_secs(30);

fn spec<'a>(backend: &'a str, handler: &'a str, transport: &'a str) -> LaunchSpec<'a> {
    LaunchSpec { transport, ..LaunchSpec::new(backend, handler) }
}

fn ring(capacity: u32, slot_size: u32) -> RingConfig {
    RingConfig { capacity, slot_size }
}

fn check_of(seq: u64) -> u64 {
    seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5eed
}

/// Streams `total` checksummed messages of `len` bytes (16..=payload max) into the route and
/// checks every reply: in order, none lost or duplicated, payload intact. Returns msg/s.
fn stream(s: &mut Session, total: u64, len: usize) -> f64 {
    let start = Instant::now();
    let (mut sent, mut got) = (0u64, 0u64);
    let mut last_progress = Instant::now();
    while got < total {
        let free = s.free_slots(u64::MAX).min(total - sent);
        for _ in 0..free {
            let mut payload = vec![0u8; len];
            payload[..8].copy_from_slice(&sent.to_le_bytes());
            payload[8..16].copy_from_slice(&check_of(sent).to_le_bytes());
            s.stage(1, sent, &payload).expect("a free slot was counted");
            sent += 1;
        }
        s.flush();
        let took = s
            .recv_batch_with(u64::MAX, |h, p| {
                assert_eq!(h.correlation_id, got, "reply {got} out of order (or lost, or duplicated)");
                assert_eq!(h.flags, 0, "reply {got} is an error frame");
                assert_eq!(p.len(), len, "reply {got}'s length");
                assert_eq!(u64::from_le_bytes(p[..8].try_into().unwrap()), got, "payload of {got}");
                assert_eq!(u64::from_le_bytes(p[8..16].try_into().unwrap()), check_of(got), "checksum of {got}");
                got += 1;
            })
            .unwrap();
        if took > 0 || free > 0 {
            last_progress = Instant::now();
        } else {
            assert!(last_progress.elapsed() < LIMIT, "no progress for {LIMIT:?}: sent {sent}, got {got}");
            // Nothing moved: let the kernel threads run (a 2-core CI machine has 3+ of them).
            std::thread::yield_now();
        }
    }
    total as f64 / start.elapsed().as_secs_f64()
}

fn echo_route(backend: &str, transports: &[&str], capacity: u32) -> Session {
    let specs: Vec<_> = transports.iter().map(|t| spec(backend, "echo", t)).collect();
    let rings = vec![ring(capacity, 64); specs.len() + 1];
    Session::launch_route(&specs, &rings).unwrap_or_else(|e| panic!("route {transports:?}: {e}")).0
}

#[test]
fn a_two_stage_cpu_route_loses_nothing_at_any_capacity() {
    for capacity in [2, 4, 64] {
        let mut s = echo_route("cpu", &["auto", "auto"], capacity);
        stream(&mut s, if cfg!(miri) { 200 } else { 200_000 }, 48);
        let end = s.terminate(true, LIMIT).unwrap();
        assert_eq!((end.undelivered, end.replies.len()), (0, 0), "capacity {capacity}");
    }
}

#[test]
fn a_four_stage_cpu_route_loses_nothing() {
    let total: u64 = if cfg!(miri) { 100 } else { 100_000 };
    let mut s = echo_route("cpu", &["auto"; 4], 16);
    assert_eq!(s.regions().len(), 4);
    stream(&mut s, total, 24);
    let regions = s.regions();
    s.terminate(true, LIMIT).unwrap();
    for (i, r) in regions.iter().enumerate() {
        assert_eq!(r.control().messages_processed.load(Ordering::Relaxed), total, "stage {i} saw every message");
    }
}

/// echo → saxpy: the second stage computes on what the first forwarded, bit for bit as the
/// cpu backend's own saxpy.
fn saxpy_route(backend: &str, transports: [&str; 2]) {
    let specs = [spec(backend, "echo", transports[0]), spec(backend, "saxpy", transports[1])];
    let rings = [ring(64, 256), ring(64, 256), ring(64, 256)];
    let (mut s, launched) = Session::launch_route(&specs, &rings).unwrap();
    assert_eq!(launched.len(), 2);
    eprintln!("  launched {:?}", launched.iter().map(|l| l.transport).collect::<Vec<_>>());
    // 5 000, or fewer under a sanitizer (RINGBRIDGE_GPU_MESSAGES).
    let count = if backend == "cpu" {
        if cfg!(miri) {
            50
        } else {
            5_000
        }
    } else {
        gpu_messages().min(5_000)
    };
    for m in 0..count {
        let n = (m % 29 + 1) as usize;
        let a = (m as f32) * 0.37 - 11.0;
        let x: Vec<f32> = (0..n).map(|i| (i as f32 + m as f32).sin() * 1e3).collect();
        let y: Vec<f32> = (0..n).map(|i| (i as f32 * 0.5 - m as f32).cos()).collect();
        let mut payload = a.to_le_bytes().to_vec();
        for v in x.iter().chain(&y) {
            payload.extend_from_slice(&v.to_le_bytes());
        }
        s.send(1, m, &payload, LIMIT).unwrap();
        let (id, out) = s.recv_with(LIMIT, |h, p| (h.correlation_id, p.to_vec())).unwrap();
        assert_eq!(id, m);
        let got: Vec<u32> = out.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
        let want: Vec<u32> = (0..n).map(|i| a.mul_add(x[i], y[i]).to_bits()).collect();
        assert_eq!(got, want, "message {m}");
    }
    eprintln!("  {count} computed; terminating");
    let t = Instant::now();
    s.terminate(true, LIMIT).unwrap();
    eprintln!("  terminated in {:?}", t.elapsed());
}

#[test]
fn a_cpu_route_computes_in_the_second_stage() {
    saxpy_route("cpu", ["auto", "auto"]);
}

/// A stage's error frame travels on to the host unchanged (spec §3.4): the host sees the
/// first failure, under its correlation id, and the later stage counts no error of its own.
fn errors_pass_through(backend: &str, transport: &str) {
    let specs = [spec(backend, "saxpy", transport), spec(backend, "echo", transport)];
    let rings = [ring(8, 64); 3];
    let t = Instant::now();
    let (mut s, _) = Session::launch_route(&specs, &rings).unwrap();
    eprintln!("  launched in {:?}", t.elapsed());
    s.send(1, 7, &[1, 2, 3], LIMIT).unwrap(); // 3 bytes: not a, x[n], y[n]
    s.send(1, 8, &[0; 12], LIMIT).unwrap(); // a = 0, x = [0], y = [0]: a reply
    let (h, p) = s.recv_with(LIMIT, |h, p| (h, p.to_vec())).unwrap();
    assert_eq!((h.correlation_id, h.flags), (7, FLAG_ERROR));
    let record = ErrorRecord::from_bytes(&p).unwrap();
    assert_eq!((record.code, record.detail), (kernel_error::BAD_PAYLOAD, 3));
    let (h, p) = s.recv_with(LIMIT, |h, p| (h, p.to_vec())).unwrap();
    assert_eq!((h.correlation_id, h.flags, p), (8, 0, vec![0; 4]));
    eprintln!("  replies in {:?}", t.elapsed());
    let regions = s.regions();
    s.terminate(true, LIMIT).unwrap();
    eprintln!("  terminated at {:?}", t.elapsed());
    let errors = |i: usize| regions[i].control().error_count.load(Ordering::Relaxed);
    assert_eq!((errors(0), errors(1)), (1, 0), "the error is the first stage's only");
}

#[test]
fn a_stage_error_reaches_the_host_under_its_correlation_id() {
    errors_pass_through("cpu", "auto");
}

/// Terminating a route with messages in flight at every hop: drain delivers them all; abandon
/// drops only what the first stage never took, and whatever it took comes out in order.
fn terminate_in_flight(backend: &str, transport: &str) {
    for drain in [true, false] {
        let mut s = echo_route(backend, &[transport, transport, transport], 64);
        for i in 0..150u64 {
            // 64 slots per ring, three rings: 150 messages fit once the stages have moved the
            // first ones along. How long that takes depends on the machine (a loaded 2-core CI
            // runner, Miri's interpreted stages), so wait for room, bounded, instead of a fixed
            // sleep (5 ms was too short on a busy runner: "send 64: Full").
            let deadline = Instant::now() + LIMIT;
            loop {
                match s.try_send(1, i, &i.to_le_bytes()) {
                    Ok(()) => break,
                    Err(e) if Instant::now() >= deadline => panic!("send {i}: {e:?} for {LIMIT:?}"),
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        }
        let t = Instant::now();
        let end = s.terminate(drain, LIMIT).unwrap();
        eprintln!("  drain {drain}: terminated in {:?}, {} replies, {} undelivered", t.elapsed(), end.replies.len(), end.undelivered);
        let ids: Vec<u64> = end.replies.iter().map(|(h, _)| h.correlation_id).collect();
        assert_eq!(ids, (0..ids.len() as u64).collect::<Vec<_>>(), "drain {drain}: replies in order, none twice");
        assert_eq!(ids.len() as u64 + end.undelivered, 150, "drain {drain}: every message accounted for");
        if drain {
            assert_eq!(end.undelivered, 0);
        }
    }
}

#[test]
fn terminating_a_cpu_route_accounts_for_every_message() {
    terminate_in_flight("cpu", "auto");
}

#[test]
fn a_stage_writes_its_successors_input_ring() {
    let specs = [spec("cpu", "echo", "auto"), spec("cpu", "echo", "auto")];
    let (s, _) = Session::launch_route(&specs, &[ring(8, 64), ring(16, 128), ring(8, 64)]).unwrap();
    let r = s.regions();
    let (a, b) = (r[0].control(), &r[1]);
    let base = b.base_ptr() as u64;
    let relaxed = Ordering::Relaxed;
    assert_eq!(a.output_buffer.load(relaxed), base + b.layout().input_offset as u64);
    assert_eq!(a.output_tail_addr.load(relaxed), base + offsets::INPUT_TAIL as u64);
    assert_eq!(a.output_head_addr.load(relaxed), base + offsets::INPUT_HEAD as u64);
    // The last stage answers the host: its own output ring.
    let own = r[1].control();
    assert_eq!(own.output_head_addr.load(relaxed), base + offsets::OUTPUT_HEAD as u64);
    // Only the first stage is fed by the host.
    assert_eq!((a.input_producer.load(relaxed), own.input_producer.load(relaxed)), (PRODUCER_HOST, PRODUCER_KERNEL));
    s.terminate(true, LIMIT).unwrap();
}

#[test]
fn routes_that_cannot_work_are_refused_before_anything_runs() {
    let echo = spec("cpu", "echo", "auto");
    // Stage 0 writes 8 slots of 64 B; stage 1 reads 8 slots of 96 B: not one ring.
    let regions = vec![Region::alloc(ring(8, 64), ring(8, 64)).unwrap(), Region::alloc(ring(8, 128), ring(8, 64)).unwrap()];
    let e = backend::launch_route(&[echo.clone(), echo.clone()], regions, Box::new(|| {})).map(drop).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
    assert!(e.to_string().contains("stage 1's input ring (8 slots of 128 B)"), "{e}");
    let one = Session::launch_route(std::slice::from_ref(&echo), &[ring(8, 64), ring(8, 64)]).map(drop).unwrap_err();
    assert!(one.to_string().contains("at least 2"), "{one}");
    let rings = Session::launch_route(&[echo.clone(), echo.clone()], &[ring(8, 64), ring(8, 64)]).map(drop).unwrap_err();
    assert!(rings.to_string().contains("route ring shapes"), "{rings}");
    let external = Session::launch_route(&[echo.clone(), spec("cpu", "external", "auto")], &[ring(8, 64); 3]).map(drop).unwrap_err();
    assert!(external.to_string().contains("external"), "{external}");
    let mixed = Session::launch_route(&[echo, spec("cuda", "echo", "auto")], &[ring(8, 64); 3]).map(drop).unwrap_err();
    assert!(mixed.to_string().contains("backend"), "{mixed}");
}

fn host() -> HostCommand {
    HostCommand::new(env!("CARGO_BIN_EXE_ringbridge-kernel-host"))
}

#[test]
#[cfg_attr(miri, ignore = "starts a kernel host process (socketpair, memfd, fork/exec): foreign calls Miri cannot run")]
fn a_route_runs_in_one_kernel_host() {
    let command = host();
    let mut specs = [spec("cpu", "echo", "auto"), spec("cpu", "echo", "auto"), spec("cpu", "saxpy", "auto")];
    for s in &mut specs {
        s.isolation = Isolation::Process(&command);
    }
    let (mut s, launched) = Session::launch_route(&specs, &[ring(32, 64); 4]).unwrap();
    assert_eq!(launched.len(), 3);
    stream_saxpy_zero(&mut s, 50_000);
    let end = s.terminate(true, LIMIT).unwrap();
    assert_eq!(end.undelivered, 0);
}

/// Streams saxpy payloads whose reply is predictable (a = seq, x = [1], y = [seq]).
fn stream_saxpy_zero(s: &mut Session, total: u64) {
    let mut got = 0u64;
    for i in 0..total {
        let v = (i % 1000) as f32;
        let payload: Vec<u8> = [v, 1.0, v].iter().flat_map(|f| f.to_le_bytes()).collect();
        s.send(1, i, &payload, LIMIT).unwrap();
        while s.pending_replies() > 0 {
            s.recv_with(LIMIT, |h, p| {
                assert_eq!(h.correlation_id, got);
                let w = (got % 1000) as f32;
                assert_eq!(p, (w + w).to_le_bytes());
            })
            .unwrap();
            got += 1;
        }
    }
    while got < total {
        let id = s.recv_with(LIMIT, |h, _| h.correlation_id).unwrap();
        assert_eq!(id, got);
        got += 1;
    }
}

#[test]
#[cfg_attr(miri, ignore = "starts a kernel host process (socketpair, memfd, fork/exec): foreign calls Miri cannot run")]
fn a_route_whose_host_cannot_launch_reports_the_stage_error() {
    let command = host();
    let mut specs = [spec("cpu", "echo", "auto"), spec("cpu", "no-such-handler", "auto")];
    for s in &mut specs {
        s.isolation = Isolation::Process(&command);
    }
    let e = Session::launch_route(&specs, &[ring(8, 64); 3]).map(drop).unwrap_err();
    assert_eq!(e.code(), ErrorCode::UnknownHandler, "{e}");
}

proptest! {
    // Under Miri: 2 cases of at most 100 messages, and no regression file (file access is
    // isolated).
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 2 } else { 24 },
        failure_persistence: if cfg!(miri) { None } else { ProptestConfig::default().failure_persistence },
        ..ProptestConfig::default()
    })]

    /// Random stage counts, capacities and message lengths: every message comes out of the
    /// last stage once, in order, intact.
    #[test]
    fn routes_keep_order_and_lose_nothing(stages in 2usize..5, cap_log in 1u32..7, len in 16usize..=48, total in 1u64..3000) {
        let total = if cfg!(miri) { total.min(100) } else { total };
        let mut s = echo_route("cpu", &vec!["auto"; stages], 1 << cap_log);
        stream(&mut s, total, len);
        let end = s.terminate(true, LIMIT).unwrap();
        prop_assert_eq!((end.undelivered, end.replies.len()), (0, 0));
    }
}

// ---- GPU (ignored unless run by the GPU suite with --ignored) --------------------------------

const TRANSPORTS: &[&str] = &["hybrid", "mapped", "dma", "managed"];

fn gpu_messages() -> u64 {
    std::env::var("RINGBRIDGE_GPU_MESSAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000_000)
}

#[test]
#[ignore = "needs a GPU: run by scripts/gpu-suite.sh"]
fn gpu_route_to_itself_loses_nothing_per_transport() {
    for first in TRANSPORTS {
        for second in TRANSPORTS {
            let total = if first == second { gpu_messages() } else { gpu_messages() / 10 };
            let mut s = echo_route("cuda", &[first, second], 1024);
            let rate = stream(&mut s, total, 48);
            println!("route {first} → {second}: {total} messages, {:.1} M msg/s", rate / 1e6);
            s.terminate(true, LIMIT).unwrap();
        }
        for capacity in [2, 4] {
            let mut s = echo_route("cuda", &[first, first], capacity);
            stream(&mut s, gpu_messages() / 20, 48);
            s.terminate(true, LIMIT).unwrap();
        }
    }
}

#[test]
#[ignore = "needs a GPU: run by scripts/gpu-suite.sh"]
fn gpu_route_computes_in_the_second_stage() {
    for t in TRANSPORTS {
        eprintln!("saxpy route on {t}");
        saxpy_route("cuda", [t, t]);
    }
}

#[test]
#[ignore = "needs a GPU: run by scripts/gpu-suite.sh"]
fn gpu_route_forwards_stage_errors() {
    for t in TRANSPORTS {
        eprintln!("errors through a route on {t}");
        errors_pass_through("cuda", t);
    }
}

#[test]
#[ignore = "needs a GPU: run by scripts/gpu-suite.sh"]
fn gpu_route_terminates_with_messages_at_every_hop() {
    for t in TRANSPORTS {
        eprintln!("terminate a route on {t}");
        terminate_in_flight("cuda", t);
    }
}

#[test]
#[ignore = "needs a GPU: run by scripts/gpu-suite.sh"]
fn gpu_route_in_a_kernel_host() {
    let command = std::env::var("RINGBRIDGE_KERNEL_HOST").map(HostCommand::new).unwrap_or_else(|_| host());
    let mut specs = [spec("cuda", "echo", "dma"), spec("cuda", "saxpy", "mapped")];
    for s in &mut specs {
        s.isolation = Isolation::Process(&command);
    }
    let (mut s, launched) = Session::launch_route(&specs, &[ring(256, 64); 3]).unwrap();
    assert_eq!((launched[0].transport, launched[1].transport), ("dma", "mapped"));
    stream_saxpy_zero(&mut s, 200_000);
    s.terminate(true, LIMIT).unwrap();
}

#[test]
#[ignore = "needs a GPU: run by scripts/gpu-suite.sh"]
fn gpu_route_round_trip_latency() {
    // Round trip host → A → B → host, one message at a time, beside a one-kernel round trip.
    for (name, stages) in [("one kernel", 1usize), ("route of 2", 2), ("route of 3", 3)] {
        let ring = ring(64, 64);
        let mut s = if stages == 1 {
            Session::launch_spec(&spec("cuda", "echo", "mapped"), ring, ring).unwrap()
        } else {
            echo_route("cuda", &vec!["mapped"; stages], 64)
        };
        let mut samples = Vec::with_capacity(20_000);
        for i in 0..21_000u64 {
            let t = Instant::now();
            s.send(1, i, &i.to_le_bytes(), LIMIT).unwrap();
            let id = s.recv_with(LIMIT, |h, _| h.correlation_id).unwrap();
            assert_eq!(id, i);
            if i >= 1000 {
                samples.push(t.elapsed().as_nanos() as u64);
            }
        }
        samples.sort_unstable();
        let p = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
        println!("round trip {name} (mapped): p50 {:.2} µs, p99 {:.2} µs", p(0.5), p(0.99));
        s.terminate(true, LIMIT).unwrap();
    }
}

/// Routes across two GPUs (the GPU suite runs this only where nvidia-smi lists two or more; on
/// one GPU it fails, never passes): device 0 → device 1, through peer access into device 1's
/// memory (the next stage on dma) where the GPUs allow it, and host-staged (the next stage
/// mapped: its ring in host memory both reach) always. Order, loss and content as on one GPU.
#[test]
#[ignore = "needs two GPUs: run by scripts/gpu-suite.sh routes on a multi-GPU host"]
fn gpu2_routes_across_gpus_peer_and_host_staged() {
    let count = ringbridge_core::cuda::driver::device_count().unwrap();
    assert!(count >= 2, "needs two GPUs; this host has {count}");
    for (first, second) in [("dma", "mapped"), ("mapped", "mapped"), ("dma", "dma"), ("mapped", "dma")] {
        let (mut a, mut b) = (spec("cuda", "echo", first), spec("cuda", "echo", second));
        (a.device, b.device) = (0, 1);
        match Session::launch_route(&[a, b], &[ring(1024, 64); 3]) {
            Ok((mut s, _)) => {
                let rate = stream(&mut s, gpu_messages(), 48);
                println!("route gpu0 {first} → gpu1 {second}: {} messages, {:.1} M msg/s", gpu_messages(), rate / 1e6);
                s.terminate(true, LIMIT).unwrap();
            }
            // No peer access: a device-memory ring on the other GPU is refused, saying what works.
            Err(e) if second == "dma" => {
                assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
                assert!(e.to_string().contains("transport 'mapped'"), "{e}");
                println!("route gpu0 {first} → gpu1 dma refused (no peer access): {e}");
            }
            Err(e) => panic!("host-staged route gpu0 {first} → gpu1 {second}: {e}"),
        }
    }
    // The second GPU computes on what the first forwarded.
    let mut b = spec("cuda", "saxpy", "mapped");
    b.device = 1;
    saxpy_across(spec("cuda", "echo", "dma"), b);
}

/// saxpy in the second stage of a route from `a` to `b` (a = m % 100, x = [2], y = [1]).
fn saxpy_across(a: LaunchSpec<'_>, b: LaunchSpec<'_>) {
    let (mut s, _) = Session::launch_route(&[a, b], &[ring(64, 256); 3]).unwrap();
    for m in 0..2_000u64 {
        let v = (m % 100) as f32;
        let payload: Vec<u8> = [v, 2.0, 1.0].iter().flat_map(|f| f.to_le_bytes()).collect();
        s.send(1, m, &payload, LIMIT).unwrap();
        let out = s.recv_with(LIMIT, |h, p| (h.correlation_id, p.to_vec())).unwrap();
        assert_eq!(out, (m, (v * 2.0 + 1.0).to_le_bytes().to_vec()));
    }
    s.terminate(true, LIMIT).unwrap();
}
