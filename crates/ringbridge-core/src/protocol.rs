//! The ring protocol of `docs/PROTOCOL.md` as Rust: the `#[repr(C)]` [`ControlBlock`], the frame
//! header, the region layout and the index arithmetic. The CUDA header `kernels/ringbridge.cuh`
//! mirrors every offset here, and `tests/protocol.rs` checks both against the document.

use crate::sync::{AtomicU32, AtomicU64};

/// `"RBG1"` little-endian: the first word of every control block.
pub const MAGIC: u32 = 0x3147_4252;
/// Protocol version; bumped on any layout or ordering change (see the spec's changelog).
pub const VERSION: u32 = 4;
/// Size of one cache line as the protocol counts it (128 B: the GPU's L2 line, two x86 lines).
pub const LINE_BYTES: usize = 128;
/// Size of the control block: seven 128-byte lines, one per writer group (spec §3).
pub const CONTROL_BLOCK_BYTES: usize = 7 * LINE_BYTES;
/// Size of the frame header at the start of every slot.
pub const FRAME_HEADER_BYTES: usize = 16;
/// Smallest slot: a header and 16 bytes of payload.
pub const MIN_SLOT_SIZE: u32 = 32;
/// Largest slot (1 MiB).
pub const MAX_SLOT_SIZE: u32 = 1 << 20;
/// Largest ring capacity (2^24 slots).
pub const MAX_CAPACITY: u32 = 1 << 24;
/// Alignment of a region's base and of each slot array.
pub const REGION_ALIGN: usize = LINE_BYTES;
/// Bytes before the records of a multi-reply frame (`FLAG_MULTI`, §3.3): a `u32` count and 4
/// reserved bytes.
pub const MULTI_HEADER_BYTES: usize = 8;
/// Most replies one message may have (a user handler's `max_replies`): they travel in one
/// output slot.
pub const MAX_REPLIES: u32 = 4096;
/// The first error code a handler may give (§12): codes below it are the kernel's
/// ([`kernel_error`]).
pub const FIRST_HANDLER_CODE: u32 = 256;

/// `handler_id` of the built-in echo handler.
pub const HANDLER_ECHO: u32 = 0;
/// `handler_id` of the built-in saxpy handler.
pub const HANDLER_SAXPY: u32 = 1;
/// `handler_id` of a user handler compiled into the ring kernel (spec §13.1).
pub const HANDLER_USER: u32 = 1024;

/// Frame flag: the payload is an [`ErrorRecord`] from the handler, not a reply.
pub const FLAG_ERROR: u16 = 1;
/// Frame flag: the payload carries several replies to one message (spec §3.3): a `u32` count,
/// 4 reserved bytes, then `count` records of the output type back to back. Zero replies is a
/// count of 0. Only user CUDA handlers launched with `max_replies` write it.
pub const FLAG_MULTI: u16 = 2;

/// `input_producer`: the host produces the input ring (through the bridge on dma and managed).
pub const PRODUCER_HOST: u32 = 0;
/// `input_producer`: a route's previous stage produces the input ring (spec §14); the host's
/// `input_tail` is unused.
pub const PRODUCER_KERNEL: u32 = 1;

/// `terminate` word: keep running.
pub const TERMINATE_NONE: u32 = 0;
/// `terminate` word: finish every message already in the input ring, then exit.
pub const TERMINATE_DRAIN: u32 = 1;
/// `terminate` word: exit after the batch in hand; the rest of the input ring is undelivered.
pub const TERMINATE_ABANDON: u32 = 2;

/// `host_waiting` bit: the host sleeps until `output.tail` moves.
pub const WAIT_OUTPUT: u32 = 1;
/// `host_waiting` bit: the host sleeps until `input.head` moves.
pub const WAIT_INPUT: u32 = 2;

/// Kernel `state` word values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum KernelState {
    /// Control block initialised, kernel not yet polling.
    Launching = 0,
    /// Polling and dispatching.
    Running = 1,
    /// `active == 0`: polling commands only.
    Paused = 2,
    /// The dispatch loop has exited; no field changes after this.
    Terminated = 3,
}

