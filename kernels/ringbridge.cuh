// SPDX-License-Identifier: MIT
//
// ringbridge.cuh: the device side of the ringbridge ring protocol, version 2 (docs/PROTOCOL.md).
//
// It mirrors crates/ringbridge-core/src/protocol.rs field for field: the control block, the frame
// header, the constants, and the producer/consumer steps (P1–P4, C1–C4) and kernel steps (K1–K8)
// with the system-scope orderings the spec names at each step. Acquire and release are inline PTX
// (sm_70 or newer) rather than libcu++, so NVRTC compiles this file with no include path at all.
// The layout part (structs, constants, static_asserts) and the handler bodies also compile as
// host C++17; tests/protocol.rs builds them with the system C++ compiler and compares every
// offset and constant with the Rust definitions.
//
// Granularity: the ring ends (rb_consumer, rb_producer) are plain structs. A `thread` function
// assumes one thread owns the struct. A `_warp` function assumes all 32 lanes of a converged warp
// call it with identical copies of the struct; lane 0 touches the shared indices and broadcasts,
// so the copies stay identical.

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
// Constants (spec §3, §9, §12). Each equals the Rust constant of the same name without `RB_`.
// ---------------------------------------------------------------------------------------------

/// `"RBG1"` little-endian: the first word of every control block.
#define RB_MAGIC 0x31474252u
/// Protocol version; bumped on any layout or ordering change.
#define RB_VERSION 3u
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

/// Frame flag: the payload is an rb_error_record, not a reply.
/// `input_producer`: the host produces the input ring (through the bridge on dma and managed).
#define RB_PRODUCER_HOST 0u
/// `input_producer`: a route's previous stage produces it; the host's input_tail is unused.
#define RB_PRODUCER_KERNEL 1u
#define RB_FLAG_ERROR 1u
/// Frame flag: several replies to one message in one frame (u32 count, 4 reserved bytes, then
/// `count` records of the output type); a user handler launched with max_replies writes it.
#define RB_FLAG_MULTI 2u
/// `handler_id` of the built-in echo handler.
#define RB_HANDLER_ECHO 0u
/// `handler_id` of the built-in saxpy handler.
#define RB_HANDLER_SAXPY 1u
/// `handler_id` of the test-only handler that executes `__trap()` on its first message, so a
/// host can check that a faulting kernel becomes a clear error.
#define RB_HANDLER_TRAP 255u
/// `handler_id` of a user handler compiled into the ring kernel (`RB_USER_HANDLER`, spec §13.1).
#define RB_HANDLER_USER 1024u

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

/// What a user handler knows of its message besides the payload (spec §13.1).
struct rb_context {
  uint64_t correlation_id;  ///< the request's correlation id
  uint32_t type_id;         ///< the request's type id
  uint32_t detail;          ///< with an error return: the error record's detail
};

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
/// Not a kernel error: a shared producer's skip frame (spec §16), forwarded unchanged.
#define RB_KERNEL_ERROR_SKIPPED 6u

#ifndef RB_SPIN_LIMIT
/// Most polls of a peer index in one bounded wait (spec §12, SPIN_TIMEOUT). With the back-off of
/// rb_pause this is about 16 s; define it before including this file to change it.
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
  uint8_t pad0[52];
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
// Index arithmetic (spec §7): positions are free-running u64; all differences wrap mod 2^64.
// ---------------------------------------------------------------------------------------------

/// Slot of a position.
/// @param position a free-running position
/// @param capacity ring capacity (a power of two)
/// @return `position & (capacity - 1)`
RB_HOST_DEVICE uint32_t rb_slot_of(uint64_t position, uint32_t capacity) {
  return static_cast<uint32_t>(position & (static_cast<uint64_t>(capacity) - 1));
}

/// Occupied slots between two positions.
/// @param head the consumer's position
/// @param tail the producer's position
/// @return `tail - head` mod 2^64 (at most the capacity while I4 holds)
RB_HOST_DEVICE uint64_t rb_occupied(uint64_t head, uint64_t tail) { return tail - head; }

