//! A fuzzer of the kernel side (issue 10, "keep them fixed"): what a hostile or buggy host writes
//! into the input side of a region — corrupt frame lengths, flags, type and correlation ids,
//! payloads; garbage command, status and setup-line words; ring indices that break I1/I4 — on the
//! cpu backend in this process and in a kernel host process (`ringbridge-kernel-host`).
//!
//! What must hold (docs/PROTOCOL.md):
//! - every input frame is answered by exactly one output frame, in order (I6), and that frame is
//!   what the protocol says: a BAD_FRAME error frame (detail = the length) for a length over the
//!   slot's payload (§5 C3, K3, §12), the frame itself for an error frame that fits the output
//!   slot (§3.4), a REPLY_TOO_LARGE one for an error frame or a reply that does not (§3.4, §12),
//!   BAD_PAYLOAD for what saxpy cannot read, else the handler's reply; `error_count` counts every
//!   error frame the kernel made, `error_code` is the first one (§12);
//! - the setup line, `host_waiting`, `reserved1` and unknown `active`/`terminate` values change
//!   none of those answers (nothing the kernel's memory safety depends on is re-read after
//!   launch, I5);
//! - ring indices that break I1/I4 crash nothing and hang nothing: afterwards an ABANDON stops
//!   the kernel within a bound and `join` reports (in this process: cleanly);
//! - the library's own stop (`backend::request_terminate`, `Kernel::join`) stops the kernel
//!   whatever the `terminate` word held before (a value that is no command included);
//! - a corrupt setup line before a kernel host attaches is refused with a clear error or runs,
//!   and the host stops when told to.
//!
//! Every wait is bounded (a hang fails the case, naming what it waited for).
//!
//! The rig writes slots and indices by hand, as a host of its own would, instead of going through
//! `host::Session` (which never writes a corrupt frame). It keeps to I2/I3 for the slots it
//! touches, so the test process itself has no data race even when it corrupts indices: after an
//! index attack it touches no slot again.

use std::sync::atomic::fence;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use ringbridge_core::backend::handlers::CANONICAL_NAN;
use ringbridge_core::backend::{self, Isolation, Kernel, LaunchSpec};
use ringbridge_core::isolate::HostCommand;
use ringbridge_core::protocol::{
    kernel_error, offsets, ControlBlock, ErrorRecord, FrameHeader, KernelState, RingConfig, FLAG_ERROR, FLAG_MULTI, FRAME_HEADER_BYTES,
    MAGIC, TERMINATE_ABANDON, TERMINATE_DRAIN, TERMINATE_NONE, VERSION,
};
use ringbridge_core::transport::Region;
use ringbridge_core::{Error, ErrorCode, Ordering};

/// Longest any one wait of a case may take before the case fails as a hang.
const LIMIT: Duration = Duration::from_secs(10);

fn host() -> HostCommand {
    HostCommand::new(env!("CARGO_BIN_EXE_ringbridge-kernel-host"))
}

/// `cases` per property (3 under Miri); `RINGBRIDGE_FUZZ_SCALE=n` runs n times as many (a
/// longer fuzzing session by hand).
fn config(cases: u32) -> ProptestConfig {
    let scale = std::env::var("RINGBRIDGE_FUZZ_SCALE").ok().and_then(|v| v.parse::<u32>().ok()).unwrap_or(1).max(1);
    ProptestConfig {
        cases: if cfg!(miri) { cases.min(3) } else { cases.saturating_mul(scale) },
        // A failing case may be a hang that costs LIMIT per run: shrink for a bounded time.
        max_shrink_time: 60_000,
        // Miri isolates file access.
        failure_persistence: if cfg!(miri) { None } else { Some(Box::new(FileFailurePersistence::SourceParallel("proptest-regressions"))) },
        ..ProptestConfig::default()
    }
}

/// splitmix64: the bytes of a payload from a seed.
fn mix(z: u64) -> u64 {
    let z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn bytes(seed: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| mix(seed ^ (i as u64).wrapping_mul(0x1000_0000_01b3)) as u8).collect()
}

// ---- the rig: a host of our own over a region ---------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Runner {
    /// The cpu backend's kernel thread in this process.
    Thread,
    /// The cpu backend in a kernel host process.
    Host,
}

/// A launched kernel and the host's side of its two rings, written by hand.
struct Rig {
    region: Arc<Region>,
    kernel: Option<Box<dyn Kernel>>,
    input: RingConfig,
    output: RingConfig,
    /// Next input position to write (staged frames included).
    tail: u64,
    /// Last input_tail published.
    published: u64,
    /// Next output position to read.
    head: u64,
}