impl KernelState {
    /// Decodes a `state` word; unknown values read as `None`.
    pub fn from_word(word: u32) -> Option<Self> {
        [Self::Launching, Self::Running, Self::Paused, Self::Terminated].into_iter().find(|s| *s as u32 == word)
    }
}

/// Kernel-level error codes written to `error_code` (the first one wins) and, for per-message
/// errors, into an error frame's [`ErrorRecord::code`].
pub mod kernel_error {
    /// No error.
    pub const NONE: u32 = 0;
    /// A frame's `length` exceeds its slot's payload capacity.
    pub const BAD_FRAME: u32 = 1;
    /// The handler rejected a payload (wrong length or type for this handler).
    pub const BAD_PAYLOAD: u32 = 2;
    /// A bounded spin ran out (the peer stopped moving its index).
    pub const SPIN_TIMEOUT: u32 = 3;
    /// The reply does not fit the output slot.
    pub const REPLY_TOO_LARGE: u32 = 4;
    /// The handler trapped (GPU) or panicked (CPU).
    pub const HANDLER_FAULT: u32 = 5;
    /// Not a failure of the kernel: a skip frame's code (§15), written by a shared producer in
    /// the place of positions whose producer died before writing them. Kernels forward it
    /// unchanged (§3.4) and never record it; the host drops it (no message, no reply).
    pub const SKIPPED: u32 = 6;

    /// The name of each code, indexed by the code: what JavaScript shows (`KERNEL_ERROR_NAMES`,
    /// `err.details.kernelError`) and what the error texts say.
    pub const NAMES: &[&str] = &["none", "bad-frame", "bad-payload", "spin-timeout", "reply-too-large", "handler-fault", "skipped"];
}

/// One index on a line of its own, so the producer's and consumer's stores never share a line.
#[repr(C, align(128))]
pub struct IndexLine {
    /// The free-running position.
    pub value: AtomicU64,
}

