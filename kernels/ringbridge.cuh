// SPDX-License-Identifier: MIT
//
// ringbridge.cuh: the device side of the ringbridge ring protocol, version 4 (docs/PROTOCOL.md).
//
// It mirrors crates/ringbridge-core/src/protocol.rs: the control block, the frame header and the
// constants (each `RB_<NAME>` equals the entry `<NAME>` of `protocol::CONSTANTS`), the index
// arithmetic of §7, the frame a handler's outcome becomes (K3), the status words of §12, and
// the one family of atomics and fences every protocol access of the kernels goes through. Each
// of those helpers is named by operation, order and scope (`rb_ld_acquire_sys_u64`,
// `rb_st_release_gpu_u32`, `rb_fence_acq_rel_sys`, …) and is one inline PTX instruction or one
// CUDA atomic, in the manner of liburing's barrier.h and mscclpp's atomic_device.hpp: reading a
// call site tells its ordering without opening the helper. Inline PTX (sm_70 or newer) rather
// than libcu++'s cuda::atomic_ref, so NVRTC compiles this file with no include path at all.
//
// Everything outside the device-only part (constants, structs, static_asserts, index and frame
// functions) also compiles as host C++17 (RB_HOST_DEVICE is then `inline`): tests/protocol.rs
// builds it with the system C++ compiler and compares every offset and constant with Rust.
// User handlers (spec §13.1) are compiled after this file and use rb_context and rb_replies_of.

#pragma once

#if defined(__CUDACC_RTC__)
// NVRTC has no <cstdint> without include paths. Define RB_HAVE_STDINT before including this file
// if the translation unit already declares these names.
#ifndef RB_HAVE_STDINT
typedef unsigned char uint8_t;
typedef unsigned short uint16_t;
typedef unsigned int uint32_t;
typedef unsigned long long uint64_t;
#endif  // RB_HAVE_STDINT
#else
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <cmath>
#endif  // __CUDACC_RTC__

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define RB_HOST_DEVICE __host__ __device__ __forceinline__
#define RB_DEVICE __device__ __forceinline__
#else
#define RB_HOST_DEVICE inline
#endif  // __CUDACC__ || __CUDACC_RTC__

// ---------------------------------------------------------------------------------------------
// Constants (spec §3, §9, §12, §13). Each equals the entry of protocol::CONSTANTS whose name is
// this one without `RB_`; tests/protocol.rs fails on a value that differs or a name missing here.
// ---------------------------------------------------------------------------------------------

/// `"RBG1"` little-endian: the first word of every control block.
#define RB_MAGIC 0x31474252u
/// Protocol version; bumped on any layout or ordering change.
#define RB_VERSION 4u
/// One cache line as the protocol counts it (the GPU's 128-byte L2 line).
#define RB_LINE_BYTES 128u
/// Size of the control block: seven lines, one per writer group.
#define RB_CONTROL_BLOCK_BYTES 896u
/// Size of the frame header at the start of every slot.
#define RB_FRAME_HEADER_BYTES 16u
/// Smallest slot (header and 16 payload bytes).
#define RB_MIN_SLOT_SIZE 32u
/// Largest slot (1 MiB).
#define RB_MAX_SLOT_SIZE (1u << 20)
/// Largest ring capacity (2^24 slots).
#define RB_MAX_CAPACITY (1u << 24)
/// Alignment of the region base and of each slot array.
#define RB_REGION_ALIGN 128u
/// Size of an error frame's payload (rb_error_record).
#define RB_ERROR_RECORD_BYTES 8u
/// Bytes before the records of a multi-reply frame (RB_FLAG_MULTI): a u32 count, 4 reserved.
#define RB_MULTI_HEADER_BYTES 8u
/// Most replies one message may have (a user handler's max_replies): one output slot holds them.
#define RB_MAX_REPLIES 4096u
/// The first error code a handler may return (spec §12): codes below it are the kernel's.
#define RB_FIRST_HANDLER_CODE 256u

/// `handler_id` of the built-in echo handler.
#define RB_HANDLER_ECHO 0u
/// `handler_id` of the built-in saxpy handler.
#define RB_HANDLER_SAXPY 1u
/// `handler_id` of the test-only handler that executes `__trap()` on its first message, so a
/// host can check that a faulting kernel becomes a clear error (Rust: backend::cuda::HANDLER_TRAP).
#define RB_HANDLER_TRAP 255u
/// `handler_id` of a user handler compiled into the ring kernel (`RB_USER_HANDLER`, spec §13.1).
#define RB_HANDLER_USER 1024u