impl Rig {
    fn launch(runner: Runner, handler: &str, input: RingConfig, output: RingConfig) -> Self {
        Self::launch_after(runner, handler, input, output, |_| {})
    }

    /// Launches after `before` had its way with the initialised region (a host that writes
    /// words before the kernel ever reads them).
    fn launch_after(runner: Runner, handler: &str, input: RingConfig, output: RingConfig, before: impl FnOnce(&Region)) -> Self {
        let command = host();
        let (region, isolation) = match runner {
            Runner::Thread => (Region::alloc(input, output).unwrap(), Isolation::Thread),
            Runner::Host => (Region::alloc_shared(input, output).unwrap(), Isolation::Process(&command)),
        };
        before(&region);
        fence(Ordering::SeqCst);
        let spec = LaunchSpec { isolation, ..LaunchSpec::new("cpu", handler) };
        let (kernel, _) = backend::launch(&spec, Arc::clone(&region), Box::new(|| {}))
            .unwrap_or_else(|e| panic!("launch of {handler} ({runner:?}): {e}"));
        Self { region, kernel: Some(kernel), input, output, tail: 0, published: 0, head: 0 }
    }

    fn cb(&self) -> &ControlBlock {
        self.region.control()
    }

    fn kernel(&self) -> &dyn Kernel {
        self.kernel.as_deref().expect("not joined yet")
    }

    /// D2 (spec §8): after an index store, wake the kernel if it announced sleep.
    fn wake_if_sleeping(&self) {
        fence(Ordering::SeqCst);
        if self.cb().kernel_sleeping.load(Ordering::Relaxed) != 0 {
            self.kernel().wake();
        }
    }

    fn in_max(&self) -> usize {
        self.input.max_payload()
    }

    fn out_max(&self) -> usize {
        self.output.max_payload()
    }

    /// Whether input slot `tail` is free (P2; the kernel's head honest).
    fn room(&self) -> bool {
        let head = self.cb().input_head.value.load(Ordering::Acquire);
        self.tail.wrapping_sub(head) < u64::from(self.input.capacity)
    }

    /// P3 by hand: writes `header` (any bytes: the length may lie) and `payload` into the next
    /// input slot, which must be free (`room`).
    fn stage_raw(&mut self, header: FrameHeader, payload: &[u8]) {
        assert!(self.room());
        assert!(payload.len() <= self.in_max());
        let slot = (self.tail & u64::from(self.input.capacity - 1)) as usize;
        let offset = self.region.layout().input_offset + slot * self.input.slot_size as usize;
        let mut frame = vec![0u8; FRAME_HEADER_BYTES + payload.len()];
        header.write_to(&mut frame);
        frame[FRAME_HEADER_BYTES..].copy_from_slice(payload);
        // SAFETY: the slot lies inside the region (layout) and is ours under I2: `room` saw the
        // kernel release it, and the kernel does not read it until we publish past it.
        unsafe { std::ptr::copy_nonoverlapping(frame.as_ptr(), self.region.base_ptr().add(offset), frame.len()) };
        self.tail += 1;
    }

    /// P4 + D2.
    fn publish(&mut self) {
        if self.tail != self.published {
            self.cb().input_tail.value.store(self.tail, Ordering::Release);
            self.published = self.tail;
            self.wake_if_sleeping();
        }
    }

    /// C1–C4 by hand: takes every published reply; a reply that breaks the protocol fails.
    fn take_replies(&mut self, into: &mut Vec<(FrameHeader, Vec<u8>)>) -> usize {
        let tail = self.cb().output_tail.value.load(Ordering::Acquire);
        let n = tail.wrapping_sub(self.head);
        assert!(n <= u64::from(self.output.capacity), "output_tail {tail} is {n} frames past head {} (I4)", self.head);
        for _ in 0..n {
            let slot = (self.head & u64::from(self.output.capacity - 1)) as usize;
            let offset = self.region.layout().output_offset + slot * self.output.slot_size as usize;
            // SAFETY: inside the region; ours under I3 (published: acquire of output_tail above)
            // until we store output_head past it.
            let frame = unsafe { std::slice::from_raw_parts(self.region.base_ptr().add(offset), self.output.slot_size as usize) };
            let header = FrameHeader::read_from(frame);
            assert!(
                header.length as usize <= self.out_max(),
                "reply {} has length {} over the slot's {}",
                self.head,
                header.length,
                self.out_max()
            );
            into.push((header, frame[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + header.length as usize].to_vec()));
            self.head += 1;
        }
        if n > 0 {
            self.cb().output_head.value.store(self.head, Ordering::Release);
            self.wake_if_sleeping();
        }
        n as usize
    }

    fn state(&self) -> Option<KernelState> {
        backend::state(self.cb())
    }