/// The kernel's one parameter: setup, commands, status and the four ring indices (spec §3).
///
/// Every field is atomic because the host, the kernel and (for the node binding) JavaScript share
/// it; setup fields are written before launch and read with `Relaxed` after.
#[repr(C, align(128))]
pub struct ControlBlock {
    // line 0, setup: written by the host before launch, read-only afterwards.
    /// [`MAGIC`].
    pub magic: AtomicU32,
    /// [`VERSION`].
    pub version: AtomicU32,
    /// Input ring capacity in slots (a power of two).
    pub input_capacity: AtomicU32,
    /// Input slot size in bytes (a power of two, header included).
    pub input_slot_size: AtomicU32,
    /// Output ring capacity in slots.
    pub output_capacity: AtomicU32,
    /// Output slot size in bytes.
    pub output_slot_size: AtomicU32,
    /// Kernel-specific argument (built-in handlers ignore it).
    pub user_arg: AtomicU32,
    /// Built-in handler a GPU kernel dispatches to (`HANDLER_*`).
    pub handler_id: AtomicU32,
    /// Address of the input slot array as the kernel sees it.
    pub input_buffer: AtomicU64,
    /// Address of the output slot array as the kernel sees it.
    pub output_buffer: AtomicU64,
    /// Address the kernel polls for the input tail: `input_tail` itself, or (dma) a device
    /// word the bridge's copy engine writes after the slots.
    pub input_tail_addr: AtomicU64,
    /// Address the kernel publishes its output tail to: `output_tail` itself, or (dma) a
    /// mirror the bridge polls before copying replies out.
    pub output_tail_addr: AtomicU64,
    /// Address the kernel reads its output ring's head from (P2): `output_head` itself, or
    /// (a route, v3) the next stage's `input_head`.
    pub output_head_addr: AtomicU64,
    /// Who produces the input ring: [`PRODUCER_HOST`] (the host, through the bridge on dma and
    /// managed) or [`PRODUCER_KERNEL`] (a route's previous stage, v3).
    pub input_producer: AtomicU32,
    /// `hybrid` (v4): rounds of at most this many messages may read their input from
    /// `host_input_buffer` and write their replies to `host_output_buffer` instead of the
    /// bridged slots (spec §11.2); 0 on every other transport: never.
    pub direct_max: AtomicU32,
    /// `hybrid` (v4): the host's input slots as the kernel sees them; 0: input never direct.
    pub host_input_buffer: AtomicU64,
    /// `hybrid` (v4): the host's output slots as the kernel sees them; 0: output never direct
    /// (a route stage whose output feeds the next stage).
    pub host_output_buffer: AtomicU64,
    /// `hybrid` (v4): where the kernel tells the bridge the end of its direct rounds (just
    /// before the mirror of the next bridged round, or on exit), so the bridge never copies
    /// positions it wrote to the host itself.
    pub direct_upto_addr: AtomicU64,
    _pad0: [u8; LINE_BYTES - 104],
    // line 1, commands: written by the host only.
    /// 1: dispatch messages; 0: pause.
    pub active: AtomicU32,
    /// One of `TERMINATE_*`.
    pub terminate: AtomicU32,
    /// `WAIT_*` bits: which index moves the host is sleeping on.
    pub host_waiting: AtomicU32,
    /// Reserved, zero.
    pub reserved1: AtomicU32,
    _pad1: [u8; LINE_BYTES - 16],
    // line 2, status: written by the kernel only.
    /// A [`KernelState`] word.
    pub state: AtomicU32,
    /// First kernel-level error (`kernel_error::*`), 0 if none.
    pub error_code: AtomicU32,
    /// Number of errors seen (kernel-level and per-message).
    pub error_count: AtomicU32,
    /// 1 while the kernel may be parked (CPU backend); the host must wake it after publishing.
    pub kernel_sleeping: AtomicU32,
    /// Messages taken from the input ring and handled.
    pub messages_processed: AtomicU64,
    /// Kernel clock (ns) at the last dispatched batch.
    pub last_activity: AtomicU64,
    _pad2: [u8; LINE_BYTES - 32],
    /// Input ring head: next position the kernel reads. Written by the kernel.
    pub input_head: IndexLine,
    /// Input ring tail: next position the host writes. Written by the host.
    pub input_tail: IndexLine,
    /// Output ring head: next position the host reads. Written by the host.
    pub output_head: IndexLine,
    /// Output ring tail: next position the kernel writes. Written by the kernel.
    pub output_tail: IndexLine,
}

/// Byte offsets of the control block's fields, as the spec's table lists them.
pub mod offsets {
    #![allow(missing_docs)]
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 4;
    pub const INPUT_CAPACITY: usize = 8;
    pub const INPUT_SLOT_SIZE: usize = 12;
    pub const OUTPUT_CAPACITY: usize = 16;
    pub const OUTPUT_SLOT_SIZE: usize = 20;
    pub const USER_ARG: usize = 24;
    pub const HANDLER_ID: usize = 28;
    pub const INPUT_BUFFER: usize = 32;
    pub const OUTPUT_BUFFER: usize = 40;
    pub const INPUT_TAIL_ADDR: usize = 48;
    pub const OUTPUT_TAIL_ADDR: usize = 56;
    pub const OUTPUT_HEAD_ADDR: usize = 64;
    pub const INPUT_PRODUCER: usize = 72;
    pub const DIRECT_MAX: usize = 76;
    pub const HOST_INPUT_BUFFER: usize = 80;
    pub const HOST_OUTPUT_BUFFER: usize = 88;
    pub const DIRECT_UPTO_ADDR: usize = 96;
    pub const ACTIVE: usize = 128;
    pub const TERMINATE: usize = 132;
    pub const HOST_WAITING: usize = 136;
    pub const STATE: usize = 256;
    pub const ERROR_CODE: usize = 260;
    pub const ERROR_COUNT: usize = 264;
    pub const KERNEL_SLEEPING: usize = 268;
    pub const MESSAGES_PROCESSED: usize = 272;
    pub const LAST_ACTIVITY: usize = 280;
    pub const INPUT_HEAD: usize = 384;
    pub const INPUT_TAIL: usize = 512;
    pub const OUTPUT_HEAD: usize = 640;
    pub const OUTPUT_TAIL: usize = 768;
    /// Frame header fields, relative to the slot start.
    pub const FRAME_LENGTH: usize = 0;
    pub const FRAME_TYPE_ID: usize = 4;
    pub const FRAME_FLAGS: usize = 6;
    pub const FRAME_CORRELATION_ID: usize = 8;
}