/// Frame flag: the payload is an rb_error_record, not a reply.
#define RB_FLAG_ERROR 1u
/// Frame flag: several replies to one message in one frame (u32 count, 4 reserved bytes, then
/// `count` records of the output type); a user handler launched with max_replies writes it.
#define RB_FLAG_MULTI 2u

/// `input_producer`: the host produces the input ring (through the bridge on dma and managed).
#define RB_PRODUCER_HOST 0u
/// `input_producer`: a route's previous stage produces it; the host's input_tail is unused.
#define RB_PRODUCER_KERNEL 1u

/// `terminate` word: keep running.
#define RB_TERMINATE_NONE 0u
/// `terminate` word: finish every message already in the input ring, then exit.
#define RB_TERMINATE_DRAIN 1u
/// `terminate` word: exit after the batch in hand; the rest is undelivered.
#define RB_TERMINATE_ABANDON 2u

/// `host_waiting` bit: the host sleeps until `output_tail` moves.
#define RB_WAIT_OUTPUT 1u
/// `host_waiting` bit: the host sleeps until `input_head` moves.
#define RB_WAIT_INPUT 2u

/// `state` word: control block initialised, kernel not yet polling.
#define RB_STATE_LAUNCHING 0u
/// `state` word: polling and dispatching.
#define RB_STATE_RUNNING 1u
/// `state` word: `active == 0`, polling commands only.
#define RB_STATE_PAUSED 2u
/// `state` word: the dispatch loop has exited; no field changes after this.
#define RB_STATE_TERMINATED 3u

/// Kernel error: none.
#define RB_KERNEL_ERROR_NONE 0u
/// Kernel error: a frame's `length` exceeds its slot's payload capacity.
#define RB_KERNEL_ERROR_BAD_FRAME 1u
/// Kernel error: the handler rejected a payload.
#define RB_KERNEL_ERROR_BAD_PAYLOAD 2u
/// Kernel error: a bounded spin ran out (the peer stopped moving its index).
#define RB_KERNEL_ERROR_SPIN_TIMEOUT 3u
/// Kernel error: the reply does not fit the output slot.
#define RB_KERNEL_ERROR_REPLY_TOO_LARGE 4u
/// Kernel error: the handler trapped (GPU) or panicked (CPU).
#define RB_KERNEL_ERROR_HANDLER_FAULT 5u
/// Not a kernel error: a shared producer's skip frame (spec §15), forwarded unchanged.
#define RB_KERNEL_ERROR_SKIPPED 6u

#ifndef RB_SPIN_LIMIT
/// Most polls in one bounded wait of the kernel (spec §12, SPIN_TIMEOUT): the poller's wait for
/// the blocks of a grid round, which sleeps about 256 ns per poll after its first thousand, so
/// this is several seconds. Define it before including this file to change it.
#define RB_SPIN_LIMIT (1u << 24)
#endif  // RB_SPIN_LIMIT

// ---------------------------------------------------------------------------------------------
// Layout (spec §3). No bit-fields; every field is naturally aligned; padding is explicit.
// ---------------------------------------------------------------------------------------------

/// The kernel's one parameter: setup, commands, status and the four ring indices.
struct alignas(128) rb_control_block {
  // line 0, setup: written by the host before launch (L1), read-only afterwards (I5).
  uint32_t magic;
  uint32_t version;
  uint32_t input_capacity;
  uint32_t input_slot_size;
  uint32_t output_capacity;
  uint32_t output_slot_size;
  uint32_t user_arg;
  uint32_t handler_id;        ///< RB_HANDLER_* of the built-in kernel
  uint64_t input_buffer;
  uint64_t output_buffer;
  uint64_t input_tail_addr;   ///< where the kernel polls the input tail (dma: a device word)
  uint64_t output_tail_addr;  ///< where the kernel publishes its output tail (dma: a mirror)
  uint64_t output_head_addr;  ///< where the kernel reads its output head (a route: the next stage's input_head)
  uint32_t input_producer;    ///< RB_PRODUCER_HOST, or RB_PRODUCER_KERNEL (a route's later stage)
  uint32_t direct_max;          ///< hybrid: rounds up to this many may go direct (0: never)
  uint64_t host_input_buffer;   ///< hybrid: the host's input slots (0: input never direct)
  uint64_t host_output_buffer;  ///< hybrid: the host's output slots (0: output never direct)
  uint64_t direct_upto_addr;    ///< hybrid: end of the direct rounds before the latest bridged one, for the bridge
  uint8_t pad0[24];
  // line 1, commands: written by the host only (I1).
  uint32_t active;
  uint32_t terminate;
  uint32_t host_waiting;
  uint32_t reserved1;
  uint8_t pad1[112];
  // line 2, status: written by the kernel only (I1).
  uint32_t state;
  uint32_t error_code;
  uint32_t error_count;
  uint32_t kernel_sleeping;
  uint64_t messages_processed;
  uint64_t last_activity;
  uint8_t pad2[96];
  // lines 3-6: one index per line, so the two sides' stores never share a line.
  uint64_t input_head;  // kernel
  uint8_t pad3[120];
  uint64_t input_tail;  // host
  uint8_t pad4[120];
  uint64_t output_head;  // host
  uint8_t pad5[120];
  uint64_t output_tail;  // kernel
  uint8_t pad6[120];
};