/// Free slots between two positions.
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

/// Whether a frame's length fits its slot (C3; otherwise the frame is BAD_FRAME).
/// @param header the frame header read from the slot
/// @param slot_size bytes per slot of that ring
/// @return `header->length <= slot_size - RB_FRAME_HEADER_BYTES`
RB_HOST_DEVICE bool rb_frame_valid(const rb_frame_header* header, uint32_t slot_size) {
  return header->length <= slot_size - RB_FRAME_HEADER_BYTES;
}

// ---------------------------------------------------------------------------------------------
// Built-in handlers (spec §13): bit-for-bit the same as crates/ringbridge-core/src/backend/
// handlers.rs. One thread per message; they also compile as host C++ for cross-checks.
// ---------------------------------------------------------------------------------------------

/// rb_outcome kind: a reply of `length` bytes was written to the reply area.
#define RB_OUTCOME_REPLY 0u
/// rb_outcome kind: the message is rejected; the host gets an error frame.
#define RB_OUTCOME_ERROR 1u
/// rb_outcome kind: no frame for this message (thread granularity only; see rb_ring_reserve_warp).
#define RB_OUTCOME_NO_REPLY 2u

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

/// Loads a little-endian f32 from a payload.
/// @param p 4-aligned on the device (slot start is 32-aligned, payload at +16)
/// @return the value
RB_HOST_DEVICE float rb_load_f32(const uint8_t* p) {
#if defined(__CUDA_ARCH__)
  return *reinterpret_cast<const float*>(p);
#else
  float v;
  std::memcpy(&v, p, sizeof v);
  return v;
#endif  // __CUDA_ARCH__
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

/// Copies payload bytes, 16 at a time where both sides allow it.
/// @param dst destination (a payload area: 16-aligned on the device)
/// @param src source (a payload area: 16-aligned on the device)
/// @param n bytes
RB_HOST_DEVICE void rb_copy_bytes(uint8_t* dst, const uint8_t* src, uint32_t n) {
#if defined(__CUDA_ARCH__)
  uint32_t i = 0;
  for (; i + 16 <= n; i += 16) {
    *reinterpret_cast<uint4*>(dst + i) = *reinterpret_cast<const uint4*>(src + i);
  }
  for (; i < n; ++i) dst[i] = src[i];
#else
  if (n != 0) std::memcpy(dst, src, n);
#endif  // __CUDA_ARCH__
}

/// Echo: replies with the request's payload and type.
/// @param request the request's header
/// @param payload the request's payload (`request->length` bytes)
/// @param reply the output slot's payload area
/// @param reply_capacity bytes of `reply` (output slot size - 16)
/// @return REPLY, or ERROR REPLY_TOO_LARGE with the payload length as detail
RB_HOST_DEVICE rb_outcome rb_handle_echo(const rb_frame_header* request, const uint8_t* payload,
                                         uint8_t* reply, uint32_t reply_capacity) {
  const uint32_t n = request->length;
  if (n > reply_capacity) return rb_error(RB_KERNEL_ERROR_REPLY_TOO_LARGE, n);
  rb_copy_bytes(reply, payload, n);
  return rb_reply(request->type_id, n);
}

/// Saxpy: payload `a: f32, x: [f32; n], y: [f32; n]`; reply `r[i] = fmaf(a, x[i], y[i])`.
/// One rounding per element, so the bits equal Rust's `f32::mul_add`.
/// @param request the request's header
/// @param payload the request's payload (`request->length` bytes)
/// @param reply the output slot's payload area
/// @param reply_capacity bytes of `reply`
/// @return REPLY of 4n bytes; ERROR BAD_PAYLOAD (detail: length) unless length = 4 + 8n;
///         ERROR REPLY_TOO_LARGE (detail: 4n) if the reply does not fit
/// One saxpy element: `fmaf(a, x, y)`, one rounding, with any NaN result made the canonical
/// quiet NaN 0x7fffffff so every backend answers the same bits (GPUs do not propagate payloads).
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
    memcpy(&nan, &bits, sizeof nan);
    return nan;
  }
  return r;