/// The protocol's numbers in one table, the way io_uring's uapi header is read by every
/// language: `(name, value)` with the spec's SCREAMING name. Kernel states are `STATE_*`, kernel
/// error codes `KERNEL_ERROR_*`. The native module exports it to TypeScript
/// (`protocolConstants().table`), and `tests/protocol.rs` compiles `kernels/ringbridge.cuh`
/// against it (each name prefixed `RB_`): a value changed in any language fails a test.
pub const CONSTANTS: &[(&str, u64)] = &[
    ("MAGIC", MAGIC as u64),
    ("VERSION", VERSION as u64),
    ("LINE_BYTES", LINE_BYTES as u64),
    ("CONTROL_BLOCK_BYTES", CONTROL_BLOCK_BYTES as u64),
    ("FRAME_HEADER_BYTES", FRAME_HEADER_BYTES as u64),
    ("MIN_SLOT_SIZE", MIN_SLOT_SIZE as u64),
    ("MAX_SLOT_SIZE", MAX_SLOT_SIZE as u64),
    ("MAX_CAPACITY", MAX_CAPACITY as u64),
    ("REGION_ALIGN", REGION_ALIGN as u64),
    ("ERROR_RECORD_BYTES", ErrorRecord::BYTES as u64),
    ("MULTI_HEADER_BYTES", MULTI_HEADER_BYTES as u64),
    ("MAX_REPLIES", MAX_REPLIES as u64),
    ("FIRST_HANDLER_CODE", FIRST_HANDLER_CODE as u64),
    ("HANDLER_ECHO", HANDLER_ECHO as u64),
    ("HANDLER_SAXPY", HANDLER_SAXPY as u64),
    ("HANDLER_USER", HANDLER_USER as u64),
    ("FLAG_ERROR", FLAG_ERROR as u64),
    ("FLAG_MULTI", FLAG_MULTI as u64),
    ("PRODUCER_HOST", PRODUCER_HOST as u64),
    ("PRODUCER_KERNEL", PRODUCER_KERNEL as u64),
    ("TERMINATE_NONE", TERMINATE_NONE as u64),
    ("TERMINATE_DRAIN", TERMINATE_DRAIN as u64),
    ("TERMINATE_ABANDON", TERMINATE_ABANDON as u64),
    ("WAIT_OUTPUT", WAIT_OUTPUT as u64),
    ("WAIT_INPUT", WAIT_INPUT as u64),
    ("STATE_LAUNCHING", KernelState::Launching as u64),
    ("STATE_RUNNING", KernelState::Running as u64),
    ("STATE_PAUSED", KernelState::Paused as u64),
    ("STATE_TERMINATED", KernelState::Terminated as u64),
    ("KERNEL_ERROR_NONE", kernel_error::NONE as u64),
    ("KERNEL_ERROR_BAD_FRAME", kernel_error::BAD_FRAME as u64),
    ("KERNEL_ERROR_BAD_PAYLOAD", kernel_error::BAD_PAYLOAD as u64),
    ("KERNEL_ERROR_SPIN_TIMEOUT", kernel_error::SPIN_TIMEOUT as u64),
    ("KERNEL_ERROR_REPLY_TOO_LARGE", kernel_error::REPLY_TOO_LARGE as u64),
    ("KERNEL_ERROR_HANDLER_FAULT", kernel_error::HANDLER_FAULT as u64),
    ("KERNEL_ERROR_SKIPPED", kernel_error::SKIPPED as u64),
];