/// The 16-byte header at the start of every slot, little-endian.
struct rb_frame_header {
  uint32_t length;          ///< payload bytes following the header
  uint16_t type_id;         ///< application message type
  uint16_t flags;           ///< RB_FLAG_* bits
  uint64_t correlation_id;  ///< request id; a reply carries its request's id
};

/// Payload of an error frame (RB_FLAG_ERROR).
struct rb_error_record {
  uint32_t code;    ///< RB_KERNEL_ERROR_* or a handler code >= 256
  uint32_t detail;  ///< handler-defined detail (BAD_PAYLOAD: the length received)
};

static_assert(sizeof(rb_control_block) == RB_CONTROL_BLOCK_BYTES, "control block size");
static_assert(alignof(rb_control_block) == RB_LINE_BYTES, "control block alignment");
static_assert(sizeof(rb_frame_header) == RB_FRAME_HEADER_BYTES, "frame header size");
static_assert(sizeof(rb_error_record) == RB_ERROR_RECORD_BYTES, "error record size");

// NB: NVRTC 13.0 accepts neither __builtin_offsetof nor the null-pointer offsetof idiom in a
// constant expression (checked with the nvidia-cuda-nvrtc 13.0.88 wheel), so the offset checks
// run under nvcc and host C++ only; the struct text is the same in all three.
#if !defined(__CUDACC_RTC__)
#define RB_OFFSETOF(type, field) offsetof(type, field)
static_assert(RB_OFFSETOF(rb_control_block, magic) == 0, "magic");
static_assert(RB_OFFSETOF(rb_control_block, version) == 4, "version");
static_assert(RB_OFFSETOF(rb_control_block, input_capacity) == 8, "input_capacity");
static_assert(RB_OFFSETOF(rb_control_block, input_slot_size) == 12, "input_slot_size");
static_assert(RB_OFFSETOF(rb_control_block, output_capacity) == 16, "output_capacity");
static_assert(RB_OFFSETOF(rb_control_block, output_slot_size) == 20, "output_slot_size");
static_assert(RB_OFFSETOF(rb_control_block, user_arg) == 24, "user_arg");
static_assert(RB_OFFSETOF(rb_control_block, handler_id) == 28, "handler_id");
static_assert(RB_OFFSETOF(rb_control_block, input_buffer) == 32, "input_buffer");
static_assert(RB_OFFSETOF(rb_control_block, output_buffer) == 40, "output_buffer");
static_assert(RB_OFFSETOF(rb_control_block, input_tail_addr) == 48, "input_tail_addr");
static_assert(RB_OFFSETOF(rb_control_block, output_tail_addr) == 56, "output_tail_addr");
static_assert(RB_OFFSETOF(rb_control_block, output_head_addr) == 64, "output_head_addr");
static_assert(RB_OFFSETOF(rb_control_block, input_producer) == 72, "input_producer");
static_assert(RB_OFFSETOF(rb_control_block, direct_max) == 76, "direct_max");
static_assert(RB_OFFSETOF(rb_control_block, host_input_buffer) == 80, "host_input_buffer");
static_assert(RB_OFFSETOF(rb_control_block, host_output_buffer) == 88, "host_output_buffer");
static_assert(RB_OFFSETOF(rb_control_block, direct_upto_addr) == 96, "direct_upto_addr");
static_assert(RB_OFFSETOF(rb_control_block, active) == 128, "active");
static_assert(RB_OFFSETOF(rb_control_block, terminate) == 132, "terminate");
static_assert(RB_OFFSETOF(rb_control_block, host_waiting) == 136, "host_waiting");
static_assert(RB_OFFSETOF(rb_control_block, reserved1) == 140, "reserved1");
static_assert(RB_OFFSETOF(rb_control_block, state) == 256, "state");
static_assert(RB_OFFSETOF(rb_control_block, error_code) == 260, "error_code");
static_assert(RB_OFFSETOF(rb_control_block, error_count) == 264, "error_count");
static_assert(RB_OFFSETOF(rb_control_block, kernel_sleeping) == 268, "kernel_sleeping");
static_assert(RB_OFFSETOF(rb_control_block, messages_processed) == 272, "messages_processed");
static_assert(RB_OFFSETOF(rb_control_block, last_activity) == 280, "last_activity");
static_assert(RB_OFFSETOF(rb_control_block, input_head) == 384, "input_head");
static_assert(RB_OFFSETOF(rb_control_block, input_tail) == 512, "input_tail");
static_assert(RB_OFFSETOF(rb_control_block, output_head) == 640, "output_head");
static_assert(RB_OFFSETOF(rb_control_block, output_tail) == 768, "output_tail");
static_assert(RB_OFFSETOF(rb_frame_header, length) == 0, "frame length");
static_assert(RB_OFFSETOF(rb_frame_header, type_id) == 4, "frame type_id");
static_assert(RB_OFFSETOF(rb_frame_header, flags) == 6, "frame flags");
static_assert(RB_OFFSETOF(rb_frame_header, correlation_id) == 8, "frame correlation_id");
static_assert(RB_OFFSETOF(rb_error_record, detail) == 4, "error record detail");
#endif  // !__CUDACC_RTC__