    /// Joins the kernel on a helper thread, so that a kernel that never stops fails the case
    /// instead of hanging the test.
    fn join_within(&mut self, limit: Duration) -> Result<(), Error> {
        let mut kernel = self.kernel.take().expect("joined once");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let r = kernel.join();
            let _ = tx.send(r);
            drop(kernel);
        });
        rx.recv_timeout(limit).unwrap_or_else(|_| panic!("join did not return within {limit:?}: the kernel did not stop"))
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(kernel) = self.kernel.take() {
            // A failed case: ask the kernel (its thread or host) to stop, and drop it — which
            // joins — on a thread of its own, so a kernel that does not stop cannot hang the
            // test that already failed.
            self.cb().terminate.store(TERMINATE_ABANDON, Ordering::Release);
            kernel.wake();
            thread::spawn(move || drop(kernel));
        }
    }
}

/// Polls `step` (yielding, then sleeping briefly) until it returns `Ok`, failing as a hang after
/// LIMIT with the last thing it said it waits for.
fn wait_for(mut step: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + LIMIT;
    let mut spins = 0u32;
    loop {
        let waiting = match step() {
            Ok(()) => return,
            Err(what) => what,
        };
        assert!(Instant::now() < deadline, "hang: no {waiting} within {LIMIT:?}");
        spins += 1;
        if spins < 64 {
            thread::yield_now();
        } else {
            thread::sleep(Duration::from_micros(200));
        }
    }
}