#endif  // __CUDACC__ || __CUDACC_RTC__
}

RB_HOST_DEVICE rb_outcome rb_handle_saxpy(const rb_frame_header* request, const uint8_t* payload,
                                          uint8_t* reply, uint32_t reply_capacity) {
  const uint32_t len = request->length;
  if (len < 4 || (len - 4) % 8 != 0) return rb_error(RB_KERNEL_ERROR_BAD_PAYLOAD, len);
  const uint32_t n = (len - 4) / 8;
  if (n * 4 > reply_capacity) return rb_error(RB_KERNEL_ERROR_REPLY_TOO_LARGE, n * 4);
  const float a = rb_load_f32(payload);
  const uint8_t* x = payload + 4;
  const uint8_t* y = payload + 4 + 4 * n;
  for (uint32_t i = 0; i < n; ++i) {
    rb_store_f32(reply + 4 * i, rb_saxpy_element(a, rb_load_f32(x + 4 * i), rb_load_f32(y + 4 * i)));
  }
  return rb_reply(request->type_id, n * 4);
}

/// K3: turns a handler's outcome into the frame staged in the output slot. A reply keeps the
/// request's correlation id; an error frame also keeps its type_id and carries an rb_error_record.
/// A reply longer than the slot's payload area becomes ERROR REPLY_TOO_LARGE (detail: length).
/// @param request the request's header
/// @param outcome what the handler returned (its reply, if any, is already in the payload area)
/// @param out_slot the reserved output slot (header at 0, payload at 16)
/// @param out_slot_size bytes per output slot
/// @return the error code the caller must record with rb_record_error (0 for a reply or
///         NO_REPLY); for NO_REPLY nothing is written and the slot must not be pushed
RB_HOST_DEVICE uint32_t rb_complete_frame(const rb_frame_header* request, rb_outcome outcome,
                                          uint8_t* out_slot, uint32_t out_slot_size) {
  const uint32_t capacity = out_slot_size - RB_FRAME_HEADER_BYTES;
  if (outcome.kind == RB_OUTCOME_REPLY && outcome.length > capacity) {
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
  if (outcome.kind == RB_OUTCOME_ERROR) {
    rb_error_record* r = reinterpret_cast<rb_error_record*>(out_slot + RB_FRAME_HEADER_BYTES);
    r->code = outcome.code;
    r->detail = outcome.detail;
    h->length = RB_ERROR_RECORD_BYTES;
    h->type_id = request->type_id;
    h->flags = RB_FLAG_ERROR;
    h->correlation_id = request->correlation_id;
    return outcome.code;
  }
  return RB_KERNEL_ERROR_NONE;
}

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)

// ---------------------------------------------------------------------------------------------
// System-scope loads and stores (spec §5). The region may be mapped host memory, so every access
// to an index or command word is .sys: a .gpu-scope operation does not order against the CPU.
// The "memory" clobber keeps the compiler from moving slot accesses across them.
// ---------------------------------------------------------------------------------------------