/// Every (name, offset) pair of [`offsets`], in spec order; exported to JS and checked against
/// the spec by `tests/protocol.rs`.
pub const FIELD_OFFSETS: &[(&str, usize)] = &[
    ("magic", offsets::MAGIC),
    ("version", offsets::VERSION),
    ("input_capacity", offsets::INPUT_CAPACITY),
    ("input_slot_size", offsets::INPUT_SLOT_SIZE),
    ("output_capacity", offsets::OUTPUT_CAPACITY),
    ("output_slot_size", offsets::OUTPUT_SLOT_SIZE),
    ("user_arg", offsets::USER_ARG),
    ("handler_id", offsets::HANDLER_ID),
    ("input_buffer", offsets::INPUT_BUFFER),
    ("output_buffer", offsets::OUTPUT_BUFFER),
    ("input_tail_addr", offsets::INPUT_TAIL_ADDR),
    ("output_tail_addr", offsets::OUTPUT_TAIL_ADDR),
    ("output_head_addr", offsets::OUTPUT_HEAD_ADDR),
    ("input_producer", offsets::INPUT_PRODUCER),
    ("direct_max", offsets::DIRECT_MAX),
    ("host_input_buffer", offsets::HOST_INPUT_BUFFER),
    ("host_output_buffer", offsets::HOST_OUTPUT_BUFFER),
    ("direct_upto_addr", offsets::DIRECT_UPTO_ADDR),
    ("active", offsets::ACTIVE),
    ("terminate", offsets::TERMINATE),
    ("host_waiting", offsets::HOST_WAITING),
    ("state", offsets::STATE),
    ("error_code", offsets::ERROR_CODE),
    ("error_count", offsets::ERROR_COUNT),
    ("kernel_sleeping", offsets::KERNEL_SLEEPING),
    ("messages_processed", offsets::MESSAGES_PROCESSED),
    ("last_activity", offsets::LAST_ACTIVITY),
    ("input_head", offsets::INPUT_HEAD),
    ("input_tail", offsets::INPUT_TAIL),
    ("output_head", offsets::OUTPUT_HEAD),
    ("output_tail", offsets::OUTPUT_TAIL),
];