/// `Ok` when `cond`, else `Err(what())`.
fn until(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

// ---- frames and the protocol's answer to each ------------------------------------------------

/// How a frame's `length` relates to the input slot's payload (`max`).
#[derive(Clone, Copy, Debug)]
enum Length {
    /// `x % (max + 1)`.
    Within(u32),
    /// Exactly `max`.
    Max,
    /// `max + 1`.
    JustOver,
    /// Anything over `max`, up to `u32::MAX`.
    Over(u32),
    /// `4 + 8n + off`: saxpy-shaped (off = 0) or a few bytes off.
    Saxpy(u8, u8),
}

impl Length {
    fn resolve(self, max: usize) -> u32 {
        let max = max as u32;
        match self {
            Self::Within(x) => x % (max + 1),
            Self::Max => max,
            Self::JustOver => max + 1,
            Self::Over(x) => max + 1 + x % (u32::MAX - max),
            Self::Saxpy(n, off) => 4 + 8 * u32::from(n % 16) + u32::from(off % 8),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Frame {
    length: Length,
    type_id: u16,
    flags: u16,
    correlation_id: u64,
    seed: u64,
}

fn frame() -> impl Strategy<Value = Frame> {
    let length = prop_oneof![
        6 => any::<u32>().prop_map(Length::Within),
        1 => Just(Length::Max),
        2 => Just(Length::JustOver),
        2 => any::<u32>().prop_map(Length::Over),
        4 => (any::<u8>(), prop_oneof![3 => Just(0u8), 1 => 1u8..8]).prop_map(|(n, off)| Length::Saxpy(n, off)),
    ];
    let flags = prop_oneof![
        6 => Just(0u16),
        2 => Just(FLAG_ERROR),
        1 => Just(FLAG_MULTI),
        1 => Just(FLAG_ERROR | FLAG_MULTI),
        2 => any::<u16>(),
    ];
    let id = prop_oneof![Just(0u64), Just(u64::MAX), any::<u64>()];
    (length, any::<u16>(), flags, id, any::<u64>()).prop_map(|(length, type_id, flags, correlation_id, seed)| Frame {
        length,
        type_id,
        flags,
        correlation_id,
        seed,
    })
}

/// One frame as it sits in the slot: the header (its length may lie) and the bytes written.
fn materialise(f: &Frame, in_max: usize) -> (FrameHeader, Vec<u8>) {
    let length = f.length.resolve(in_max);
    let header = FrameHeader { length, type_id: f.type_id, flags: f.flags, correlation_id: f.correlation_id };
    // A frame whose length lies past the slot still has whatever fits behind it.
    (header, bytes(f.seed, (length as usize).min(in_max)))
}

/// What the kernel must answer, and the error it records (if any).
fn answer(handler: &str, header: FrameHeader, payload: &[u8], in_max: usize, out_max: usize) -> ((FrameHeader, Vec<u8>), Option<u32>) {
    let error = |code: u32, detail: u32| {
        let h = FrameHeader {
            length: ErrorRecord::BYTES as u32,
            type_id: header.type_id,
            flags: FLAG_ERROR,
            correlation_id: header.correlation_id,
        };
        ((h, ErrorRecord { code, detail }.to_bytes().to_vec()), Some(code))
    };
    let len = header.length as usize;
    if len > in_max {
        // §5 C3, K3: consumed, answered with BAD_FRAME, detail = the length, the header's ids.
        return error(kernel_error::BAD_FRAME, header.length);
    }
    let payload = &payload[..len];
    if header.flags & FLAG_ERROR != 0 {
        // §3.4: forwarded unchanged, no error of the kernel's own; REPLY_TOO_LARGE if it does
        // not fit the output slot.
        if len > out_max {
            return error(kernel_error::REPLY_TOO_LARGE, header.length);
        }
        return ((header, payload.to_vec()), None);
    }
    let reply = |bytes: Vec<u8>| {
        let h = FrameHeader { length: bytes.len() as u32, type_id: header.type_id, flags: 0, correlation_id: header.correlation_id };
        ((h, bytes), None)
    };
    match handler {
        "echo" if len > out_max => error(kernel_error::REPLY_TOO_LARGE, len as u32),
        "echo" => reply(payload.to_vec()),
        "saxpy" => {
            if len < 4 || (len - 4) % 8 != 0 {
                return error(kernel_error::BAD_PAYLOAD, len as u32);
            }
            let n = (len - 4) / 8;
            if n * 4 > out_max {
                return error(kernel_error::REPLY_TOO_LARGE, (n * 4) as u32);
            }
            let f = |i: usize| f32::from_le_bytes(payload[i..i + 4].try_into().unwrap());
            let mut out = Vec::with_capacity(n * 4);
            for i in 0..n {
                let r = f(0).mul_add(f(4 + 4 * i), f(4 + 4 * (n + i)));
                let bits = if r.is_nan() { CANONICAL_NAN } else { r.to_bits() };
                out.extend_from_slice(&bits.to_le_bytes());
            }
            reply(out)
        }
        other => unreachable!("handler {other}"),
    }
}

// ---- operations of a hostile or buggy host ----------------------------------------------------

/// Setup-line words (offset, size in bytes): constant after launch (I5); the kernel must not
/// depend on them for its memory safety once it runs.
const SETUP_WORDS: &[(usize, usize)] = &[
    (offsets::MAGIC, 4),
    (offsets::VERSION, 4),
    (offsets::INPUT_CAPACITY, 4),
    (offsets::INPUT_SLOT_SIZE, 4),
    (offsets::OUTPUT_CAPACITY, 4),
    (offsets::OUTPUT_SLOT_SIZE, 4),
    (offsets::USER_ARG, 4),
    (offsets::HANDLER_ID, 4),
    (offsets::INPUT_BUFFER, 8),
    (offsets::OUTPUT_BUFFER, 8),
    (offsets::INPUT_TAIL_ADDR, 8),
    (offsets::OUTPUT_TAIL_ADDR, 8),
    (offsets::OUTPUT_HEAD_ADDR, 8),
    (offsets::INPUT_PRODUCER, 4),
];

#[derive(Clone, Debug)]
enum Op {
    /// Stage one frame (publishing first if the ring is full).
    Frame(Frame),
    Publish,
    /// Take whatever replies are published.
    Receive,
    /// `active` := value (0 pauses; any other value runs).
    Active(u32),
    /// `terminate` := a value that is no command (3 and up), as a buggy host might store.
    Terminate(u32),
    /// `host_waiting` := value.
    HostWaiting(u32),
    /// `reserved1` := value.
    Reserved(u32),
    /// A setup-line word := value, after launch.
    Setup(usize, u64),
}

fn word() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), Just(1), Just(2), Just(u64::from(u32::MAX)), Just(u64::MAX), (0u32..32).prop_map(|b| 1u64 << b), any::<u64>()]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        24 => frame().prop_map(Op::Frame),
        4 => Just(Op::Publish),
        4 => Just(Op::Receive),
        2 => prop_oneof![Just(0u32), Just(1), any::<u32>()].prop_map(Op::Active),
        1 => prop_oneof![Just(3u32), Just(u32::MAX), 3u32..].prop_map(Op::Terminate),
        1 => word().prop_map(|w| Op::HostWaiting(w as u32)),
        1 => word().prop_map(|w| Op::Reserved(w as u32)),
        2 => (0..SETUP_WORDS.len(), word()).prop_map(|(i, w)| Op::Setup(i, w)),
    ]
}

fn store_word(cb: &ControlBlock, offset: usize, size: usize, value: u64) {
    // Every field is an atomic: write it through the field the offset names.
    let cb_base = cb as *const ControlBlock as usize;
    let at = cb_base + offset;
    // SAFETY: `offset` is one of the control block's field offsets (SETUP_WORDS), whose field
    // is an AtomicU32 (size 4) or AtomicU64 (size 8) at that naturally aligned address.
    unsafe {
        match size {
            4 => (*(at as *const std::sync::atomic::AtomicU32)).store(value as u32, Ordering::Relaxed),
            8 => (*(at as *const std::sync::atomic::AtomicU64)).store(value, Ordering::Relaxed),
            _ => unreachable!(),
        }
    }
}

