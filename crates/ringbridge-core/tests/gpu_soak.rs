//! The GPU soak of issue #10: `RINGBRIDGE_SOAK_MESSAGES` (default 10^9) checksummed echo
//! messages through one CUDA kernel on `dma` (a 2^20-slot ring), then shorter runs through small
//! rings (capacities 2 and 64), 1 KiB slots, and `mapped` (a tenth of the count).
//!
//! Every reply is checked: its correlation id is the next position expected (nothing lost,
//! duplicated or reordered), its type id, payload length and three payload words (first, second
//! and last eight bytes) are derived from that id (nothing corrupted or mixed up between slots),
//! its flags are 0 (no error frame). After the last reply the kernel is drained: nothing
//! undelivered, no extra reply, `messages_processed` equal to the count, no error counted.
//!
//! Producer and consumer are two threads over [`Session::halves`] (staging in place, taking
//! replies in batches: the bench's streaming path), so a billion messages should take well
//! under a minute on an H100/H200 (benches/gpu.rs measured 26–70 M msg/s for dma with 64 B
//! slots). Every wait is bounded by `RINGBRIDGE_SOAK_STALL_MS` (default 30 000): the launch, no
//! progress on either end, the drain; a kernel that terminated on its own fails the run
//! within a fraction of a second. A bug fails the test with the position it stopped at, never hangs it. Each run prints
//! one `SOAK ok` / `SOAK FAIL` line with the count, elapsed time and msg/s (run with
//! `--nocapture` to see them; a progress line every 10 s). The CPU-backend tests at the end
//! check the harness itself (they run everywhere).
//!
//! The soak needs a GPU: its tests are ignored unless run with `--ignored` (`scripts/gpu-suite.sh
//! reliability` does); without a CUDA device they fail with the reason, never pass. Sanitizer
//! runs set a small `RINGBRIDGE_SOAK_MESSAGES` (every run then takes at least
//! min(count, 1000) messages).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as Atomic};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringbridge_core::backend::LaunchSpec;
use ringbridge_core::host::Session;
use ringbridge_core::protocol::{FrameHeader, KernelState, RingConfig};
use ringbridge_core::Ordering;

/// The soak's message count: `RINGBRIDGE_SOAK_MESSAGES` (digits, `_` allowed, or `1e9`).
fn messages() -> u64 {
    let Ok(text) = std::env::var("RINGBRIDGE_SOAK_MESSAGES") else { return 1_000_000_000 };
    let clean = text.trim().replace('_', "");
    clean
        .parse::<u64>()
        .ok()
        .or_else(|| clean.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 1.0 && *v <= 1e15).map(|v| v as u64))
        .unwrap_or_else(|| panic!("RINGBRIDGE_SOAK_MESSAGES={text:?} is not a message count"))
}

/// A share of the count for the shorter runs: `n / div`, but at least min(n, 1000).
fn part(n: u64, div: u64) -> u64 {
    (n / div).max(n.min(1000))
}

/// How long either side may go without progress before the run fails.
fn stall_limit() -> Duration {
    let ms = std::env::var("RINGBRIDGE_SOAK_STALL_MS")
        .ok()
        .map(|v| v.trim().parse::<u64>().unwrap_or_else(|_| panic!("RINGBRIDGE_SOAK_STALL_MS={v:?} is not a number of milliseconds")));
    Duration::from_millis(ms.unwrap_or(30_000))
}

/// Fails (never passes) without a CUDA device, saying why; prints the device once per test.
fn require_gpu() {
    match ringbridge_core::backend::cuda::runtime() {
        Ok(rt) => eprintln!("# {}", rt.describe()),
        Err(e) => {
            panic!("no CUDA device here, so no soak ran ({e}); run this with --ignored on the GPU host (scripts/gpu-suite.sh reliability)")
        }
    }
}

fn check_of(id: u64) -> u64 {
    id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x50a4_0000_dead_beef
}

fn tail_of(id: u64) -> u64 {
    !check_of(id).rotate_left(29)
}

fn type_of(id: u64) -> u16 {
    1 + (id % 251) as u16
}