// ---------------------------------------------------------------------------------------------
// User handler types (spec §13.1): what a handler compiled into the ring kernel receives.
// ---------------------------------------------------------------------------------------------

/// What a user handler knows of its message besides the payload (spec §13.1).
struct rb_context {
  uint64_t correlation_id;  ///< the request's correlation id
  uint32_t type_id;         ///< the request's type id
  uint32_t detail;          ///< with an error return: the error record's detail
};

/// Up to N replies to one message, for user handlers launched with max_replies (spec §13.1):
/// the handler pushes 0..N of them; the kernel sends them in one RB_FLAG_MULTI frame.
template <typename T, uint32_t N>
struct rb_replies_of {
  uint32_t count;  ///< replies pushed so far
  T items[N];      ///< the replies, in push order
  /// Appends a reply. @return false (and nothing appended) when N are already there
  RB_HOST_DEVICE bool push(const T& reply) {
    if (count >= N) return false;
    items[count++] = reply;
    return true;
  }
};

// ---------------------------------------------------------------------------------------------
// Index arithmetic (spec §7): positions are free-running u64; all differences wrap mod 2^64.
// ---------------------------------------------------------------------------------------------

/// Slot of a position.
/// @param position a free-running position
/// @param capacity ring capacity (a power of two)
/// @return `position & (capacity - 1)`
RB_HOST_DEVICE uint32_t rb_slot_of(uint64_t position, uint32_t capacity) {
  return static_cast<uint32_t>(position & (static_cast<uint64_t>(capacity) - 1));
}

/// Occupied slots between two positions (C1).
/// @param head the consumer's position
/// @param tail the producer's position
/// @return `tail - head` mod 2^64 (at most the capacity while I4 holds)
RB_HOST_DEVICE uint64_t rb_occupied(uint64_t head, uint64_t tail) { return tail - head; }

/// Free slots between two positions (P1).
/// @param head the consumer's position
/// @param tail the producer's position
/// @param capacity ring capacity
/// @return `capacity - (tail - head)`, or 0 when more than `capacity` reads as occupied (I4
///   broken by a corrupt index): a producer then waits instead of writing slots it does not own
RB_HOST_DEVICE uint64_t rb_free(uint64_t head, uint64_t tail, uint32_t capacity) {
  const uint64_t used = rb_occupied(head, tail);
  return used >= capacity ? 0 : static_cast<uint64_t>(capacity) - used;
}

/// Address of the slot that holds a position.
/// @param slots base of the slot array (128-aligned)
/// @param slot_size bytes per slot (a power of two, header included)
/// @param capacity ring capacity
/// @param position a free-running position
/// @return the slot's first byte (32-aligned, since slot_size >= 32 is a power of two)
RB_HOST_DEVICE uint8_t* rb_slot_ptr(uint8_t* slots, uint32_t slot_size, uint32_t capacity,
                                    uint64_t position) {
  return slots + static_cast<uint64_t>(rb_slot_of(position, capacity)) * slot_size;
}

/// Payload bytes a slot holds (Rust: `RingConfig::max_payload`). A frame longer than this is
/// BAD_FRAME in an input slot (C3) and REPLY_TOO_LARGE for an output slot (K3).
/// @param slot_size bytes per slot, header included (>= RB_MIN_SLOT_SIZE)
/// @return `slot_size - RB_FRAME_HEADER_BYTES`
RB_HOST_DEVICE uint32_t rb_max_payload(uint32_t slot_size) {
  return slot_size - RB_FRAME_HEADER_BYTES;
}