fn shape() -> impl Strategy<Value = (RingConfig, RingConfig)> {
    let ring = |caps: u32, slots: std::ops::RangeInclusive<u32>| {
        (0..=caps, slots).prop_map(|(c, s)| RingConfig { capacity: 1 << c, slot_size: 1 << s })
    };
    (ring(4, 5..=7), ring(3, 5..=8))
}

/// Runs `ops` against a fresh kernel and checks every answer, the counters, and a clean drain.
fn frames_are_answered_as_the_protocol_says(runner: Runner, handler: &str, (input, output): (RingConfig, RingConfig), ops: &[Op]) {
    let mut rig = Rig::launch(runner, handler, input, output);
    let (in_max, out_max) = (rig.in_max(), rig.out_max());
    let mut expected = Vec::new();
    let mut errors = Vec::new();
    let mut replies = Vec::new();
    // The command words as the rig last stored them: the kernel is paused while active == 0
    // and terminate holds no command (K2, §9), so a full input ring then needs a resume.
    let (mut active, mut terminate) = (1u32, TERMINATE_NONE);
    for op in ops {
        match *op {
            Op::Frame(f) => {
                if !rig.room() {
                    rig.publish();
                    // A terminate word holding no command is NONE to the kernel (§9): it
                    // does not lift a pause either.
                    if active == 0 && !matches!(terminate, TERMINATE_DRAIN | TERMINATE_ABANDON) {
                        active = 1;
                        rig.cb().active.store(1, Ordering::Release);
                        rig.kernel().wake();
                    }
                    let sent = rig.tail;
                    wait_for(|| {
                        rig.take_replies(&mut replies);
                        until(rig.room(), || format!("room for input {sent} (replies taken {})", replies.len()))
                    });
                }
                let (header, payload) = materialise(&f, in_max);
                let (reply, error) = answer(handler, header, &payload, in_max, out_max);
                expected.push((header, reply));
                errors.extend(error);
                rig.stage_raw(header, &payload);
            }
            Op::Publish => rig.publish(),
            Op::Receive => {
                rig.take_replies(&mut replies);
            }
            Op::Active(v) => {
                active = v;
                rig.cb().active.store(v, Ordering::Release);
                rig.kernel().wake();
            }
            Op::Terminate(v) => {
                terminate = v;
                rig.cb().terminate.store(v, Ordering::Release);
                rig.kernel().wake();
            }
            Op::HostWaiting(v) => rig.cb().host_waiting.store(v, Ordering::SeqCst),
            Op::Reserved(v) => rig.cb().reserved1.store(v, Ordering::Relaxed),
            Op::Setup(i, v) => {
                let (offset, size) = SETUP_WORDS[i];
                store_word(rig.cb(), offset, size, v);
            }
        }
    }
    // The host comes to its senses: running, everything published. A stray `terminate` word
    // (no command) stays: the kernel must still answer, and the library's own stop below must
    // still stop it.
    rig.cb().active.store(1, Ordering::Release);
    rig.publish();
    rig.kernel().wake();
    let total = expected.len();
    wait_for(|| {
        rig.take_replies(&mut replies);
        until(replies.len() >= total, || format!("reply {} of {total}", replies.len()))
    });
    // Drain (H5) as the Rust host does, and keep consuming until TERMINATED (§9): nothing more
    // may come out.
    backend::request_terminate(rig.cb(), true);
    rig.kernel().wake();
    wait_for(|| {
        rig.take_replies(&mut replies);
        let state = rig.state();
        until(state == Some(KernelState::Terminated), || format!("state Terminated after a drain (state {state:?})"))
    });
    rig.take_replies(&mut replies);
    rig.join_within(LIMIT).unwrap_or_else(|e| panic!("join after a drain: {e}"));

    assert_eq!(replies.len(), total, "one output frame per input frame (I6)");
    for (i, ((sent, (want_h, want_p)), (got_h, got_p))) in expected.iter().zip(&replies).enumerate() {
        assert_eq!((got_h, got_p), (want_h, want_p), "answer {i} to {sent:?}");
    }
    let cb = rig.cb();
    assert_eq!(cb.messages_processed.load(Ordering::Acquire), total as u64, "messages_processed");
    assert_eq!(cb.input_head.value.load(Ordering::Acquire), total as u64, "input_head");
    assert_eq!(cb.output_tail.value.load(Ordering::Acquire), total as u64, "output_tail");
    assert_eq!(cb.error_count.load(Ordering::Acquire), errors.len() as u32, "error_count: {errors:?}");
    assert_eq!(cb.error_code.load(Ordering::Acquire), errors.first().copied().unwrap_or(kernel_error::NONE), "error_code (the first)");
}