/// Payload length of message `id`: the slot's payload capacity minus 0, 8, 16 or 24 bytes (the
/// frame length changes from slot to slot, so a reply with a stale header shows).
fn length_of(id: u64, max: usize) -> usize {
    max - 8 * (id & 3) as usize
}

fn fill(area: &mut [u8], id: u64, len: usize) {
    area[..8].copy_from_slice(&id.to_le_bytes());
    area[8..16].copy_from_slice(&check_of(id).to_le_bytes());
    area[len - 8..len].copy_from_slice(&tail_of(id).to_le_bytes());
}

fn word(p: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(p[at..at + 8].try_into().expect("8 bytes"))
}

/// Whether reply `h`/`p` is the one expected at position `want` (the fast path: no formatting).
fn reply_ok(h: &FrameHeader, p: &[u8], want: u64, max: usize) -> bool {
    let len = length_of(want, max);
    h.correlation_id == want
        && h.flags == 0
        && h.type_id == type_of(want)
        && p.len() == len
        && word(p, 0) == want
        && word(p, 8) == check_of(want)
        && word(p, len - 8) == tail_of(want)
}

/// What is wrong with a reply that failed [`reply_ok`].
fn describe_bad_reply(h: &FrameHeader, p: &[u8], want: u64, max: usize) -> String {
    let len = length_of(want, max);
    let mut what = Vec::new();
    if h.correlation_id != want {
        what.push(format!("correlation id {} (lost, duplicated or reordered)", h.correlation_id));
    }
    if h.flags != 0 {
        what.push(format!("flags {:#x} (an error frame)", h.flags));
    }
    if h.type_id != type_of(want) {
        what.push(format!("type id {} (expected {})", h.type_id, type_of(want)));
    }
    if p.len() != len {
        what.push(format!("payload length {} (expected {len})", p.len()));
    }
    if p.len() >= 16 {
        if word(p, 0) != want {
            what.push(format!("payload id {}", word(p, 0)));
        }
        if word(p, 8) != check_of(want) {
            what.push(format!("checksum {:#018x} (expected {:#018x})", word(p, 8), check_of(want)));
        }
    }
    if p.len() >= len && len >= 24 && word(p, len - 8) != tail_of(want) {
        what.push(format!("last word {:#018x} (expected {:#018x})", word(p, len - 8), tail_of(want)));
    }
    format!("reply at position {want}: {}", what.join(", "))
}

struct Soak {
    backend: &'static str,
    transport: &'static str,
    capacity: u32,
    slot: u32,
    total: u64,
}

impl Soak {
    fn name(&self) -> String {
        let on = if self.backend == "cuda" { String::new() } else { format!("{} ", self.backend) };
        format!("{on}{} cap {} slot {}", self.transport, self.capacity, self.slot)
    }
}

/// Runs one soak; prints its `SOAK` line; returns the failure, if any.
fn run(soak: &Soak, stall: Duration) -> Result<(), String> {
    let name = soak.name();
    let started = Instant::now();
    let outcome = run_inner(soak, stall);
    let secs = started.elapsed().as_secs_f64();
    match &outcome {
        Ok(r) => println!(
            "SOAK ok   {name}: {} messages in {:.2} s = {} (launch {:.2} s, drain {:.2} s; processed {}, kernel errors 0)",
            soak.total,
            r.streaming,
            rate(soak.total, r.streaming),
            r.launch,
            r.drain,
            soak.total
        ),
        Err(e) => println!("SOAK FAIL {name}: {e} ({secs:.2} s into the run of {} messages)", soak.total),
    }
    outcome.map(drop).map_err(|e| format!("{name}: {e}"))
}

struct Timings {
    launch: f64,
    streaming: f64,
    drain: f64,
}