#[cfg(not(loom))]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<ControlBlock>() == CONTROL_BLOCK_BYTES);
    assert!(align_of::<ControlBlock>() == LINE_BYTES);
    assert!(offset_of!(ControlBlock, magic) == offsets::MAGIC);
    assert!(offset_of!(ControlBlock, version) == offsets::VERSION);
    assert!(offset_of!(ControlBlock, input_capacity) == offsets::INPUT_CAPACITY);
    assert!(offset_of!(ControlBlock, input_slot_size) == offsets::INPUT_SLOT_SIZE);
    assert!(offset_of!(ControlBlock, output_capacity) == offsets::OUTPUT_CAPACITY);
    assert!(offset_of!(ControlBlock, output_slot_size) == offsets::OUTPUT_SLOT_SIZE);
    assert!(offset_of!(ControlBlock, user_arg) == offsets::USER_ARG);
    assert!(offset_of!(ControlBlock, handler_id) == offsets::HANDLER_ID);
    assert!(offset_of!(ControlBlock, input_buffer) == offsets::INPUT_BUFFER);
    assert!(offset_of!(ControlBlock, output_buffer) == offsets::OUTPUT_BUFFER);
    assert!(offset_of!(ControlBlock, input_tail_addr) == offsets::INPUT_TAIL_ADDR);
    assert!(offset_of!(ControlBlock, output_tail_addr) == offsets::OUTPUT_TAIL_ADDR);
    assert!(offset_of!(ControlBlock, output_head_addr) == offsets::OUTPUT_HEAD_ADDR);
    assert!(offset_of!(ControlBlock, input_producer) == offsets::INPUT_PRODUCER);
    assert!(offset_of!(ControlBlock, direct_max) == offsets::DIRECT_MAX);
    assert!(offset_of!(ControlBlock, host_input_buffer) == offsets::HOST_INPUT_BUFFER);
    assert!(offset_of!(ControlBlock, host_output_buffer) == offsets::HOST_OUTPUT_BUFFER);
    assert!(offset_of!(ControlBlock, direct_upto_addr) == offsets::DIRECT_UPTO_ADDR);
    assert!(offset_of!(ControlBlock, active) == offsets::ACTIVE);
    assert!(offset_of!(ControlBlock, terminate) == offsets::TERMINATE);
    assert!(offset_of!(ControlBlock, host_waiting) == offsets::HOST_WAITING);
    assert!(offset_of!(ControlBlock, state) == offsets::STATE);
    assert!(offset_of!(ControlBlock, error_code) == offsets::ERROR_CODE);
    assert!(offset_of!(ControlBlock, error_count) == offsets::ERROR_COUNT);
    assert!(offset_of!(ControlBlock, kernel_sleeping) == offsets::KERNEL_SLEEPING);
    assert!(offset_of!(ControlBlock, messages_processed) == offsets::MESSAGES_PROCESSED);
    assert!(offset_of!(ControlBlock, last_activity) == offsets::LAST_ACTIVITY);
    assert!(offset_of!(ControlBlock, input_head) == offsets::INPUT_HEAD);
    assert!(offset_of!(ControlBlock, input_tail) == offsets::INPUT_TAIL);
    assert!(offset_of!(ControlBlock, output_head) == offsets::OUTPUT_HEAD);
    assert!(offset_of!(ControlBlock, output_tail) == offsets::OUTPUT_TAIL);
};

/// The 16-byte header at the start of every slot (spec §3, "Frame").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload bytes following the header.
    pub length: u32,
    /// Application message type.
    pub type_id: u16,
    /// `FLAG_*` bits.
    pub flags: u16,
    /// Request id; a reply carries its request's id.
    pub correlation_id: u64,
}

impl FrameHeader {
    /// Writes the header little-endian into the first 16 bytes of `slot`.
    ///
    /// # Panics
    /// If `slot` is shorter than [`FRAME_HEADER_BYTES`].
    pub fn write_to(&self, slot: &mut [u8]) {
        slot[0..4].copy_from_slice(&self.length.to_le_bytes());
        slot[4..6].copy_from_slice(&self.type_id.to_le_bytes());
        slot[6..8].copy_from_slice(&self.flags.to_le_bytes());
        slot[8..16].copy_from_slice(&self.correlation_id.to_le_bytes());
    }

    /// Reads a header from the first 16 bytes of `slot`.
    ///
    /// # Panics
    /// If `slot` is shorter than [`FRAME_HEADER_BYTES`].
    pub fn read_from(slot: &[u8]) -> Self {
        let u32_at = |o: usize| u32::from_le_bytes(slot[o..o + 4].try_into().unwrap());
        let u16_at = |o: usize| u16::from_le_bytes(slot[o..o + 2].try_into().unwrap());
        Self {
            length: u32_at(0),
            type_id: u16_at(4),
            flags: u16_at(6),
            correlation_id: u64::from_le_bytes(slot[8..16].try_into().unwrap()),
        }
    }
}

/// Payload of an error frame ([`FLAG_ERROR`]): 8 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorRecord {
    /// A `kernel_error::*` code or a handler-defined code ≥ 256.
    pub code: u32,
    /// Handler-defined detail (for `BAD_PAYLOAD`: the length received).
    pub detail: u32,
}

impl ErrorRecord {
    /// Size of the record in bytes.
    pub const BYTES: usize = 8;

    /// Encodes the record little-endian.
    pub fn to_bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0..4].copy_from_slice(&self.code.to_le_bytes());
        b[4..8].copy_from_slice(&self.detail.to_le_bytes());
        b
    }

    /// Decodes a record; `None` if `bytes` is shorter than 8.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some(Self {
            code: u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?),
            detail: u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?),
        })
    }
}