// ---- index attacks: no crash, no hang -------------------------------------------------------

/// Index and status words a hostile host may write, breaking I1 or I4.
#[derive(Clone, Copy, Debug)]
enum Attack {
    /// input_tail := head + capacity + k: more frames than slots.
    InputTailPastCapacity(u64),
    /// input_tail := head - k - 1: behind the kernel's head (a wrap of 2^64 frames).
    InputTailBehind(u64),
    InputTail(u64),
    /// output_head := output_tail + k + 1: the host "read" replies not written yet.
    OutputHeadAhead(u64),
    /// output_head := output_tail - capacity - k - 1: more unread replies than slots.
    OutputHeadBehind(u64),
    OutputHead(u64),
    /// Words only the kernel writes (I1).
    InputHead(u64),
    OutputTail(u64),
    State(u32),
    KernelSleeping(u32),
    ErrorCode(u32),
    ErrorCount(u32),
    MessagesProcessed(u64),
    LastActivity(u64),
    /// Command words: any value, a command or not.
    Active(u32),
    Terminate(u32),
}

fn attack() -> impl Strategy<Value = Attack> {
    let small = prop_oneof![0u64..4, 0u64..1 << 20, any::<u64>()];
    prop_oneof![
        small.clone().prop_map(Attack::InputTailPastCapacity),
        small.clone().prop_map(Attack::InputTailBehind),
        word().prop_map(Attack::InputTail),
        small.clone().prop_map(Attack::OutputHeadAhead),
        small.prop_map(Attack::OutputHeadBehind),
        word().prop_map(Attack::OutputHead),
        word().prop_map(Attack::InputHead),
        word().prop_map(Attack::OutputTail),
        any::<u32>().prop_map(Attack::State),
        any::<u32>().prop_map(Attack::KernelSleeping),
        any::<u32>().prop_map(Attack::ErrorCode),
        any::<u32>().prop_map(Attack::ErrorCount),
        word().prop_map(Attack::MessagesProcessed),
        word().prop_map(Attack::LastActivity),
        any::<u32>().prop_map(Attack::Active),
        prop_oneof![Just(TERMINATE_DRAIN), 3u32..].prop_map(Attack::Terminate),
    ]
}

fn apply(region: &Region, attack: Attack) {
    let cb = region.control();
    let r = Ordering::Release;
    let in_head = cb.input_head.value.load(Ordering::Acquire);
    let out_tail = cb.output_tail.value.load(Ordering::Acquire);
    let (in_cap, out_cap) = (u64::from(region.layout().input.capacity), u64::from(region.layout().output.capacity));
    match attack {
        Attack::InputTailPastCapacity(k) => cb.input_tail.value.store(in_head.wrapping_add(in_cap).wrapping_add(k).wrapping_add(1), r),
        Attack::InputTailBehind(k) => cb.input_tail.value.store(in_head.wrapping_sub(k).wrapping_sub(1), r),
        Attack::InputTail(v) => cb.input_tail.value.store(v, r),
        Attack::OutputHeadAhead(k) => cb.output_head.value.store(out_tail.wrapping_add(k).wrapping_add(1), r),
        Attack::OutputHeadBehind(k) => cb.output_head.value.store(out_tail.wrapping_sub(out_cap).wrapping_sub(k).wrapping_sub(1), r),
        Attack::OutputHead(v) => cb.output_head.value.store(v, r),
        Attack::InputHead(v) => cb.input_head.value.store(v, r),
        Attack::OutputTail(v) => cb.output_tail.value.store(v, r),
        Attack::State(v) => cb.state.store(v, r),
        Attack::KernelSleeping(v) => cb.kernel_sleeping.store(v, r),
        Attack::ErrorCode(v) => cb.error_code.store(v, r),
        Attack::ErrorCount(v) => cb.error_count.store(v, r),
        Attack::MessagesProcessed(v) => cb.messages_processed.store(v, r),
        Attack::LastActivity(v) => cb.last_activity.store(v, r),
        Attack::Active(v) => cb.active.store(v, r),
        Attack::Terminate(v) => cb.terminate.store(v, r),
    }
}