fn run_inner(soak: &Soak, stall: Duration) -> Result<Timings, String> {
    let ring = RingConfig { capacity: soak.capacity, slot_size: soak.slot };
    let max = ring.max_payload();
    assert!(max >= 48, "slot {} too small for the soak's frames", soak.slot);
    let t0 = Instant::now();
    let spec = LaunchSpec { transport: soak.transport, ..LaunchSpec::new(soak.backend, "echo") };
    // The launch too is bounded: a launch that blocks (a context-wide synchronisation behind a
    // kernel that never stopped) fails the run; its thread is left behind.
    let (done, launched) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(Session::launch_spec(&spec, ring, ring));
    });
    let mut s = match launched.recv_timeout(stall) {
        Ok(r) => r.map_err(|e| format!("launch: {e}"))?,
        Err(_) => return Err(format!("the launch did not return within {stall:?}")),
    };
    if soak.backend == "cuda" && s.launched().transport != soak.transport {
        return Err(format!("launched on {} instead", s.launched().transport));
    }
    let launch = t0.elapsed().as_secs_f64();
    let region = Arc::clone(s.region());
    let t1 = Instant::now();
    if let Err(e) = stream(&mut s, &region, soak, max, stall) {
        let _ = s.terminate(false, stall);
        return Err(e);
    }
    let streaming = t1.elapsed().as_secs_f64();
    let t2 = Instant::now();
    let end = s.terminate(true, stall).map_err(|e| format!("terminate after the last reply: {e}"))?;
    let drain = t2.elapsed().as_secs_f64();
    if end.undelivered != 0 || !end.replies.is_empty() {
        let first = end.replies.first().map(|(h, _)| h.correlation_id);
        return Err(format!(
            "after all {} replies: {} undelivered, {} extra replies (first id {first:?})",
            soak.total,
            end.undelivered,
            end.replies.len()
        ));
    }
    let cb = region.control();
    let processed = cb.messages_processed.load(Ordering::Acquire);
    let (errors, code) = (cb.error_count.load(Ordering::Acquire), cb.error_code.load(Ordering::Acquire));
    if processed != soak.total || errors != 0 || code != 0 {
        return Err(format!(
            "the kernel counted {processed} messages processed (sent {}), {errors} errors, first error code {code}",
            soak.total
        ));
    }
    Ok(Timings { launch, streaming, drain })
}