/// Shape of one ring: capacity and slot size, both powers of two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingConfig {
    /// Number of slots.
    pub capacity: u32,
    /// Bytes per slot, frame header included.
    pub slot_size: u32,
}

impl RingConfig {
    /// Largest payload one slot carries.
    pub fn max_payload(&self) -> usize {
        self.slot_size as usize - FRAME_HEADER_BYTES
    }

    /// Bytes of the slot array.
    pub fn bytes(&self) -> usize {
        self.capacity as usize * self.slot_size as usize
    }

    /// Checks the shape against the spec's limits (§7).
    ///
    /// # Errors
    /// [`crate::Error::InvalidConfig`] naming the ring, the value and the rule it broke.
    pub fn validate(&self, ring: &'static str) -> Result<(), crate::Error> {
        let bad = |field: &'static str, value: u32, expected: String| crate::Error::InvalidConfig {
            what: format!("{ring} {field}"),
            value: Some(value as u64),
            expected,
        };
        if !self.capacity.is_power_of_two() || self.capacity > MAX_CAPACITY {
            return Err(bad("capacity", self.capacity, format!("a power of two from 1 to {MAX_CAPACITY}")));
        }
        if !self.slot_size.is_power_of_two() || !(MIN_SLOT_SIZE..=MAX_SLOT_SIZE).contains(&self.slot_size) {
            return Err(bad("slot size", self.slot_size, format!("a power of two from {MIN_SLOT_SIZE} to {MAX_SLOT_SIZE} bytes")));
        }
        Ok(())
    }
}

/// Where everything sits inside one region (spec §3, "Region").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionLayout {
    /// Input ring shape.
    pub input: RingConfig,
    /// Output ring shape.
    pub output: RingConfig,
    /// Offset of the input slot array from the region base.
    pub input_offset: usize,
    /// Offset of the output slot array from the region base.
    pub output_offset: usize,
    /// Total bytes of the region.
    pub total_bytes: usize,
}

impl RegionLayout {
    /// Lays out the control block, then the input slots, then the output slots, each 128-aligned.
    ///
    /// # Errors
    /// [`crate::Error::InvalidConfig`] if either ring's shape breaks the spec's limits.
    pub fn new(input: RingConfig, output: RingConfig) -> Result<Self, crate::Error> {
        input.validate("input")?;
        output.validate("output")?;
        let input_offset = align_up(CONTROL_BLOCK_BYTES, REGION_ALIGN);
        let output_offset = align_up(input_offset + input.bytes(), REGION_ALIGN);
        let total_bytes = align_up(output_offset + output.bytes(), REGION_ALIGN);
        Ok(Self { input, output, input_offset, output_offset, total_bytes })
    }
}

/// Rounds `n` up to a multiple of `align` (a power of two).
pub const fn align_up(n: usize, align: usize) -> usize {
    (n + align - 1) & !(align - 1)
}

/// Slot of a position: `position & (capacity - 1)` (spec §7).
#[inline]
pub const fn slot_of(position: u64, capacity: u32) -> usize {
    (position & (capacity as u64 - 1)) as usize
}

/// Occupied slots between `head` and `tail`. Positions are free-running, so this is a wrapping
/// difference and never exceeds the capacity while (I1) holds.
#[inline]
pub const fn occupied(head: u64, tail: u64) -> u64 {
    tail.wrapping_sub(head)
}

/// Free slots in a ring of `capacity` between `head` and `tail`. More than `capacity` occupied
/// (I4 broken: the consumer stored a head behind `tail - capacity` or ahead of `tail`) reads as
/// full, so a producer waits instead of overwriting slots the consumer may own — and a corrupt
/// head from the other side cannot panic the subtraction (found by `tests/fuzz_frames.rs`).
#[inline]
pub const fn free(head: u64, tail: u64, capacity: u32) -> u64 {
    (capacity as u64).saturating_sub(occupied(head, tail))
}