/// Relaxed system-scope load (the spin part of P2/C2; command and status words).
/// @param p a global (device, mapped or managed) address
/// @return the value
RB_DEVICE uint64_t rb_ld_relaxed_sys_u64(const uint64_t* p) {
  uint64_t v;
  asm volatile("ld.relaxed.sys.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
}

/// Relaxed system-scope load of a 32-bit word.
/// @param p a global address
/// @return the value
RB_DEVICE uint32_t rb_ld_relaxed_sys_u32(const uint32_t* p) {
  uint32_t v;
  asm volatile("ld.relaxed.sys.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

/// Acquire system-scope load (P2, C2, K1): slot reads after it see what the releasing side wrote.
/// @param p a global address
/// @return the value
RB_DEVICE uint64_t rb_ld_acquire_sys_u64(const uint64_t* p) {
  uint64_t v;
  asm volatile("ld.acquire.sys.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
}

/// Acquire system-scope load of a 32-bit word (K1: `terminate`, `active`).
/// @param p a global address
/// @return the value
RB_DEVICE uint32_t rb_ld_acquire_sys_u32(const uint32_t* p) {
  uint32_t v;
  asm volatile("ld.acquire.sys.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

/// Release system-scope store (P4, C4): the slot accesses before it happen before the peer's
/// acquire that observes the value.
/// @param p a global address
/// @param v the value
RB_DEVICE void rb_st_release_sys_u64(uint64_t* p, uint64_t v) {
  asm volatile("st.release.sys.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}

/// Release system-scope store of a 32-bit word (K8: `state`; `error_count`).
/// @param p a global address
/// @param v the value
RB_DEVICE void rb_st_release_sys_u32(uint32_t* p, uint32_t v) {
  asm volatile("st.release.sys.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

/// Relaxed system-scope store of a 32-bit word (`error_code`).
/// @param p a global address
/// @param v the value
RB_DEVICE void rb_st_relaxed_sys_u32(uint32_t* p, uint32_t v) {
  asm volatile("st.relaxed.sys.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

/// Relaxed system-scope store of a 64-bit word (statistics: `messages_processed`, `last_activity`).
/// @param p a global address
/// @param v the value
RB_DEVICE void rb_st_relaxed_sys_u64(uint64_t* p, uint64_t v) {
  asm volatile("st.relaxed.sys.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}

/// Acquire-release system-scope fence. After relaxed polls that saw an index or command move,
/// it makes those loads acquires (relaxed load + fence = acquire pattern, spec §5 C2/K1) without
/// loading the word again, which would cost another PCIe round trip on `mapped`.
RB_DEVICE void rb_fence_acq_rel_sys() { asm volatile("fence.acq_rel.sys;" ::: "memory"); }

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

/// Sequentially consistent system-scope fence (K7, K8, D1): orders an index store before a later
/// load of the host's flag, the device half of the §8 handshake.
RB_DEVICE void rb_fence_sc_sys() { asm volatile("fence.sc.sys;" ::: "memory"); }

/// Global timer in nanoseconds (for `last_activity`).
/// @return the GPU's %globaltimer
RB_DEVICE uint64_t rb_now_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

/// Back-off for poll number `round` of a wait: spin at first, then sleep up to ~1 µs, so an
/// idle kernel does not saturate PCIe with polls of mapped memory.
/// @param round zero-based poll count
RB_DEVICE void rb_pause(uint32_t round) {
  if (round >= 64) __nanosleep(round < 1024 ? round : 1024);
}

/// Lane index within the warp.
/// @return 0..31
RB_DEVICE uint32_t rb_lane_id() {
  uint32_t lane;
  asm volatile("mov.u32 %0, %%laneid;" : "=r"(lane));
  return lane;
}

/// Lanes below this one.
/// @return the %lanemask_lt bit mask
RB_DEVICE uint32_t rb_lanemask_lt() {
  uint32_t mask;
  asm volatile("mov.u32 %0, %%lanemask_lt;" : "=r"(mask));
  return mask;
}

// ---------------------------------------------------------------------------------------------
// Status words (spec §12). The kernel is the single writer of the status line (I1), so a load
// followed by a store is not a lost update; there is no RMW across PCIe (no host-native atomics).
// Exactly one thread of the kernel may write them: use the _warp form or elect a thread.
// ---------------------------------------------------------------------------------------------

/// Records one kernel-level error: the first code wins, every error is counted.
/// @param cb the control block
/// @param code RB_KERNEL_ERROR_* or a handler code >= 256 (not 0)
RB_DEVICE void rb_record_error(rb_control_block* cb, uint32_t code) {
  if (rb_ld_relaxed_sys_u32(&cb->error_code) == RB_KERNEL_ERROR_NONE) {
    rb_st_relaxed_sys_u32(&cb->error_code, code);
  }
  const uint32_t count = rb_ld_relaxed_sys_u32(&cb->error_count);
  // ORDERING: release, as Rust's record_error: a host that acquires the count sees the code.
  rb_st_release_sys_u32(&cb->error_count, count + 1);
}

/// Records the errors of a converged warp with one writer (lane 0). The lowest lane's code is
/// the one considered for `error_code`; every lane with a code is counted.
/// @param cb the control block
/// @param code this lane's error code, or 0 for none
RB_DEVICE void rb_record_error_warp(rb_control_block* cb, uint32_t code) {
  const uint32_t mask = __ballot_sync(0xffffffffu, code != 0);
  if (mask == 0) return;
  const uint32_t first = __shfl_sync(0xffffffffu, code, __ffs(mask) - 1);
  if (rb_lane_id() == 0) {
    if (rb_ld_relaxed_sys_u32(&cb->error_code) == RB_KERNEL_ERROR_NONE) {
      rb_st_relaxed_sys_u32(&cb->error_code, first);
    }
    const uint32_t count = rb_ld_relaxed_sys_u32(&cb->error_count);
    // ORDERING: release, as rb_record_error.
    rb_st_release_sys_u32(&cb->error_count, count + __popc(mask));
  }
}

/// K7: after publishing (K5, K6), tells whether the host sleeps on the doorbell.
/// @param cb the control block
/// @return true if `host_waiting != 0`: the backend's host thread must ring the doorbell
RB_DEVICE bool rb_host_waiting(rb_control_block* cb) {
  // ORDERING: (K7) SC fence between our index stores and the load of host_waiting; pairs with
  // the host's SC store of host_waiting and re-check of the index (H7).
  rb_fence_sc_sys();
  return rb_ld_relaxed_sys_u32(&cb->host_waiting) != 0;
}

/// K8: publishes a new kernel state.
/// @param cb the control block
/// @param state RB_STATE_*
RB_DEVICE void rb_set_state(rb_control_block* cb, uint32_t state) {
  // ORDERING: (K8) release: a host that acquires `state` sees every index and counter written
  // before it (TERMINATED is final).
  rb_st_release_sys_u32(&cb->state, state);
  rb_fence_sc_sys();
}

// ---------------------------------------------------------------------------------------------
// Ring ends (spec §5). Field names follow ring.rs: `next` counts staged or consumed frames,
// `published`/`released` is the last value stored to the owned index, `cached_*` is the possibly
// stale copy of the peer's index (it only grows, so a stale copy is always safe to act on).
// ---------------------------------------------------------------------------------------------

/// The kernel's reading end of a ring (the input ring): writes `head` only (I1).
struct rb_consumer {
  uint8_t* slots;         ///< slot array as the kernel sees it (`input_buffer`)
  uint64_t* head;         ///< index this end writes
  const uint64_t* tail;   ///< index the producer writes
  uint32_t capacity;      ///< slots (a power of two)
  uint32_t slot_size;     ///< bytes per slot, header included
  uint64_t next;          ///< next position to read, consumed-but-unreleased included
  uint64_t released;      ///< last value stored to `head`
  uint64_t cached_tail;   ///< possibly stale copy of `tail`
};

/// The kernel's writing end of a ring (the output ring): writes `tail` only (I1).
struct rb_producer {
  uint8_t* slots;         ///< slot array as the kernel sees it (`output_buffer`)
  uint64_t* tail;         ///< index this end writes
  const uint64_t* head;   ///< index the consumer writes
  uint32_t capacity;      ///< slots (a power of two)
  uint32_t slot_size;     ///< bytes per slot, header included
  uint64_t next;          ///< next position to write, staged frames included
  uint64_t published;     ///< last value stored to `tail`
  uint64_t cached_head;   ///< possibly stale copy of `head`
};

/// Takes the consumer role of the input ring, resuming from its current indices.
/// @param cb the control block (setup line written before launch, L1)
/// @return the consumer end
RB_DEVICE rb_consumer rb_input_consumer(rb_control_block* cb) {
  rb_consumer c;
  c.slots = reinterpret_cast<uint8_t*>(cb->input_buffer);
  c.head = &cb->input_head;
  // The setup line's addresses, not the fields: on dma the tail is a device word (v2), and the
  // kernel must read where the host pointed it.
  c.tail = reinterpret_cast<const uint64_t*>(cb->input_tail_addr);
  c.capacity = cb->input_capacity;
  c.slot_size = cb->input_slot_size;
  // Relaxed: we are the only writer of head (I1).
  c.next = rb_ld_relaxed_sys_u64(c.head);
  c.released = c.next;
  // ORDERING: (C2) acquire pairs with the producer's release of tail (P4).
  c.cached_tail = rb_ld_acquire_sys_u64(c.tail);
  return c;
}

/// Takes the producer role of the output ring, resuming from its current indices.
/// @param cb the control block
/// @return the producer end
RB_DEVICE rb_producer rb_output_producer(rb_control_block* cb) {
  rb_producer p;
  p.slots = reinterpret_cast<uint8_t*>(cb->output_buffer);
  p.tail = reinterpret_cast<uint64_t*>(cb->output_tail_addr);
  p.head = reinterpret_cast<const uint64_t*>(cb->output_head_addr);  // v3: a route's next stage
  p.capacity = cb->output_capacity;
  p.slot_size = cb->output_slot_size;
  // Relaxed: we are the only writer of tail (I1).
  p.next = rb_ld_relaxed_sys_u64(p.tail);
  p.published = p.next;
  // ORDERING: (P2) acquire pairs with the consumer's release of head (C4).
  p.cached_head = rb_ld_acquire_sys_u64(p.head);
  return p;
}

/// C1–C2 (thread): published frames not yet consumed. While the cached tail shows fewer than
/// `wanted`, polls `tail` with relaxed loads, then takes one acquire load before any slot read.
/// @param c the consumer end
/// @param wanted frames the caller wants
/// @param polls most relaxed polls (0: one acquire reload, no wait; RB_SPIN_LIMIT for a
///        bounded wait)
/// @param cb control block to record RB_KERNEL_ERROR_SPIN_TIMEOUT in when the polls run out,
///        or nullptr when running out is not an error (an idle wait that re-checks commands)
/// @return frames available (fewer than `wanted` only if the polls ran out)
RB_DEVICE uint64_t rb_ring_available(rb_consumer* c, uint64_t wanted, uint32_t polls,
                                     rb_control_block* cb) {
  uint64_t n = rb_occupied(c->next, c->cached_tail);
  if (n >= wanted) return n;
  for (uint32_t i = 0; i < polls; ++i) {
    if (rb_occupied(c->next, rb_ld_relaxed_sys_u64(c->tail)) >= wanted) break;
    rb_pause(i);
  }
  // ORDERING: (C2) acquire pairs with the producer's release of tail (P4): the slots it
  // published are visible to the reads that follow (and to the warp after rb_*_warp's sync).
  c->cached_tail = rb_ld_acquire_sys_u64(c->tail);
  n = rb_occupied(c->next, c->cached_tail);
  if (n < wanted && polls != 0 && cb != nullptr) rb_record_error(cb, RB_KERNEL_ERROR_SPIN_TIMEOUT);
  return n;
}

/// P1–P2 (thread): free slots. While the cached head shows fewer than `wanted`, polls `head`
/// with relaxed loads, then takes one acquire load before any slot is overwritten.
/// @param p the producer end
/// @param wanted slots the caller wants
/// @param polls most relaxed polls (0: one acquire reload, no wait)
/// @param cb control block for SPIN_TIMEOUT, or nullptr (see rb_ring_available)
/// @return free slots (fewer than `wanted` only if the polls ran out)
RB_DEVICE uint64_t rb_ring_free(rb_producer* p, uint64_t wanted, uint32_t polls,
                                rb_control_block* cb) {
  uint64_t n = rb_free(p->cached_head, p->next, p->capacity);
  if (n >= wanted) return n;
  for (uint32_t i = 0; i < polls; ++i) {
    if (rb_free(rb_ld_relaxed_sys_u64(p->head), p->next, p->capacity) >= wanted) break;
    rb_pause(i);
  }
  // ORDERING: (P2) acquire pairs with the consumer's release of head (C4): its reads of the
  // slots we are about to reuse happened before.
  p->cached_head = rb_ld_acquire_sys_u64(p->head);
  n = rb_free(p->cached_head, p->next, p->capacity);
  if (n < wanted && polls != 0 && cb != nullptr) rb_record_error(cb, RB_KERNEL_ERROR_SPIN_TIMEOUT);
  return n;
}

/// C3 (thread): consumes the next frame. The slot stays this end's until rb_ring_release (I3).
/// The caller checks rb_frame_valid; an invalid frame is still consumed and answered with a BAD_FRAME error frame (I6).
/// @param c the consumer end
/// @return the slot (header at 0, payload at 16), or nullptr if the ring is empty
RB_DEVICE const uint8_t* rb_ring_pop(rb_consumer* c) {
  if (rb_ring_available(c, 1, 0, nullptr) == 0) return nullptr;
  // SAFETY: (I3) available >= 1 means `next` lies in [head, tail), tail acquired (C2).
  const uint8_t* slot = rb_slot_ptr(c->slots, c->slot_size, c->capacity, c->next);
  c->next += 1;
  return slot;
}

/// C4 (thread): hands every consumed slot back to the producer with one store of `head`.
/// @param c the consumer end
RB_DEVICE void rb_ring_release(rb_consumer* c) {
  if (c->next == c->released) return;
  // ORDERING: (C4) release: our reads of the slots happen before the producer's acquire of
  // head (P2) that lets it overwrite them.
  rb_st_release_sys_u64(c->head, c->next);
  c->released = c->next;
}

/// P1–P2 (thread): the slot the next frame goes to, without staging it.
/// @param p the producer end
/// @return the slot at `next` (write header and payload, then rb_ring_push), or nullptr if full
RB_DEVICE uint8_t* rb_ring_reserve(rb_producer* p) {
  if (rb_ring_free(p, 1, 0, nullptr) == 0) return nullptr;
  // SAFETY: (I2) free >= 1 means `next` lies in [tail, head + capacity): released by the
  // consumer (P2 acquired head), unread until we publish past it.
  return rb_slot_ptr(p->slots, p->slot_size, p->capacity, p->next);
}

/// P3 (thread): stages the frame written into the slot rb_ring_reserve returned.
/// @param p the producer end
RB_DEVICE void rb_ring_push(rb_producer* p) { p->next += 1; }

/// P4 (thread): makes every staged frame visible with one store of `tail`.
/// @param p the producer end
RB_DEVICE void rb_ring_publish(rb_producer* p) {
  if (p->next == p->published) return;
  // ORDERING: (P4) release: the slot writes above happen before a consumer's acquire of tail
  // (C2) that observes this value.
  rb_st_release_sys_u64(p->tail, p->next);
  p->published = p->next;
}

/// C1–C2 (warp): rb_ring_available done by lane 0 and broadcast, keeping the copies identical.
/// @param c the consumer end (identical on every lane)
/// @param wanted frames the caller wants
/// @param polls most relaxed polls
/// @param cb control block for SPIN_TIMEOUT, or nullptr
/// @return frames available, the same on every lane
RB_DEVICE uint64_t rb_ring_available_warp(rb_consumer* c, uint64_t wanted, uint32_t polls,
                                          rb_control_block* cb) {
  uint64_t n = 0;
  if (rb_lane_id() == 0) n = rb_ring_available(c, wanted, polls, cb);
  c->cached_tail = __shfl_sync(0xffffffffu, c->cached_tail, 0);
  // Lane 0's acquire (C2) reaches the other lanes' slot reads through this warp barrier.
  __syncwarp();
  return __shfl_sync(0xffffffffu, n, 0);
}

/// P1–P2 (warp): rb_ring_free done by lane 0 and broadcast.
/// @param p the producer end (identical on every lane)
/// @param wanted slots the caller wants
/// @param polls most relaxed polls
/// @param cb control block for SPIN_TIMEOUT, or nullptr
/// @return free slots, the same on every lane
RB_DEVICE uint64_t rb_ring_free_warp(rb_producer* p, uint64_t wanted, uint32_t polls,
                                     rb_control_block* cb) {
  uint64_t n = 0;
  if (rb_lane_id() == 0) n = rb_ring_free(p, wanted, polls, cb);
  p->cached_head = __shfl_sync(0xffffffffu, p->cached_head, 0);
  __syncwarp();
  return __shfl_sync(0xffffffffu, n, 0);
}

/// C3 (warp): consumes up to `limit` (<= 32) frames, one per lane.
/// @param c the consumer end (identical on every lane)
/// @param limit most frames to take, e.g. the free output slots
/// @param count set on every lane to the frames taken
/// @return lane i < count gets the slot of position `next + i`; other lanes get nullptr
RB_DEVICE const uint8_t* rb_ring_pop_warp(rb_consumer* c, uint32_t limit, uint32_t* count) {
  const uint64_t avail = rb_ring_available_warp(c, 1, 0, nullptr);
  uint32_t n = avail < limit ? static_cast<uint32_t>(avail) : limit;
  if (n > 32) n = 32;
  *count = n;
  const uint32_t lane = rb_lane_id();
  // SAFETY: (I3) positions next .. next+n-1 lie in [head, tail); tail acquired by lane 0 (C2).
  const uint8_t* slot =
      lane < n ? rb_slot_ptr(c->slots, c->slot_size, c->capacity, c->next + lane) : nullptr;
  c->next += n;
  return slot;
}

/// C4 (warp): every lane's reads of its slot, then lane 0's release of `head`.
/// @param c the consumer end (identical on every lane)
RB_DEVICE void rb_ring_release_warp(rb_consumer* c) {
  // The barrier orders every lane's slot reads before lane 0's release store.
  __syncwarp();
  if (rb_lane_id() == 0) rb_ring_release(c);
  c->released = c->next;
}

/// P1–P3 (warp): gives each lane with `want` its own slot, in lane order, and stages them. The
/// caller guarantees that many free slots, e.g. by popping no more frames than
/// rb_ring_free_warp returned. A lane's `want` must be known before its handler runs (e.g. "the
/// input frame is valid"), so a handler at warp granularity must answer every valid message:
/// RB_OUTCOME_NO_REPLY is for thread granularity only.
/// @param p the producer end (identical on every lane)
/// @param want whether this lane produces a frame
/// @return this lane's slot to write, or nullptr if it does not want one
RB_DEVICE uint8_t* rb_ring_reserve_warp(rb_producer* p, bool want) {
  const uint32_t mask = __ballot_sync(0xffffffffu, want);
  const uint32_t rank = __popc(mask & rb_lanemask_lt());
  // SAFETY: (I2) positions next .. next+popc(mask)-1 lie in [tail, head + capacity): the
  // caller checked the free count (P2 acquired head).
  uint8_t* slot = want ? rb_slot_ptr(p->slots, p->slot_size, p->capacity, p->next + rank) : nullptr;
  p->next += __popc(mask);
  return slot;
}

/// P4 (warp): every lane's slot writes, then lane 0's release of `tail`.
/// @param p the producer end (identical on every lane)
RB_DEVICE void rb_ring_publish_warp(rb_producer* p) {
  // The barrier orders every lane's slot writes before lane 0's release store (cumulative at
  // system scope), so the host's acquire of tail (C2) sees all of them.
  __syncwarp();
  if (rb_lane_id() == 0) rb_ring_publish(p);
  p->published = p->next;
}

#endif  // __CUDACC__ || __CUDACC_RTC__