/// Waits a moment with nothing to do: spins at first (a reply is usually a few hundred
/// nanoseconds away), then yields, so that the kernel's own host thread (the cpu backend's
/// worker, the dma bridge) gets a core where cores are few.
fn idle(rounds: &mut u32) {
    *rounds += 1;
    if *rounds < 256 {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

/// "58.10 M msg/s", "130.2 k msg/s".
fn rate(messages: u64, secs: f64) -> String {
    let r = messages as f64 / secs.max(1e-9);
    if r >= 1e6 {
        format!("{:.2} M msg/s", r / 1e6)
    } else {
        format!("{:.1} k msg/s", r / 1e3)
    }
}

/// The two-thread stream: the producer stages every free slot in place and publishes; the
/// consumer (this thread) takes replies in batches and checks each one.
fn stream(s: &mut Session, region: &ringbridge_core::transport::Region, soak: &Soak, max: usize, stall: Duration) -> Result<(), String> {
    let total = soak.total;
    let failed = AtomicBool::new(false);
    let sent_so_far = AtomicU64::new(0);
    let (mut tx, mut rx) = s.halves();
    std::thread::scope(|scope| {
        let (failed, sent_so_far) = (&failed, &sent_so_far);
        let producer = scope.spawn(move || {
            let r = (|| -> Result<(), String> {
                let mut sent = 0u64;
                let mut last = Instant::now();
                let mut idle_rounds = 0u32;
                while sent < total {
                    if failed.load(Atomic::Relaxed) {
                        return Ok(()); // the consumer reports why
                    }
                    let n = tx.free_slots(u64::MAX).min(total - sent);
                    for _ in 0..n {
                        let id = sent;
                        let len = length_of(id, max);
                        tx.stage_with(type_of(id), id, |area| {
                            fill(area, id, len);
                            len
                        })
                        .map_err(|e| format!("staging message {id} into a slot counted free: {e:?}"))?;
                        sent += 1;
                    }
                    tx.flush();
                    if n > 0 {
                        sent_so_far.store(sent, Atomic::Relaxed);
                        last = Instant::now();
                        idle_rounds = 0;
                    } else if last.elapsed() > stall {
                        return Err(format!("no free input slot for {stall:?} with {sent} of {total} sent"));
                    } else {
                        idle(&mut idle_rounds);
                    }
                }
                Ok(())
            })();
            if r.is_err() {
                failed.store(true, Atomic::Relaxed);
            }
            r
        });

        let consumer = (|| -> Result<(), String> {
            let start = Instant::now();
            let mut got = 0u64;
            let mut last = Instant::now();
            let mut report = Instant::now() + Duration::from_secs(10);
            let mut dead_seen = false;
            let mut idle_rounds = 0u32;
            while got < total {
                let mut bad: Option<String> = None;
                let taken = rx
                    .recv_batch_with(u64::MAX, |h, p| {
                        if bad.is_none() {
                            if reply_ok(&h, p, got, max) {
                                got += 1;
                            } else {
                                bad = Some(describe_bad_reply(&h, p, got, max));
                            }
                        }
                    })
                    .map_err(|e| format!("at position {got}: {e}"))?;
                if let Some(b) = bad {
                    return Err(b);
                }
                if taken > 0 {
                    dead_seen = false;
                    idle_rounds = 0;
                    last = Instant::now();
                    if last >= report {
                        let secs = start.elapsed().as_secs_f64();
                        eprintln!("soak {}: {got} of {total} replies checked in {secs:.1} s ({})", soak.name(), rate(got, secs));
                        report = last + Duration::from_secs(10);
                    }
                    continue;
                }
                if failed.load(Atomic::Relaxed) {
                    return Ok(()); // the producer reports why
                }
                let idle_for = last.elapsed();
                if idle_for > Duration::from_millis(100) {
                    // A kernel that stopped on its own (a fault): fail once a take after seeing
                    // it terminated found nothing more.
                    let cb = region.control();
                    let dead = cb.state.load(Ordering::Acquire) == KernelState::Terminated as u32;
                    if dead && dead_seen {
                        return Err(format!(
                            "the kernel terminated at position {got} ({} sent; error code {}, {} errors)",
                            sent_so_far.load(Atomic::Relaxed),
                            cb.error_code.load(Ordering::Acquire),
                            cb.error_count.load(Ordering::Acquire)
                        ));
                    }
                    dead_seen = dead;
                    if idle_for > stall {
                        return Err(format!("no reply for {stall:?} at position {got} ({} sent)", sent_so_far.load(Atomic::Relaxed)));
                    }
                }
                idle(&mut idle_rounds);
            }
            Ok(())
        })();
        if consumer.is_err() {
            failed.store(true, Atomic::Relaxed);
        }
        let producer = producer.join().unwrap_or_else(|_| Err("the producer thread panicked".into()));
        consumer.and(producer)
    })
}

/// Runs each soak (all of them, even after a failure) and fails with every failure.
fn soak_all(runs: &[Soak]) {
    require_gpu();
    let stall = stall_limit();
    let failures: Vec<String> = runs.iter().filter_map(|r| run(r, stall).err()).collect();
    assert!(failures.is_empty(), "{} of {} soak runs failed:\n{}", failures.len(), runs.len(), failures.join("\n"));
}

#[test]
#[ignore = "needs a GPU: scripts/gpu-suite.sh reliability runs it with --ignored"]
fn dma_soak_checksummed_messages_through_a_large_ring() {
    soak_all(&[Soak { backend: "cuda", transport: "dma", capacity: 1 << 20, slot: 64, total: messages() }]);
}

#[test]
#[ignore = "needs a GPU: scripts/gpu-suite.sh reliability runs it with --ignored"]
fn dma_soak_small_rings_and_large_slots() {
    let n = messages();
    soak_all(&[
        Soak { backend: "cuda", transport: "dma", capacity: 2, slot: 64, total: part(n, 1000) },
        Soak { backend: "cuda", transport: "dma", capacity: 64, slot: 64, total: part(n, 200) },
        Soak { backend: "cuda", transport: "dma", capacity: 4096, slot: 1024, total: part(n, 1000) },
    ]);
}

#[test]
#[ignore = "needs a GPU: scripts/gpu-suite.sh reliability runs it with --ignored"]
fn mapped_soak_a_tenth_of_the_count() {
    let n = messages();
    soak_all(&[
        Soak { backend: "cuda", transport: "mapped", capacity: 65_536, slot: 64, total: part(n, 10) },
        Soak { backend: "cuda", transport: "mapped", capacity: 2, slot: 64, total: part(n, 1000) },
    ]);
}

#[test]
#[ignore = "needs a GPU: scripts/gpu-suite.sh reliability runs it with --ignored"]
fn hybrid_soak_a_tenth_of_the_count() {
    // hybrid (spec §11.2): a deep stream through the large ring (bridged rounds, with direct ones
    // whenever the kernel catches up), and tiny rings whose rounds are mostly direct.
    let n = messages();
    soak_all(&[
        Soak { backend: "cuda", transport: "hybrid", capacity: 1 << 20, slot: 64, total: part(n, 10) },
        Soak { backend: "cuda", transport: "hybrid", capacity: 2, slot: 64, total: part(n, 1000) },
        Soak { backend: "cuda", transport: "hybrid", capacity: 4096, slot: 1024, total: part(n, 1000) },
    ]);
}

// ---- The harness itself, on the CPU backend (runs everywhere, CI included) -------------------

#[test]
fn the_harness_passes_a_clean_stream_on_the_cpu_backend() {
    for (capacity, slot, total) in [(2, 64, 20_000), (64, 64, 50_000), (4096, 1024, 20_000)] {
        let soak = Soak { backend: "cpu", transport: "auto", capacity, slot, total };
        run(&soak, Duration::from_secs(30)).unwrap();
    }
}

#[test]
fn the_harness_names_every_kind_of_bad_reply() {
    let max = 48;
    let frame = |id: u64| {
        let len = length_of(id, max);
        let mut p = vec![0u8; len];
        fill(&mut p, id, len);
        (FrameHeader { length: len as u32, type_id: type_of(id), flags: 0, correlation_id: id }, p)
    };
    for id in [0u64, 1, 2, 3, 1 << 40] {
        let (h, p) = frame(id);
        assert!(reply_ok(&h, &p, id, max), "a good reply at {id}");
    }
    let bad = |h: FrameHeader, p: Vec<u8>, want: u64, says: &str| {
        assert!(!reply_ok(&h, &p, want, max), "{says}: not caught");
        let text = describe_bad_reply(&h, &p, want, max);
        assert!(text.contains(says), "{text:?} should say {says:?}");
    };
    let (h, p) = frame(6);
    bad(h, p, 5, "correlation id 6"); // 5 lost (or 6 early)
    let (h, p) = frame(4);
    bad(h, p, 5, "correlation id 4"); // 4 twice
    let (mut h, p) = frame(5);
    h.flags = 1;
    bad(h, p, 5, "error frame");
    let (mut h, p) = frame(5);
    h.type_id += 1;
    bad(h, p, 5, "type id");
    let (h, mut p) = frame(5);
    p.push(0);
    bad(h, p, 5, "payload length");
    let (h, mut p) = frame(5);
    p[9] ^= 1;
    bad(h, p, 5, "checksum");
    let (h, mut p) = frame(5);
    let n = p.len();
    p[n - 1] ^= 0x80;
    bad(h, p, 5, "last word");
    // Another slot's payload under the right header.
    let (h, _) = frame(9);
    let (_, p) = frame(13); // same length (13 & 3 == 9 & 3)
    bad(h, p, 9, "payload id 13");
}

#[test]
fn a_stalled_kernel_fails_the_run_within_the_stall_limit_instead_of_hanging() {
    let ring = RingConfig { capacity: 64, slot_size: 64 };
    let spec = LaunchSpec::new("cpu", "echo");
    let mut s = Session::launch_spec(&spec, ring, ring).unwrap();
    let region = Arc::clone(s.region());
    region.control().active.store(0, Ordering::Release); // paused: nothing comes back
    let soak = Soak { backend: "cpu", transport: "auto", capacity: 64, slot: 64, total: 1000 };
    let started = Instant::now();
    let err = stream(&mut s, &region, &soak, ring.max_payload(), Duration::from_millis(300)).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(err.contains("no reply for") || err.contains("no free input slot"), "{err}");
    let end = s.terminate(false, Duration::from_secs(10)).unwrap();
    assert_eq!(end.undelivered, 64, "the paused kernel took nothing");
}