// ---------------------------------------------------------------------------------------------
// Output frames (K3, spec §3.3): what a handler's outcome becomes in its output slot, the same
// bytes as crates/ringbridge-core/src/backend/handlers.rs writes.
// ---------------------------------------------------------------------------------------------

/// rb_outcome kind: a reply of `length` bytes was written to the reply area.
#define RB_OUTCOME_REPLY 0u
/// rb_outcome kind: the message is rejected; the host gets an error frame.
#define RB_OUTCOME_ERROR 1u

/// What a handler did with one message (Rust: `handlers::Outcome`).
struct rb_outcome {
  uint32_t kind;     ///< RB_OUTCOME_*
  uint32_t type_id;  ///< reply message type (REPLY)
  uint32_t length;   ///< reply payload bytes written (REPLY)
  uint32_t code;     ///< error code (ERROR)
  uint32_t detail;   ///< error detail (ERROR)
};

/// A reply outcome.
/// @param type_id reply message type
/// @param length reply payload bytes
/// @return the outcome
RB_HOST_DEVICE rb_outcome rb_reply(uint32_t type_id, uint32_t length) {
  rb_outcome o = {RB_OUTCOME_REPLY, type_id, length, 0u, 0u};
  return o;
}

/// An error outcome.
/// @param code RB_KERNEL_ERROR_* or a handler code >= 256
/// @param detail handler-defined detail
/// @return the outcome
RB_HOST_DEVICE rb_outcome rb_error(uint32_t code, uint32_t detail) {
  rb_outcome o = {RB_OUTCOME_ERROR, 0u, 0u, code, detail};
  return o;
}

/// K3: writes the header (and for an error, the rb_error_record) of the frame an outcome
/// becomes. A reply keeps the request's correlation id; an error frame also keeps its type_id.
/// A reply longer than the slot's payload area becomes ERROR REPLY_TOO_LARGE (detail: length).
/// @param request the request's header
/// @param outcome what the handler returned (its reply, if any, is already in the payload area)
/// @param out_slot the reserved output slot (header at 0, payload at 16)
/// @param out_slot_size bytes per output slot
/// @return the error code of the frame written (0 for a reply)
RB_HOST_DEVICE uint32_t rb_complete_frame(const rb_frame_header* request, rb_outcome outcome,
                                          uint8_t* out_slot, uint32_t out_slot_size) {
  if (outcome.kind == RB_OUTCOME_REPLY && outcome.length > rb_max_payload(out_slot_size)) {
    outcome = rb_error(RB_KERNEL_ERROR_REPLY_TOO_LARGE, outcome.length);
  }
  rb_frame_header* h = reinterpret_cast<rb_frame_header*>(out_slot);
  if (outcome.kind == RB_OUTCOME_REPLY) {
    h->length = outcome.length;
    h->type_id = static_cast<uint16_t>(outcome.type_id);
    h->flags = 0;
    h->correlation_id = request->correlation_id;
    return RB_KERNEL_ERROR_NONE;
  }
  rb_error_record* r = reinterpret_cast<rb_error_record*>(out_slot + RB_FRAME_HEADER_BYTES);
  r->code = outcome.code;
  r->detail = outcome.detail;
  h->length = RB_ERROR_RECORD_BYTES;
  h->type_id = request->type_id;
  h->flags = RB_FLAG_ERROR;
  h->correlation_id = request->correlation_id;
  return outcome.code;
}

/// Stores a little-endian f32 into a reply.
/// @param p 4-aligned on the device
/// @param v the value
RB_HOST_DEVICE void rb_store_f32(uint8_t* p, float v) {
#if defined(__CUDA_ARCH__)
  *reinterpret_cast<float*>(p) = v;
#else
  std::memcpy(p, &v, sizeof v);
#endif  // __CUDA_ARCH__
}

/// One saxpy element: `fmaf(a, x, y)`, one rounding (the bits of Rust's `f32::mul_add`), with
/// any NaN result made the canonical quiet NaN 0x7fffffff so every backend answers the same bits
/// (GPUs do not propagate payloads).
/// @param a the scale
/// @param x the x element
/// @param y the y element
/// @return the element of the reply
RB_HOST_DEVICE float rb_saxpy_element(float a, float x, float y) {
  const float r = fmaf(a, x, y);
#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
  return r != r ? __uint_as_float(0x7fffffffu) : r;
#else
  if (r != r) {
    const uint32_t bits = 0x7fffffffu;
    float nan;
    std::memcpy(&nan, &bits, sizeof nan);
    return nan;
  }
  return r;
#endif  // __CUDACC__ || __CUDACC_RTC__
}

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)