/// Attacks the words of a fresh region before the kernel starts (`before`), sends `honest`
/// frames, then attacks again (`attacks`); from then on the rig touches no slot (so the test
/// itself races nothing). ABANDON must stop the kernel within a bound and `join` must report:
/// cleanly in this process; in a kernel host cleanly or with a clear error.
fn index_attacks_crash_and_hang_nothing(runner: Runner, handler: &str, (input, output): (RingConfig, RingConfig), case: &AttackCase) {
    let AttackCase { before, honest, attacks, drain_first, stop_by_request } = case;
    let mut rig = Rig::launch_after(runner, handler, input, output, |region| before.iter().for_each(|&a| apply(region, a)));
    let attacked_first = !before.is_empty();
    let in_max = rig.in_max();
    let mut replies = Vec::new();
    // Frames go in only while the indices are honest.
    for f in honest.iter().filter(|_| !attacked_first) {
        if !rig.room() {
            rig.publish();
            wait_for(|| {
                rig.take_replies(&mut replies);
                until(rig.room(), || "room before the attack".into())
            });
        }
        let (header, payload) = materialise(f, in_max);
        rig.stage_raw(header, &payload);
    }
    rig.publish();
    for &a in attacks {
        apply(&rig.region, a);
    }
    fence(Ordering::SeqCst);
    rig.kernel().wake();
    // Let the kernel chew on it (it may spin, park, or wait for output room).
    thread::sleep(Duration::from_millis(2));
    if *drain_first {
        // A drain of a ring with broken indices may never finish: the host then abandons (§9).
        backend::request_terminate(rig.cb(), true);
        rig.kernel().wake();
        thread::sleep(Duration::from_millis(1));
    }
    // ABANDON as `Session::terminate` falls back to it after a drain that did not finish (§9:
    // `join` waits for a drain it was given, and a drain of a broken ring may never finish);
    // otherwise `join` (below) abandons by itself, whatever else the word holds.
    if *stop_by_request || rig.cb().terminate.load(Ordering::Relaxed) == TERMINATE_DRAIN {
        backend::request_terminate(rig.cb(), false);
    }
    rig.kernel().wake();
    let started = Instant::now();
    let joined = rig.join_within(LIMIT);
    match runner {
        Runner::Thread => {
            joined.unwrap_or_else(|e| panic!("join after {before:?} then {attacks:?}: {e}"));
            // The loop exits only through K8, which stores TERMINATED last (unless the attack
            // scribbled on `state` after the kernel had already stopped, drained by a DRAIN it
            // was handed before launch).
            if !attacks.iter().any(|a| matches!(a, Attack::State(_))) {
                assert_eq!(rig.state(), Some(KernelState::Terminated), "state after {before:?} then {attacks:?}");
            }
        }
        Runner::Host => {
            if let Err(e) = joined {
                // The host may report what went wrong, but with a code and a text.
                assert!(
                    matches!(e.code(), ErrorCode::KernelError | ErrorCode::Protocol),
                    "kernel host join after {before:?} then {attacks:?}: {e}"
                );
                assert!(!e.to_string().is_empty());
            }
        }
    }
    assert!(started.elapsed() < LIMIT, "the kernel took {:?} to stop after {before:?} then {attacks:?}", started.elapsed());
}

/// One index-attack case.
#[derive(Clone, Debug)]
struct AttackCase {
    /// Written after the region's initialisation, before the kernel starts.
    before: Vec<Attack>,
    /// Frames sent while the indices are honest (none if `before` attacked).
    honest: Vec<Frame>,
    /// Written while the kernel runs.
    attacks: Vec<Attack>,
    /// Ask for a drain before the stop.
    drain_first: bool,
    /// Stop with `request_terminate(abandon)` before `join` (else `join` abandons by itself).
    stop_by_request: bool,
}

fn attack_case() -> impl Strategy<Value = AttackCase> {
    (
        prop::collection::vec(attack(), 0..3),
        prop::collection::vec(frame(), 0..12),
        prop::collection::vec(attack(), 1..4),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(before, honest, attacks, drain_first, stop_by_request)| AttackCase {
            before,
            honest,
            attacks,
            drain_first,
            stop_by_request,
        })
}

// ---- setup line corrupted before a kernel host attaches --------------------------------------

fn corrupt_setup_before_a_kernel_host_attaches(handler: &str, field: usize, value: u64) {
    let ring = RingConfig { capacity: 8, slot_size: 64 };
    let region = Region::alloc_shared(ring, ring).unwrap();
    let (offset, size) = SETUP_WORDS[field];
    store_word(region.control(), offset, size, value);
    fence(Ordering::SeqCst);
    // Magic and version are checked when the host attaches (§11.1): a changed one is refused.
    let stored = if size == 4 { value as u32 as u64 } else { value };
    let bad_identity =
        (offset == offsets::MAGIC && stored != u64::from(MAGIC)) || (offset == offsets::VERSION && stored != u64::from(VERSION));
    let command = host();
    let spec = LaunchSpec { isolation: Isolation::Process(&command), ..LaunchSpec::new("cpu", handler) };
    let started = Instant::now();
    let launched = backend::launch(&spec, Arc::clone(&region), Box::new(|| {}));
    assert!(started.elapsed() < LIMIT, "launch took {:?}", started.elapsed());
    match launched {
        Err(e) => {
            assert!(
                matches!(e.code(), ErrorCode::Protocol | ErrorCode::InvalidArgument),
                "launch with setup word {offset} = {value:#x}: {e}"
            );
            if bad_identity {
                assert!(e.to_string().contains("magic"), "launch with setup word {offset} = {value:#x}: {e}");
            }
        }
        Ok((mut kernel, _)) => {
            assert!(!bad_identity, "a kernel host attached a region with setup word {offset} = {value:#x}");
            region.control().terminate.store(TERMINATE_ABANDON, Ordering::Release);
            kernel.wake();
            let (tx, rx) = mpsc::channel();
            thread::spawn(move || {
                let _ = tx.send(kernel.join().map_err(|e| (e.code(), e.to_string())));
            });
            match rx.recv_timeout(LIMIT) {
                Ok(Ok(())) => {}
                Ok(Err((code, text))) => assert!(matches!(code, ErrorCode::KernelError | ErrorCode::Protocol), "join: {text}"),
                Err(_) => panic!("a kernel host with setup word {offset} = {value:#x} did not stop within {LIMIT:?}"),
            }
        }
    }
}

// ---- the properties ------------------------------------------------------------------------

fn handler() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("echo"), Just("saxpy")]
}

proptest! {
    #![proptest_config(config(256))]

    /// In this process: every corrupt or honest frame answered as the protocol says, whatever
    /// the command, status and setup words around it.
    #[test]
    fn cpu_kernel_answers_every_frame_as_the_protocol_says(handler in handler(), shape in shape(), ops in prop::collection::vec(op(), 1..48)) {
        frames_are_answered_as_the_protocol_says(Runner::Thread, handler, shape, &ops);
    }

    /// In this process: broken indices and kernel-owned words crash and hang nothing.
    #[test]
    fn cpu_kernel_survives_broken_indices(handler in handler(), shape in shape(), case in attack_case()) {
        index_attacks_crash_and_hang_nothing(Runner::Thread, handler, shape, &case);
    }
}

proptest! {
    #![proptest_config(config(48))]

    /// Through a kernel host process: the same answers.
    #[test]
    #[cfg_attr(miri, ignore = "starts a kernel host process (socketpair, memfd, fork/exec): foreign calls Miri cannot run")]
    fn kernel_host_answers_every_frame_as_the_protocol_says(handler in handler(), shape in shape(), ops in prop::collection::vec(op(), 1..48)) {
        frames_are_answered_as_the_protocol_says(Runner::Host, handler, shape, &ops);
    }

    /// Through a kernel host process: broken indices end in a stop or a clear error, never a
    /// hang.
    #[test]
    #[cfg_attr(miri, ignore = "starts a kernel host process (socketpair, memfd, fork/exec): foreign calls Miri cannot run")]
    fn kernel_host_survives_broken_indices(handler in handler(), shape in shape(), case in attack_case()) {
        index_attacks_crash_and_hang_nothing(Runner::Host, handler, shape, &case);
    }

    /// A setup line corrupted before the kernel host attaches: refused with a clear error
    /// (magic, version and ring shapes are checked), or run and stopped when told to.
    #[test]
    #[cfg_attr(miri, ignore = "starts a kernel host process (socketpair, memfd, fork/exec): foreign calls Miri cannot run")]
    fn kernel_host_refuses_or_survives_a_corrupt_setup_line(handler in handler(), field in 0..SETUP_WORDS.len(), value in word()) {
        corrupt_setup_before_a_kernel_host_attaches(handler, field, value);
    }
}

/// The first crash the fuzzer found (`cpu_kernel_survives_broken_indices`): an `output_head`
/// behind `output_tail - capacity` or ahead of `output_tail` made `free` subtract past zero, a
/// panic in the kernel thread of a debug build (in release a huge count of free slots). More
/// than `capacity` occupied now reads as full.
#[test]
fn free_reads_a_broken_ring_as_full() {
    use ringbridge_core::protocol::free;
    assert_eq!(free(0, 9, 8), 0, "head more than a capacity behind tail");
    assert_eq!(free(10, 9, 8), 0, "head ahead of tail");
    assert_eq!(free(u64::MAX, 0, 8), 7, "one occupied across the wrap");
    assert_eq!(free(3, 3, 8), 8);
}