// ---------------------------------------------------------------------------------------------
// Atomics and fences: the one family. Name: rb_<op>_<order>_<scope>_<type>, where
//  - op: ld, st, fence, or a read-modify-write (cas, add, max, exch);
//  - order: relaxed, acquire, release, acq_rel, sc;
//  - scope: sys (the peer may be a CPU thread or a copy engine: every control-block word, index
//    and command, since the region is host memory mapped into the GPU) or gpu (the peer is
//    another block of this kernel: rb_grid only; .gpu does not order against the CPU).
// Each is one instruction; the "memory" clobber keeps the compiler from moving slot accesses
// across it. A relaxed load followed by rb_fence_acq_rel_sys is an acquire (the PTX fence
// pattern), which lets one round trip across PCIe serve as both poll and acquire.
// The sys helpers take the control block's uint64_t; the gpu ones unsigned long long, the type
// of CUDA's atomicCAS/atomicAdd that rb_grid's words also serve (the same type under NVRTC,
// `unsigned long` vs `unsigned long long` under nvcc's <cstdint>).
// ---------------------------------------------------------------------------------------------

/// ld.relaxed.sys u64: polls of the command pair and the input tail (K1, C2: made acquires by
/// rb_fence_acq_rel_sys) and of the output head in the K4 wait; the kernel's own indices at
/// start (I1: it is their only writer).
/// @param p a global (device, mapped or managed) address
/// @return the value
RB_DEVICE uint64_t rb_ld_relaxed_sys_u64(const uint64_t* p) {
  uint64_t v;
  asm volatile("ld.relaxed.sys.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
}

/// ld.relaxed.sys u32: the kernel's own error words at start (§12, I1); a worker block's watch
/// of `terminate` (it only leaves on ABANDON, and reads nothing the host wrote before it).
/// @param p a global address
/// @return the value
RB_DEVICE uint32_t rb_ld_relaxed_sys_u32(const uint32_t* p) {
  uint32_t v;
  asm volatile("ld.relaxed.sys.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

/// ld.acquire.sys u64: P2, the output head, pairs with the consumer's C4 release (the host's,
/// or a route's next stage); C2, the input tail (DRAIN's re-read), pairs with the producer's P4.
/// @param p a global address
/// @return the value
RB_DEVICE uint64_t rb_ld_acquire_sys_u64(const uint64_t* p) {
  uint64_t v;
  asm volatile("ld.acquire.sys.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
}

/// st.relaxed.sys u32: `error_code` (§12), published by the release of `error_count` after it.
/// @param p a global address
/// @param v the value
RB_DEVICE void rb_st_relaxed_sys_u32(uint32_t* p, uint32_t v) {
  asm volatile("st.relaxed.sys.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

/// st.relaxed.sys u64: K5's statistics, `messages_processed` and `last_activity`.
/// @param p a global address
/// @param v the value
RB_DEVICE void rb_st_relaxed_sys_u64(uint64_t* p, uint64_t v) {
  asm volatile("st.relaxed.sys.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}

/// st.release.sys u32: `error_count` (§12; a host that acquires the count sees the code) and
/// K8's `state` (a host that acquires TERMINATED sees every index and counter before it).
/// @param p a global address
/// @param v the value
RB_DEVICE void rb_st_release_sys_u32(uint32_t* p, uint32_t v) {
  asm volatile("st.release.sys.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

/// st.release.sys u64: P4, the output tail, pairs with the consumer's C2 acquire; C4, the input
/// head, pairs with the producer's P2 acquire (K5, K6).
/// @param p a global address
/// @param v the value
RB_DEVICE void rb_st_release_sys_u64(uint64_t* p, uint64_t v) {
  asm volatile("st.release.sys.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}

/// fence.acq_rel.sys: after relaxed polls that saw the commands or the input tail move, makes
/// those loads acquires (K1 with the host's H5 release of terminate, C2 with its P4) without
/// loading the words again, which would cost another PCIe round trip on `mapped`.
RB_DEVICE void rb_fence_acq_rel_sys() { asm volatile("fence.acq_rel.sys;" ::: "memory"); }

/// fence.acq_rel.gpu: before a worker block's relaxed add to rb_grid.done, makes it a release
/// of the block's output slot writes to the poller, a thread of the same GPU (gpu scope covers
/// both). The poller acquires `done` at gpu scope and then publishes with rb_fence_sc_sys and a
/// system-scope release: causality order is transitive across the two scopes, so the host (or
/// the copy engine) that acquires the output tail sees every block's slots (P3 before P4)
/// without a system-scope fence per block and chunk.
RB_DEVICE void rb_fence_acq_rel_gpu() { asm volatile("fence.acq_rel.gpu;" ::: "memory"); }

/// fence.sc.sys: K8, after the release of `state` (spec §5.1: every state change is a release
/// then a SeqCst fence); K5, before the release of the output tail, so that the round's slot
/// writes by every block are performed system-wide (P4).
RB_DEVICE void rb_fence_sc_sys() { asm volatile("fence.sc.sys;" ::: "memory"); }

/// ld.relaxed.gpu u64: rb_grid's claim position and round fields, ordered by the acquire of
/// avail_end before them.
/// @param p an rb_grid word
/// @return the value
RB_DEVICE unsigned long long rb_ld_relaxed_gpu_u64(const unsigned long long* p) {
  unsigned long long v;
  asm volatile("ld.relaxed.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
}

/// ld.relaxed.gpu u32: rb_grid's chunk size and exit flag.
/// @param p an rb_grid word
/// @return the value
RB_DEVICE uint32_t rb_ld_relaxed_gpu_u32(const uint32_t* p) {
  uint32_t v;
  asm volatile("ld.relaxed.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

/// ld.acquire.gpu u64: a block's read of rb_grid.avail_end pairs with the poller's release of
/// it (the round's fields and input slots); the poller's read of rb_grid.done pairs with the
/// blocks' fence and add (their output slots).
/// @param p an rb_grid word
/// @return the value
RB_DEVICE unsigned long long rb_ld_acquire_gpu_u64(const unsigned long long* p) {
  unsigned long long v;
  asm volatile("ld.acquire.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
}

/// st.relaxed.gpu u64: the poller's round fields and claim position, published by the release
/// of avail_end after them.
/// @param p an rb_grid word
/// @param v the value
RB_DEVICE void rb_st_relaxed_gpu_u64(unsigned long long* p, unsigned long long v) {
  asm volatile("st.relaxed.gpu.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}

/// st.relaxed.gpu u32: the poller's chunk size, published by the release of avail_end.
/// @param p an rb_grid word
/// @param v the value
RB_DEVICE void rb_st_relaxed_gpu_u32(uint32_t* p, uint32_t v) {
  asm volatile("st.relaxed.gpu.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

/// st.release.gpu u64: rb_grid.avail_end, the end of a grid round; pairs with the blocks'
/// acquire in their claims.
/// @param p an rb_grid word
/// @param v the value
RB_DEVICE void rb_st_release_gpu_u64(unsigned long long* p, unsigned long long v) {
  asm volatile("st.release.gpu.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}

/// st.release.gpu u32: rb_grid.exit, set before TERMINATED (K8).
/// @param p an rb_grid word
/// @param v the value
RB_DEVICE void rb_st_release_gpu_u32(uint32_t* p, uint32_t v) {
  asm volatile("st.release.gpu.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

/// Relaxed gpu-scope compare-and-swap (CUDA's atomicCAS): a block's claim of a chunk.
/// @param p an rb_grid word
/// @param expected the value the claim was computed from
/// @param desired the new claim position
/// @return the value before (the claim succeeded if it equals `expected`)
RB_DEVICE unsigned long long rb_cas_relaxed_gpu_u64(unsigned long long* p,
                                                    unsigned long long expected,
                                                    unsigned long long desired) {
  return atomicCAS(p, expected, desired);
}

/// Relaxed gpu-scope add (CUDA's atomicAdd): rb_grid.done after rb_fence_acq_rel_gpu.
/// @param p an rb_grid word
/// @param v the addend
/// @return the value before
RB_DEVICE unsigned long long rb_add_relaxed_gpu_u64(unsigned long long* p, unsigned long long v) {
  return atomicAdd(p, v);
}

/// Relaxed gpu-scope add (CUDA's atomicAdd): error counts, a block's (shared memory) and the
/// grid round's; read after a barrier or the acquire of rb_grid.done.
/// @param p a shared or rb_grid word
/// @param v the addend
/// @return the value before
RB_DEVICE uint32_t rb_add_relaxed_gpu_u32(uint32_t* p, uint32_t v) { return atomicAdd(p, v); }

/// Relaxed gpu-scope max (CUDA's atomicMax): error keys, a block's (shared memory) and the grid
/// round's; read like the counts.
/// @param p a shared or rb_grid word
/// @param v the candidate
/// @return the value before
RB_DEVICE unsigned long long rb_max_relaxed_gpu_u64(unsigned long long* p, unsigned long long v) {
  return atomicMax(p, v);
}

/// Relaxed gpu-scope exchange (CUDA's atomicExch): the poller takes and resets the round's
/// error key after its acquire of rb_grid.done.
/// @param p an rb_grid word
/// @param v the new value
/// @return the value before
RB_DEVICE unsigned long long rb_exch_relaxed_gpu_u64(unsigned long long* p, unsigned long long v) {
  return atomicExch(p, v);
}

/// Relaxed gpu-scope exchange of a 32-bit word: the round's error count, as the key.
/// @param p an rb_grid word
/// @param v the new value
/// @return the value before
RB_DEVICE uint32_t rb_exch_relaxed_gpu_u32(uint32_t* p, uint32_t v) { return atomicExch(p, v); }

// ---------------------------------------------------------------------------------------------
// Slot loads and the clock. Slot accesses are weak (no order, no scope): the index acquire
// before them or release after them orders them (C3, P3).
// ---------------------------------------------------------------------------------------------

/// Loads 16 bytes of a slot, caching in L2 only. On `dma` the copy engine writes input slots
/// into device memory behind the SMs' L1, so slot loads must not hit a line cached on an earlier
/// lap; `.cg` bypasses L1 (spec §11).
/// @param p a 16-aligned global address
/// @return the 16 bytes as four little-endian words
RB_DEVICE uint4 rb_ld_slot_v4(const uint8_t* p) {
  uint4 v;
  asm volatile("ld.global.cg.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

/// Loads one 32-bit word of a slot, caching in L2 only (see rb_ld_slot_v4).
/// @param p a 4-aligned global address
/// @return the word
RB_DEVICE uint32_t rb_ld_slot_u32(const uint8_t* p) {
  uint32_t v;
  asm volatile("ld.global.cg.u32 %0, [%1];" : "=r"(v) : "l"(p));
  return v;
}

/// Global timer in nanoseconds (for `last_activity`).
/// @return the GPU's %globaltimer
RB_DEVICE uint64_t rb_now_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// ---------------------------------------------------------------------------------------------
// Status words (spec §12, K8). The kernel is the single writer of the status line (I1), so it
// keeps its own copy of the error words and stores them without a read-modify-write (there is
// none across PCIe, no host-native atomics). One thread of the kernel writes them (the poller).
// ---------------------------------------------------------------------------------------------

/// The kernel's copy of its error words, so recording an error loads nothing across PCIe.
struct rb_errors {
  uint32_t count;  ///< `error_count` as last stored
  bool code_set;   ///< `error_code != RB_KERNEL_ERROR_NONE`
};

/// Reads the error words the control block holds (a relaunch resumes them).
/// @param cb the control block
/// @return the kernel's copy
RB_DEVICE rb_errors rb_load_errors(rb_control_block* cb) {
  rb_errors e;
  // Relaxed: this kernel is their only writer (I1).
  e.code_set = rb_ld_relaxed_sys_u32(&cb->error_code) != RB_KERNEL_ERROR_NONE;
  e.count = rb_ld_relaxed_sys_u32(&cb->error_count);
  return e;
}

/// record_error (§12) for `n` errors at once: `code` becomes `error_code` unless one is already
/// recorded (the first code wins); every error is counted.
/// @param cb the control block
/// @param e the kernel's copy of the error words (from rb_load_errors)
/// @param code RB_KERNEL_ERROR_* or a handler code >= 256 (not 0): the earliest of the `n`
/// @param n errors to count (not 0)
RB_DEVICE void rb_record_error(rb_control_block* cb, rb_errors* e, uint32_t code, uint32_t n) {
  if (!e->code_set) {
    rb_st_relaxed_sys_u32(&cb->error_code, code);
    e->code_set = true;
  }
  e->count += n;
  // ORDERING: (§12) release: a host that acquires the count sees the code stored before it.
  rb_st_release_sys_u32(&cb->error_count, e->count);
}

/// K8: publishes a new kernel state.
/// @param cb the control block
/// @param state RB_STATE_*
RB_DEVICE void rb_set_state(rb_control_block* cb, uint32_t state) {
  // ORDERING: (K8) release: a host that acquires `state` sees every index and counter written
  // before it (TERMINATED is final); then the SeqCst fence of every state change (§5.1).
  rb_st_release_sys_u32(&cb->state, state);
  rb_fence_sc_sys();
}

#endif  // __CUDACC__ || __CUDACC_RTC__
