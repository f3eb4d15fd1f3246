// SPDX-License-Identifier: MIT
//
// ring_kernel.cu: the persistent ring kernel, the GPU twin of
// crates/ringbridge-core/src/backend/dispatch.rs (docs/PROTOCOL.md §5.1, K1–K8). It serves one
// host through the control block it is given: polls the input ring, runs the built-in handler
// chosen by `handler_id` on every frame, stages exactly one reply or error frame per input frame,
// publishes, and honours the host's commands (pause, DRAIN, ABANDON). Replies, error frames,
// counters and state changes are the ones the cpu backend produces for the same input.
//
// Shape. Launched with grid (B,1,1) and block (T,1,1), T a multiple of 32 up to 1024, no dynamic
// shared memory. Thread 0 of block 0 is the *poller*: the only thread that reads commands and
// the peer's indices and the only writer of the status line and of the kernel's two indices
// (I1). It cuts the input into *rounds* [start, start + n) with n <= available input, <= free
// output slots and <= a cap, has them handled, then publishes each round as a whole (K5–K7).
// Because every input frame yields exactly one output frame (v2), the reply to input position
// p always goes to output position p + delta, delta fixed at start, so a round needs no
// coordination on where replies go.
//  - B == 1 (the latency path, `mapped`): block 0 handles every round itself; __syncthreads is
//    the only synchronisation besides the system-scope index accesses.
//  - B > 1 (the throughput path, `dma`): a round bigger than one pass of block 0 is handed to
//    the grid through rb_grid; every block, block 0 included, claims chunks of it with a CAS and
//    reports them done with a device-scope counter; the poller waits (bounded) for the count and
//    publishes. Claiming is dynamic, so block 0 alone can finish any round: a block that is not
//    resident (another kernel holds its SM) delays nothing and cannot deadlock the grid.
//
// Per message, a *group* of g = min(32, input slot_size / 16) lanes works together, lane j owning
// the 16-byte chunk j of the slot, so a warp moves 512 contiguous bytes per instruction (for
// 64-byte slots, eight messages) and the header arrives with the payload in one memory latency.
// A thread per message would issue 32 scattered 16-byte accesses per instruction and wait for
// the header before loading the payload, a second PCIe round trip on `mapped`. Slots of 512
// bytes and more take a warp per message; from 1 KiB the warp loops over the slot.
//
// Every ordered access, to the control block or to rb_grid, goes through the atomics family of
// ringbridge.cuh, named by order and scope; slot accesses are weak and ordered by those.
//
// The host zeroes rb_grid before every launch (cuModuleGetGlobal("rb_grid") + cuMemsetD8) and
// loads a module instance per launched kernel. It needs no include path: NVRTC gets
// ringbridge.cuh through nvrtcCreateProgram's headers; nvcc finds it beside this file.

#include "ringbridge.cuh"

// ---------------------------------------------------------------------------------------------
// Tuning. Each may be defined before this file is compiled (e.g. -D on nvcc, an NVRTC option).
// ---------------------------------------------------------------------------------------------

#ifndef RB_RING_MAX_THREADS
/// Largest block the kernel is compiled for (__launch_bounds__): the register budget of T = 1024.
#define RB_RING_MAX_THREADS 1024
#endif  // RB_RING_MAX_THREADS

#ifndef RB_RING_UNROLL
/// Messages a group loads before it stores any: memory-level parallelism per pass. 2 keeps the
/// kernel within 64 registers (no spills) under the 1024-thread launch bound.
#define RB_RING_UNROLL 2
#endif  // RB_RING_UNROLL

#ifndef RB_RING_ROUND_PASSES
/// Most passes of the whole grid in one round: caps a round at B * groups * UNROLL * PASSES
/// messages, so a round is published while the host still has work queued behind it. 16 (a
/// round of up to 270 K 64-byte messages on 132 SMs) measured 0.97x the launch pipeline with
/// chunks on an H100 where 4 gave 0.93x, and 563 M against 346 M msg/s on a 64 K-slot ring
/// (bench/results/2026-12-07-h100-throughput.md).
#define RB_RING_ROUND_PASSES 16
#endif  // RB_RING_ROUND_PASSES

#ifndef RB_RING_CLAIMS_PER_BLOCK
/// A grid round is cut into about this many claims per block: more balance the blocks' load,
/// fewer cost fewer CAS rounds on rb_grid.claim_pos (one measured best, with ROUND_PASSES 16).
#define RB_RING_CLAIMS_PER_BLOCK 1
#endif  // RB_RING_CLAIMS_PER_BLOCK

#ifndef RB_RING_LOCAL_PASSES
/// With B > 1, a round of at most this many passes of block 0 is handled by block 0 alone: the
/// grid hand-off costs more than it saves on a few hundred messages. 0 sends every round of a
/// multi-block kernel through the grid (a test setting).
#define RB_RING_LOCAL_PASSES 1
#endif  // RB_RING_LOCAL_PASSES

#ifndef RB_BACKOFF_SPINS
/// Idle polls before the first __nanosleep: a poll of mapped memory is itself a PCIe round trip
/// (~1 µs), so a host that answers within tens of microseconds never meets a sleep.
#define RB_BACKOFF_SPINS 32u
#endif  // RB_BACKOFF_SPINS

#ifndef RB_BACKOFF_MAX_NS
/// Longest __nanosleep request of an idle wait. The hardware sleeps up to twice the request,
/// so an idle kernel notices new work within about 2 µs.
#define RB_BACKOFF_MAX_NS 1024u
#endif  // RB_BACKOFF_MAX_NS

/// The command a `terminate` word holds (§9): DRAIN and ABANDON are commands; any other value
/// (a buggy host's store) is NONE, as the cpu kernel reads it (`backend::terminate_command`), so
/// it neither stops the kernel nor lifts a pause.
/// @param word the `terminate` word as loaded
/// @return RB_TERMINATE_DRAIN, RB_TERMINATE_ABANDON or RB_TERMINATE_NONE
RB_DEVICE uint32_t rb_terminate_command(uint32_t word) {
  return (word == RB_TERMINATE_DRAIN || word == RB_TERMINATE_ABANDON) ? word : RB_TERMINATE_NONE;
}

/// K1's command words.
struct rb_commands {
  uint32_t active;     ///< the `active` word
  uint32_t terminate;  ///< the command the `terminate` word holds (rb_terminate_command)
};

/// K1 (poll): `active` and `terminate` in one relaxed 64-bit little-endian load of the command
/// line's first two words (offsets 128 and 132), one round trip across PCIe. The caller makes
/// it an acquire with rb_fence_acq_rel_sys before acting on a command.
/// @param cb the control block
/// @return the commands
RB_DEVICE rb_commands rb_poll_commands(const rb_control_block* cb) {
  const uint64_t w = rb_ld_relaxed_sys_u64(reinterpret_cast<const uint64_t*>(&cb->active));
  const rb_commands c = {static_cast<uint32_t>(w),
                         rb_terminate_command(static_cast<uint32_t>(w >> 32))};
  return c;
}

// ---------------------------------------------------------------------------------------------
// Inter-block coordination.
// ---------------------------------------------------------------------------------------------

/// What the blocks of one launch share. Zeroed by the host before the launch, so zero is every
/// field's start value. Positions are input positions; counters are free-running.
struct alignas(128) rb_grid_state {
  // line 0, the current grid round: written by the poller before its release of avail_end.
  unsigned long long avail_end;    ///< end of the claimable input positions (st.release.gpu)
  unsigned long long round_start;  ///< first input position of the current grid round
  unsigned long long out_delta;    ///< output position minus input position, for every message
  unsigned int chunk;              ///< messages per claim in the current round
  unsigned int exit;               ///< 1: every block leaves (the poller has terminated)
  uint8_t pad0[96];
  // line 1, claims: CAS by every block.
  unsigned long long claim_pos;  ///< first unclaimed input position (<= avail_end)
  uint8_t pad1[120];
  // line 2, completion: atomics by every block, read and reset by the poller.
  unsigned long long done;     ///< messages handled in grid rounds since the launch
  unsigned long long err_key;  ///< max over the round of ~((index in round << 32) | code); 0 none
  unsigned int err_count;      ///< errors recorded in the round
  uint8_t pad2[108];
};

static_assert(sizeof(rb_grid_state) == 3 * RB_LINE_BYTES, "rb_grid_state: three lines");

/// The coordination state of this module instance's one kernel (cuModuleGetGlobal("rb_grid")).
__device__ rb_grid_state rb_grid;

/// What a block does next, written by its thread 0 and read by all its threads.
struct rb_block_op {
  unsigned long long start;        ///< first input position
  unsigned long long round_start;  ///< first input position of the round (for error order)
  unsigned long long delta;        ///< output position minus input position
  unsigned long long err_key;      ///< max of this block's inverted error keys (0: none)
  const uint8_t* in_slots;         ///< the input slots the op reads (hybrid: host or device)
  uint8_t* out_slots;              ///< the output slots the op writes (hybrid: host or device)
  unsigned int n;                  ///< messages from `start`
  unsigned int kind;               ///< RB_OP_*
  unsigned int err_count;          ///< errors this block recorded in the op
};

/// rb_block_op kind: leave the kernel.
#define RB_OP_EXIT 0u
/// rb_block_op kind: a whole round, handled by block 0 alone and published by the poller.
#define RB_OP_ROUND 1u
/// rb_block_op kind: a claimed chunk of a grid round, reported to rb_grid.done.
#define RB_OP_CHUNK 2u

/// Back-off for idle poll number `spin`: RB_BACKOFF_SPINS bare polls, then sleeps doubling from
/// 32 ns up to RB_BACKOFF_MAX_NS.
/// @param spin zero-based count of consecutive idle polls
RB_DEVICE void rb_backoff(uint32_t spin) {
  if (spin < RB_BACKOFF_SPINS) return;
  const uint32_t step = spin - RB_BACKOFF_SPINS;
  const uint32_t ns = step >= 5 ? RB_BACKOFF_MAX_NS : (32u << step);
  __nanosleep(ns < RB_BACKOFF_MAX_NS ? ns : RB_BACKOFF_MAX_NS);
}

// ---------------------------------------------------------------------------------------------
// Setup (I5: the setup line is constant from L1 on, so plain loads read it).
// ---------------------------------------------------------------------------------------------

/// The setup line and this thread's place in the message groups, read once at start.
struct rb_ring_setup {
  const uint8_t* in_slots;  ///< input slot array (`input_buffer`)
  uint8_t* out_slots;       ///< output slot array (`output_buffer`)
  uint32_t in_capacity;     ///< input slots
  uint32_t out_capacity;    ///< output slots
  uint32_t in_slot_size;    ///< bytes per input slot
  uint32_t out_slot_size;   ///< bytes per output slot
  uint32_t handler;         ///< RB_HANDLER_*
  uint32_t group_size;      ///< lanes per message: a power of two, 2..32
  uint32_t groups;          ///< message groups per block
  uint32_t group;           ///< this thread's group (>= groups: the thread handles nothing)
  uint32_t lane;            ///< this thread's lane within its group
  uint32_t group_mask;      ///< the warp lanes of this thread's group (for __shfl_sync)
};

/// Reads the setup line and places the thread in its message group.
/// @param cb the control block
/// @return the setup
RB_DEVICE rb_ring_setup rb_read_setup(const rb_control_block* cb) {
  rb_ring_setup s;
  s.in_slots = reinterpret_cast<const uint8_t*>(cb->input_buffer);
  s.out_slots = reinterpret_cast<uint8_t*>(cb->output_buffer);
  s.in_capacity = cb->input_capacity;
  s.out_capacity = cb->output_capacity;
  s.in_slot_size = cb->input_slot_size;
  s.out_slot_size = cb->output_slot_size;
  s.handler = cb->handler_id;
  // One 16-byte chunk of the input slot per lane, at most a warp, at most the block.
  uint32_t g = s.in_slot_size / 16u;
  if (g > 32u) g = 32u;
  while (g > 1u && g > blockDim.x) g >>= 1;
  if (g < 1u) g = 1u;
  s.group_size = g;
  s.groups = blockDim.x / g;
  s.group = threadIdx.x / g;
  s.lane = threadIdx.x % g;
  const uint32_t warp_lane = threadIdx.x % 32u;
  s.group_mask = g >= 32u ? 0xffffffffu : (((1u << g) - 1u) << (warp_lane & ~(g - 1u)));
  return s;
}

// ---------------------------------------------------------------------------------------------
// Per-message work (K3) by a group of lanes. Every function here is called by all lanes of one
// group together; lane 0 of the group is its leader.
// ---------------------------------------------------------------------------------------------

/// The frame header held in the leader's first chunk.
/// @param v chunk 0 of the input slot
/// @return the header fields
RB_DEVICE rb_frame_header rb_header_of(uint4 v) {
  rb_frame_header h;
  h.length = v.x;
  h.type_id = static_cast<uint16_t>(v.y & 0xffffu);
  h.flags = static_cast<uint16_t>(v.y >> 16);
  h.correlation_id = static_cast<uint64_t>(v.z) | (static_cast<uint64_t>(v.w) << 32);
  return h;
}

/// Stages an error frame for the request whose chunk 0 the leader holds (spec §3.3).
/// @param s the setup
/// @param v chunk 0 of the input slot (meaningful on the leader)
/// @param out the output slot
/// @param code RB_KERNEL_ERROR_*
/// @param detail the ErrorRecord detail
/// @return `code`
RB_DEVICE uint32_t rb_stage_error(const rb_ring_setup& s, uint4 v, uint8_t* out, uint32_t code,
                                  uint32_t detail) {
  if (s.lane == 0) {
    const rb_frame_header h = rb_header_of(v);
    rb_complete_frame(&h, rb_error(code, detail), out, s.out_slot_size);
  }
  return code;
}

/// Echo: the reply is the request's payload and type_id, flags 0; with `keep_flags` the frame
/// is forwarded as it is (an earlier stage's error frame, §3.4).
/// Copies whole 16-byte chunks: the bytes past `length` in the last chunk lie inside both slots
/// (slot sizes are powers of two >= 32, so payload areas are multiples of 16) and are not part
/// of the frame.
/// @param s the setup
/// @param v this lane's chunk (lane j: bytes 16j..16j+15 of the input slot)
/// @param len the request's payload length (valid: <= in_slot_size - 16)
/// @param in the input slot
/// @param out the output slot
/// @return 0, or the code of the error frame staged instead
RB_DEVICE uint32_t rb_group_echo(const rb_ring_setup& s, uint4 v, uint32_t len, const uint8_t* in,
                                 uint8_t* out, bool keep_flags = false) {
  if (len > rb_max_payload(s.out_slot_size)) {
    return rb_stage_error(s, v, out, RB_KERNEL_ERROR_REPLY_TOO_LARGE, len);
  }
  const uint32_t chunks = 1u + (len + 15u) / 16u;  // header + payload
  const uint32_t g = s.group_size;
  if (s.lane < chunks) {
    // The reply header: same length, type_id, correlation_id; flags 0 (kept when forwarding).
    if (s.lane == 0 && !keep_flags) v.y &= 0xffffu;
    *reinterpret_cast<uint4*>(out + 16u * s.lane) = v;
  }
  // Slots of more than 32 chunks (1 KiB and up): the warp walks the rest, four chunks a lane
  // in flight per step.
  for (uint32_t c = s.lane + g; c < chunks; c += 4u * g) {
    uint4 a[4];
#pragma unroll
    for (uint32_t k = 0; k < 4; ++k) {
      if (c + k * g < chunks) a[k] = rb_ld_slot_v4(in + 16u * (c + k * g));
    }
#pragma unroll
    for (uint32_t k = 0; k < 4; ++k) {
      if (c + k * g < chunks) *reinterpret_cast<uint4*>(out + 16u * (c + k * g)) = a[k];
    }
  }
  return 0;
}

/// Saxpy: payload `a, x[n], y[n]` (f32), reply `fmaf(a, x[i], y[i])`, one rounding per element
/// (the bits of Rust's f32::mul_add; NVRTC and nvcc keep denormals unless built with -ftz=true
/// or --use_fast_math, which the host must not pass).
/// @param s the setup
/// @param v this lane's chunk (the leader's holds the header)
/// @param len the request's payload length (valid)
/// @param in the input slot
/// @param out the output slot
/// @return 0, or the code of the error frame staged instead
RB_DEVICE uint32_t rb_group_saxpy(const rb_ring_setup& s, uint4 v, uint32_t len, const uint8_t* in,
                                  uint8_t* out) {
  if (len < 4u || (len - 4u) % 8u != 0u) {
    return rb_stage_error(s, v, out, RB_KERNEL_ERROR_BAD_PAYLOAD, len);
  }
  const uint32_t n = (len - 4u) / 8u;
  if (n * 4u > rb_max_payload(s.out_slot_size)) {
    return rb_stage_error(s, v, out, RB_KERNEL_ERROR_REPLY_TOO_LARGE, n * 4u);
  }
  const uint8_t* payload = in + RB_FRAME_HEADER_BYTES;
  const float a = __uint_as_float(rb_ld_slot_u32(payload));
  const uint8_t* x = payload + 4u;
  const uint8_t* y = x + 4u * n;
  uint8_t* r = out + RB_FRAME_HEADER_BYTES;
  const uint32_t g = s.group_size;
  for (uint32_t i = s.lane; i < n; i += 4u * g) {
    float xs[4], ys[4];
#pragma unroll
    for (uint32_t k = 0; k < 4; ++k) {
      if (i + k * g < n) {
        xs[k] = __uint_as_float(rb_ld_slot_u32(x + 4u * (i + k * g)));
        ys[k] = __uint_as_float(rb_ld_slot_u32(y + 4u * (i + k * g)));
      }
    }
#pragma unroll
    for (uint32_t k = 0; k < 4; ++k) {
      if (i + k * g < n) rb_store_f32(r + 4u * (i + k * g), rb_saxpy_element(a, xs[k], ys[k]));
    }
  }
  if (s.lane == 0) {
    const rb_frame_header h = rb_header_of(v);
    rb_complete_frame(&h, rb_reply(h.type_id, n * 4u), out, s.out_slot_size);
  }
  return 0;
}

#ifdef RB_USER_HANDLER
// ---------------------------------------------------------------------------------------------
// The user handler seam (spec §13.1). The host compiles this file after the generated schema
// header (`rb_input`, `rb_output`) and the user's source, with RB_USER_HANDLER naming the entry:
//   uint32_t entry(const rb_input& in, rb_output& out, rb_context& ctx)
// which returns 0 for a reply (`out`), or an error code (>= 256 by convention) for an error frame
// carrying ctx.detail. It runs on the group's leader, one message per call; calls for different
// messages run concurrently across groups and blocks.
// ---------------------------------------------------------------------------------------------

/// Copies `n` payload bytes out of an input slot with L2-only loads (the copy engine writes dma
/// slots through L2). Whole words; the last word of a payload lies inside its slot (payload
/// areas are multiples of 16 bytes).
RB_DEVICE void rb_load_payload(uint8_t* dst, const uint8_t* src, uint32_t n) {
  for (uint32_t i = 0; i < n; i += 4u) {
    const uint32_t w = rb_ld_slot_u32(src + i);
    for (uint32_t k = 0; k < 4u && i + k < n; ++k) dst[i + k] = static_cast<uint8_t>(w >> (8u * k));
  }
}

/// K3 of a user handler for one message, by a group (the leader calls the handler).
/// @return 0, or the code of the error frame staged instead; the same on every lane
RB_DEVICE uint32_t rb_group_user(const rb_ring_setup& s, uint4 v, uint32_t len, const uint8_t* in,
                                 uint8_t* out) {
  if (len != sizeof(rb_input)) return rb_stage_error(s, v, out, RB_KERNEL_ERROR_BAD_PAYLOAD, len);
#ifdef RB_USER_MAX_REPLIES
  const uint32_t reply_bytes = 8u + RB_USER_MAX_REPLIES * static_cast<uint32_t>(sizeof(rb_output));
#else
  const uint32_t reply_bytes = sizeof(rb_output);
#endif
  if (reply_bytes > rb_max_payload(s.out_slot_size)) {
    return rb_stage_error(s, v, out, RB_KERNEL_ERROR_REPLY_TOO_LARGE, reply_bytes);
  }
  uint32_t code = 0;
  if (s.lane == 0) {
    const rb_frame_header h = rb_header_of(v);
    rb_input msg;
    rb_load_payload(reinterpret_cast<uint8_t*>(&msg), in + RB_FRAME_HEADER_BYTES, sizeof(rb_input));
    rb_context ctx = {h.correlation_id, h.type_id, 0u};
    // The reply buffer is zeroed, so padding bytes reach the host as zeros, never as stale stack.
#ifdef RB_USER_MAX_REPLIES
    // Several replies (or none) in one RB_FLAG_MULTI frame: count, 4 reserved bytes, records.
    rb_replies replies;
    for (uint32_t i = 0; i < sizeof(rb_replies); ++i) reinterpret_cast<uint8_t*>(&replies)[i] = 0;
    code = RB_USER_HANDLER(msg, replies, ctx);
    if (code == 0) {
      const uint32_t n = replies.count;
      const uint32_t bytes = RB_MULTI_HEADER_BYTES + n * static_cast<uint32_t>(sizeof(rb_output));
      uint8_t* payload = out + RB_FRAME_HEADER_BYTES;
      for (uint32_t i = 0; i < 4u; ++i) payload[i] = static_cast<uint8_t>(n >> (8u * i));
      for (uint32_t i = 4u; i < RB_MULTI_HEADER_BYTES; ++i) payload[i] = 0;
      const uint8_t* r = reinterpret_cast<const uint8_t*>(replies.items);
      for (uint32_t i = 0; i < n * sizeof(rb_output); ++i) payload[RB_MULTI_HEADER_BYTES + i] = r[i];
      rb_complete_frame(&h, rb_reply(h.type_id, bytes), out, s.out_slot_size);
      reinterpret_cast<rb_frame_header*>(out)->flags = RB_FLAG_MULTI;
    } else {
#else
    rb_output reply;
    for (uint32_t i = 0; i < sizeof(rb_output); ++i) reinterpret_cast<uint8_t*>(&reply)[i] = 0;
    code = RB_USER_HANDLER(msg, reply, ctx);
    if (code == 0) {
      const uint8_t* r = reinterpret_cast<const uint8_t*>(&reply);
      for (uint32_t i = 0; i < sizeof(rb_output); ++i) out[RB_FRAME_HEADER_BYTES + i] = r[i];
      rb_complete_frame(&h, rb_reply(h.type_id, sizeof(rb_output)), out, s.out_slot_size);
    } else {
#endif
      rb_complete_frame(&h, rb_error(code, ctx.detail), out, s.out_slot_size);
    }
  }
  return __shfl_sync(s.group_mask, code, 0, s.group_size);
}
#endif

/// K3 for one message: C3's length check, the handler, and the one output frame it yields.
/// @tparam H RB_HANDLER_*
/// @param s the setup
/// @param v this lane's chunk of the input slot, loaded by the caller
/// @param in the input slot
/// @param out the output slot
/// @return the error code recorded for this message (0: a reply); the same on every lane
template <uint32_t H>
RB_DEVICE uint32_t rb_group_message(const rb_ring_setup& s, uint4 v, const uint8_t* in,
                                    uint8_t* out) {
  const uint32_t len = __shfl_sync(s.group_mask, v.x, 0, s.group_size);
  if (len > rb_max_payload(s.in_slot_size)) {
    // C3 BAD_FRAME: consumed and, since v2, answered with an error frame carrying the header's
    // type_id and correlation_id (detail: the bad length), so every input frame has one output.
    return rb_stage_error(s, v, out, RB_KERNEL_ERROR_BAD_FRAME, len);
  }
  // §3.4: in a route, an earlier stage's error frame is forwarded unchanged (one output frame
  // per input frame, I6), so the host sees the first failure with its correlation_id.
  const uint32_t flags = __shfl_sync(s.group_mask, v.y >> 16, 0, s.group_size);
  if ((flags & RB_FLAG_ERROR) != 0u) return rb_group_echo(s, v, len, in, out, true);
  if (H == RB_HANDLER_ECHO) return rb_group_echo(s, v, len, in, out);
  if (H == RB_HANDLER_SAXPY) return rb_group_saxpy(s, v, len, in, out);
#ifdef RB_USER_HANDLER
  if (H == RB_HANDLER_USER) return rb_group_user(s, v, len, in, out);
#endif
  // RB_HANDLER_TRAP: the test handler that faults (the host reports HANDLER_FAULT).
  __trap();
  return RB_KERNEL_ERROR_HANDLER_FAULT;
}

/// K3 for the messages [start, start + n) by every group of the block, RB_RING_UNROLL
/// messages per group per pass. Errors go to the block's op (shared memory): a count, and the
/// max of ~((index in round << 32) | code) so that the earliest error of the round wins
/// error_code, as in the cpu backend's sequential order.
/// @tparam H RB_HANDLER_*
/// @param s the setup
/// @param in_slots the input slot array the op reads (`input_buffer`, or hybrid's host slots)
/// @param out_slots the output slot array the op writes
/// @param start first input position
/// @param n messages
/// @param round_start first input position of the round (`start - round_start` < 2^32)
/// @param delta output position minus input position
/// @param op the block's op (err_count, err_key updated with shared-memory atomics)
template <uint32_t H>
RB_DEVICE void rb_block_messages(const rb_ring_setup& s, const uint8_t* in_slots,
                                 uint8_t* out_slots, uint64_t start, uint32_t n,
                                 uint64_t round_start, uint64_t delta, rb_block_op* op) {
  if (s.group >= s.groups) return;
  const uint32_t stride = s.groups;
  for (uint32_t base = s.group; base < n; base += stride * RB_RING_UNROLL) {
    uint4 v[RB_RING_UNROLL];
    // SAFETY: (I3) positions [start, start + n) lie in [input_head, input_tail) (the poller's
    // C2 acquire, passed on by bar.sync or rb_grid's release/acquire); lane < group_size <=
    // in_slot_size / 16, so every chunk lies inside its slot.
#pragma unroll
    for (uint32_t u = 0; u < RB_RING_UNROLL; ++u) {
      const uint32_t m = base + u * stride;
      if (m < n) {
        const uint8_t* in = rb_slot_ptr(const_cast<uint8_t*>(in_slots), s.in_slot_size,
                                        s.in_capacity, start + m);
        v[u] = rb_ld_slot_v4(in + 16u * s.lane);
      }
    }
#pragma unroll
    for (uint32_t u = 0; u < RB_RING_UNROLL; ++u) {
      const uint32_t m = base + u * stride;
      if (m < n) {
        const uint64_t pos = start + m;
        const uint8_t* in =
            rb_slot_ptr(const_cast<uint8_t*>(in_slots), s.in_slot_size, s.in_capacity, pos);
        // SAFETY: (I2) output position pos + delta lies in [output_tail, output_head + capacity):
        // the poller cut the round to the free output slots (P2 acquire of output_head).
        uint8_t* out = rb_slot_ptr(out_slots, s.out_slot_size, s.out_capacity, pos + delta);
        const uint32_t code = rb_group_message<H>(s, v[u], in, out);
        if (code != 0 && s.lane == 0) {
          const unsigned long long key =
              ~((static_cast<unsigned long long>(pos - round_start) << 32) | code);
          rb_add_relaxed_gpu_u32(&op->err_count, 1u);
          rb_max_relaxed_gpu_u64(&op->err_key, key);
        }
      }
    }
  }
}

/// K3 dispatch on the handler, once per op (the handler is uniform across the grid).
/// @param s the setup
/// @param op the block's op
RB_DEVICE void rb_block_op_messages(const rb_ring_setup& s, rb_block_op* op) {
  const uint64_t delta = op->delta;
  const uint64_t start = op->start;
  const uint64_t round_start = op->round_start;
  const uint32_t n = op->n;
  const uint8_t* in = op->in_slots;
  uint8_t* out = op->out_slots;
  switch (s.handler) {
    case RB_HANDLER_ECHO:
      rb_block_messages<RB_HANDLER_ECHO>(s, in, out, start, n, round_start, delta, op);
      break;
    case RB_HANDLER_SAXPY:
      rb_block_messages<RB_HANDLER_SAXPY>(s, in, out, start, n, round_start, delta, op);
      break;
#ifdef RB_USER_HANDLER
    case RB_HANDLER_USER:
      rb_block_messages<RB_HANDLER_USER>(s, in, out, start, n, round_start, delta, op);
      break;
#endif
    default:
      rb_block_messages<RB_HANDLER_TRAP>(s, in, out, start, n, round_start, delta, op);
      break;
  }
}

// ---------------------------------------------------------------------------------------------
// Grid rounds: claims and completion.
// ---------------------------------------------------------------------------------------------

/// Claims the next chunk of the current grid round, if any is left.
///
/// avail_end is read first (acquire) and claim_pos after it, so a claim_pos seen is never older
/// than the round whose end was seen; the CAS then only succeeds on an unclaimed position below
/// that end. A round ends only when all of its positions are claimed and done, so the round
/// (its round_start, its params) cannot change while a block holds a claim.
/// @param op filled with the chunk (kind RB_OP_CHUNK) on success
/// @return whether a chunk was claimed
RB_DEVICE bool rb_claim_chunk(rb_block_op* op) {
  for (;;) {
    // ORDERING: acquire pairs with the poller's release of avail_end: the round's fields and,
    // through the poller's C2 acquire before it, the host's (or copy engine's) input slots are
    // visible to this block after its bar.sync.
    const unsigned long long end = rb_ld_acquire_gpu_u64(&rb_grid.avail_end);
    const unsigned long long c = rb_ld_relaxed_gpu_u64(&rb_grid.claim_pos);
    if (static_cast<long long>(end - c) <= 0) return false;
    const unsigned long long chunk = rb_ld_relaxed_gpu_u32(&rb_grid.chunk);
    const unsigned long long want = end - c < chunk ? end : c + chunk;
    if (rb_cas_relaxed_gpu_u64(&rb_grid.claim_pos, c, want) == c) {
      op->kind = RB_OP_CHUNK;
      op->start = c;
      op->n = static_cast<unsigned int>(want - c);
      op->round_start = rb_ld_relaxed_gpu_u64(&rb_grid.round_start);
      op->delta = rb_ld_relaxed_gpu_u64(&rb_grid.out_delta);
      return true;
    }
  }
}

/// Reports a handled chunk: the block's errors, then its message count.
/// @param op the finished op (after the block's bar.sync)
RB_DEVICE void rb_chunk_done(const rb_block_op* op) {
  if (op->err_count != 0) {
    rb_add_relaxed_gpu_u32(&rb_grid.err_count, op->err_count);
    rb_max_relaxed_gpu_u64(&rb_grid.err_key, op->err_key);
  }
  // ORDERING: (P3 before P4) the block's output slot writes, ordered before this thread by the
  // bar.sync, and the error atomics above are released to the poller (gpu scope) with `done`;
  // the poller acquires `done`, then fences at system scope before its release of the output
  // tail, so they reach the host through it (rb_fence_acq_rel_gpu says why that suffices).
  rb_fence_acq_rel_gpu();
  rb_add_relaxed_gpu_u64(&rb_grid.done, static_cast<unsigned long long>(op->n));
}

// ---------------------------------------------------------------------------------------------
// The poller (thread 0 of block 0): commands, indices, status line. The only writer of
// input_head, the output tail and the status line (I1).
// ---------------------------------------------------------------------------------------------

/// The poller's ring ends and status (in shared memory; only the poller touches it).
struct rb_poller {
  const uint64_t* tail_addr;  ///< where the input tail is polled (`input_tail_addr`)
  uint64_t* out_tail_addr;    ///< where the output tail is published (`output_tail_addr`)
  const uint64_t* out_head_addr;  ///< where the output head is read (`output_head_addr`, v3)
  uint64_t next;              ///< next input position (= input_head after each round)
  uint64_t cached_tail;       ///< possibly stale input tail
  uint64_t cached_out_head;   ///< possibly stale output head
  uint64_t delta;             ///< output position minus input position
  uint64_t processed;         ///< messages_processed
  uint64_t done_target;       ///< rb_grid.done once the current grid round is complete
  uint64_t round_start;       ///< first input position of the round in hand
  uint32_t round_n;           ///< messages of the round in hand
  uint32_t round_cap;         ///< most messages per round
  uint32_t local_max;         ///< rounds up to this size skip the grid
  uint32_t pass;              ///< messages one pass of a block handles (groups * UNROLL)
  rb_errors errors;           ///< error_count, and whether error_code is set
  uint32_t state;             ///< state
  bool grid_round;            ///< a grid round is in hand
  // hybrid (§11.2): small rounds go direct to the host's slots, large ones through the bridge.
  const uint64_t* dev_tail_addr;  ///< the bridge's copy of the input tail (hybrid input)
  const uint8_t* host_in;     ///< host input slots; null: input never direct
  uint8_t* host_out;          ///< host output slots; null: output never direct
  uint64_t* direct_upto_addr; ///< where the direct rounds' end is told to the bridge (HY4: just
                              ///< before the next bridged round's mirror, or on exit)
  uint64_t cached_dev_tail;   ///< possibly stale bridge input tail
  uint64_t out_bridged_end;   ///< output end of the last round the bridge has to copy
  uint64_t direct_end;        ///< output end of the last direct round
  uint64_t direct_told;       ///< the direct_end last stored to direct_upto_addr
  const uint8_t* round_in;    ///< the input slots of the round in hand
  uint8_t* round_out;         ///< the output slots of the round in hand
  uint32_t direct_max;        ///< rounds up to this size may go direct (<= local_max; 0: never)
  bool out_pending;           ///< the bridge may not have published out_bridged_end yet
  bool direct_out;            ///< the round in hand wrote the host's output slots
};

/// K5–K6 for the round in hand: statistics and errors (relaxed, count released), then the
/// output tail, then the input head.
/// @param cb the control block
/// @param p the poller
/// @param err_count errors recorded in the round
/// @param err_key max inverted error key of the round (its earliest error), 0 if none
RB_DEVICE void rb_publish_round(rb_control_block* cb, rb_poller& p, uint32_t err_count,
                                unsigned long long err_key) {
  p.next += p.round_n;
  p.processed += p.round_n;
  // Relaxed: statistics; the single writer is this thread (K5).
  rb_st_relaxed_sys_u64(&cb->messages_processed, p.processed);
  rb_st_relaxed_sys_u64(&cb->last_activity, rb_now_ns());
  // The round's errors at once: its earliest error's code (if none was recorded before), every
  // error counted.
  if (err_count != 0) {
    rb_record_error(cb, &p.errors, static_cast<uint32_t>(~err_key & 0xffffffffull), err_count);
  }
  // ORDERING: (P4) the round's slot writes (this block's through bar.sync, other blocks'
  // through their fence and rb_grid.done, acquired) are performed system-wide before the
  // release of the output tail; a host (or the dma bridge) that acquires the tail sees them.
  rb_fence_sc_sys();
  const uint64_t out_end = p.next + p.delta;
  if (p.direct_out) {
    // Hybrid, a direct round (§11.2, HY4): the host's output_tail only, as on mapped (the
    // bridge has nothing of it pending, HY3). Neither the mirror nor direct_upto: the bridge
    // learns of direct rounds only when a bridged round follows them, so the latency path
    // pays no extra system-scope store.
    rb_st_release_sys_u64(&cb->output_tail, out_end);
    p.direct_end = out_end;
  } else {
    if (p.direct_end != p.direct_told) {
      // HY4: the end of the direct rounds before this one, relaxed: the mirror's release
      // below orders it, so a bridge that acquires this mirror value reads it (or a later one).
      rb_st_relaxed_sys_u64(p.direct_upto_addr, p.direct_end);
      p.direct_told = p.direct_end;
    }
    rb_st_release_sys_u64(p.out_tail_addr, out_end);
    // Hybrid: the bridge copies this round out; no direct round until it has published it.
    p.out_pending = true;
    p.out_bridged_end = out_end;
  }
  // ORDERING: (C4, K6 after K5) release after the replies are published: the host reuses these
  // input slots only after their replies are visible.
  rb_st_release_sys_u64(&cb->input_head, p.next);
  p.grid_round = false;
}

/// K8: state change (release, then a full fence, spec §9).
/// @param cb the control block
/// @param p the poller
/// @param state RB_STATE_*
RB_DEVICE void rb_poller_state(rb_control_block* cb, rb_poller& p, uint32_t state) {
  p.state = state;
  rb_set_state(cb, state);
}

/// K8 on exit: every round is already published; tell the other blocks, then TERMINATED.
/// @param cb the control block
/// @param p the poller
/// @param op set to RB_OP_EXIT
RB_DEVICE void rb_poller_exit(rb_control_block* cb, rb_poller& p, rb_block_op* op) {
  if (p.host_out != nullptr && p.direct_end != p.direct_told) {
    // Hybrid (§11.2, HY4 on exit): direct rounds came last, so the mirror is behind the output
    // end. Tell the bridge where they ended, then move the mirror there: a kernel started on
    // this region later resumes from the mirror (its delta), and the bridge copies nothing.
    rb_st_relaxed_sys_u64(p.direct_upto_addr, p.direct_end);
    p.direct_told = p.direct_end;
    rb_st_release_sys_u64(p.out_tail_addr, p.direct_end);
  }
  rb_st_release_gpu_u32(&rb_grid.exit, 1u);
  rb_poller_state(cb, p, RB_STATE_TERMINATED);
  op->kind = RB_OP_EXIT;
}

/// Hands a round to the grid: its fields, then claim_pos, then the release of avail_end.
/// @param p the poller (round_start, round_n set)
RB_DEVICE void rb_start_grid_round(rb_poller& p) {
  const uint32_t n = p.round_n;
  // About RB_RING_CLAIMS_PER_BLOCK chunks per block, whole passes of a block.
  const uint32_t pass = p.pass;
  const uint32_t claims = RB_RING_CLAIMS_PER_BLOCK * gridDim.x;
  const uint32_t per_block = (n + claims - 1u) / claims;
  const uint32_t chunk = (per_block + pass - 1u) / pass * pass;
  rb_st_relaxed_gpu_u64(&rb_grid.round_start, p.round_start);
  rb_st_relaxed_gpu_u64(&rb_grid.out_delta, p.delta);
  rb_st_relaxed_gpu_u32(&rb_grid.chunk, chunk);
  // Every earlier grid position is claimed and done (claim_pos == previous avail_end <=
  // round_start), so no CAS can succeed on the old value: a plain store is safe.
  rb_st_relaxed_gpu_u64(&rb_grid.claim_pos, p.round_start);
  // ORDERING: release pairs with the blocks' acquire in rb_claim_chunk; it follows this
  // thread's C2 acquire of the input tail, so the input slots reach them too.
  rb_st_release_gpu_u64(&rb_grid.avail_end, p.round_start + n);
  p.done_target += n;
  p.grid_round = true;
  p.direct_out = false;
}

/// Waits (bounded) until every chunk of the grid round in hand is reported done.
/// @return false on RB_SPIN_LIMIT (SPIN_TIMEOUT): a block stopped making progress
RB_DEVICE bool rb_wait_grid_round(const rb_poller& p) {
  for (uint32_t spin = 0; spin < RB_SPIN_LIMIT; ++spin) {
    // ORDERING: acquire pairs with the blocks' fence before their relaxed add to `done`.
    if (rb_ld_acquire_gpu_u64(&rb_grid.done) == p.done_target) return true;
    if (spin >= 64) __nanosleep(spin < 1024 ? 64u : 256u);
  }
  return false;
}

/// The poller's K1–K4: decides the block's next op, publishing the previous grid round first.
/// @param cb the control block
/// @param p the poller
/// @param s the setup
/// @param op the block's op to fill
RB_DEVICE void rb_poller_next(rb_control_block* cb, rb_poller& p, const rb_ring_setup& s,
                              rb_block_op* op) {
  if (p.grid_round) {
    if (rb_claim_chunk(op)) return;
    if (!rb_wait_grid_round(p)) {
      // A wait that only another block can end ran out: report, stop, never hang the GPU.
      // The round stays unpublished (its input is undelivered).
      rb_record_error(cb, &p.errors, RB_KERNEL_ERROR_SPIN_TIMEOUT, 1u);
      rb_poller_exit(cb, p, op);
      return;
    }
    const unsigned long long key = rb_exch_relaxed_gpu_u64(&rb_grid.err_key, 0ull);
    const unsigned int errors = rb_exch_relaxed_gpu_u32(&rb_grid.err_count, 0u);
    rb_publish_round(cb, p, errors, key);
  }
  for (uint32_t spin = 0;; ++spin) {
    // K1/K2 and C1–C2 in one step: the command pair (active, terminate) and, when the cached
    // tail shows nothing, the input tail, both relaxed, issued together (one round trip).
    const bool poll_tail = p.cached_tail == p.next;
    const rb_commands cmd = rb_poll_commands(cb);
    const uint64_t tail = poll_tail ? rb_ld_relaxed_sys_u64(p.tail_addr) : p.cached_tail;
    const uint32_t active = cmd.active;
    const uint32_t terminate = cmd.terminate;
    const bool quiet = terminate == RB_TERMINATE_NONE &&
                       ((active != 0 && p.state == RB_STATE_RUNNING && tail == p.next) ||
                        (active == 0 && p.state == RB_STATE_PAUSED));
    if (quiet) {
      // Idle (D1 on the GPU: back off, never park; kernel_sleeping stays 0).
      rb_backoff(spin);
      continue;
    }
    // ORDERING: (K1, C2) the relaxed loads above plus this fence are acquires: they pair with
    // the host's release of terminate (H5) and of the input tail (P4), so a DRAIN seen here
    // comes with every message published before it, and the slots up to `tail` are complete.
    rb_fence_acq_rel_sys();
    if (terminate == RB_TERMINATE_ABANDON) {
      rb_poller_exit(cb, p, op);
      return;
    }
    if (active == 0 && terminate == RB_TERMINATE_NONE) {
      // K2: pause; the input waits in the ring.
      rb_poller_state(cb, p, RB_STATE_PAUSED);
      spin = 0;
      continue;
    }
    if (p.state != RB_STATE_RUNNING) rb_poller_state(cb, p, RB_STATE_RUNNING);
    p.cached_tail = tail;
    uint64_t avail = rb_occupied(p.next, p.cached_tail);
    if (avail == 0) {
      if (terminate == RB_TERMINATE_DRAIN) {
        // The tail above may have been read before DRAIN was: read it again after the acquire.
        // ORDERING: (C2) acquire pairs with the host's release of the input tail (P4).
        p.cached_tail = rb_ld_acquire_sys_u64(p.tail_addr);
        if (p.cached_tail == p.next) {
          // On `dma` the word polled above is the bridge's copy of the tail: exit only when the
          // host ring itself is empty too, so a DRAIN stored before the bridge's last copy
          // landed does not end the drain early. (On `mapped` both are the same word.) A route's
          // later stage has no host producer (§14): its polled tail is the whole truth.
          // ORDERING: (K1, C2) acquire pairs with the host's release of input_tail (P4).
          if (cb->input_producer == RB_PRODUCER_KERNEL ||
              rb_ld_acquire_sys_u64(&cb->input_tail) == p.next) {
            rb_poller_exit(cb, p, op);
            return;
          }
          rb_backoff(spin);
          continue;
        }
        avail = rb_occupied(p.next, p.cached_tail);
      } else {
        rb_backoff(spin);
        continue;
      }
    }
    // I4 says avail <= capacity; a host that broke it gets at most one lap, never wild slots.
    if (avail > s.in_capacity) avail = s.in_capacity;
    p.round_in = s.in_slots;
    if (p.host_in != nullptr) {
      // Hybrid input (§11.2, HY2): a shallow backlog is read from the host's slots across PCIe
      // (always correct: they hold the committed bytes; no device load on the latency path);
      // a deep one from the device slots the bridge has copied, waiting for its large copies
      // when it has copied nothing past `next` yet.
      if (avail <= p.direct_max) {
        p.round_in = p.host_in;
      } else {
        if (static_cast<long long>(p.cached_dev_tail - p.next) <= 0) {
          // ORDERING: (C2) acquire pairs with the copy engine's write of the word after the
          // slots (stream order), as on dma.
          p.cached_dev_tail = rb_ld_acquire_sys_u64(p.dev_tail_addr);
        }
        const long long copied = static_cast<long long>(p.cached_dev_tail - p.next);
        if (copied <= 0) {
          rb_backoff(spin);
          continue;
        }
        if (avail > static_cast<uint64_t>(copied)) avail = static_cast<uint64_t>(copied);
      }
    }
    const uint32_t wanted = avail < p.round_cap ? static_cast<uint32_t>(avail) : p.round_cap;
    const uint64_t out_next = p.next + p.delta;
    uint64_t free = rb_free(p.cached_out_head, out_next, s.out_capacity);
    if (free < wanted) {
      // P2: reload the output head only when the cached copy shows too little room.
      // ORDERING: (P2) acquire pairs with the consumer's release of output_head (C4: the host's,
      // or in a route the next stage's release of its input_head): its reads of
      // the slots we are about to overwrite happened before.
      p.cached_out_head = rb_ld_acquire_sys_u64(p.out_head_addr);
      free = rb_free(p.cached_out_head, out_next, s.out_capacity);
    }
    if (free == 0) {
      // K4: the output ring is full and every earlier round is published. Wait until the host
      // frees a slot, ABANDONs or pauses; then K1 again (ABANDON exits, a pause parks at K2).
      for (uint32_t k4 = 0;; ++k4) {
        const uint64_t head = rb_ld_relaxed_sys_u64(p.out_head_addr);
        const rb_commands c = rb_poll_commands(cb);
        if (head != p.cached_out_head) break;
        if (c.terminate == RB_TERMINATE_ABANDON) break;
        if (c.active == 0 && c.terminate == RB_TERMINATE_NONE) break;
        rb_backoff(k4);
      }
      // ORDERING: (P2) acquire pairs with the consumer's release of the head (C4).
      p.cached_out_head = rb_ld_acquire_sys_u64(p.out_head_addr);
      spin = 0;
      continue;
    }
    const uint32_t n = free < wanted ? static_cast<uint32_t>(free) : wanted;
    p.round_start = p.next;
    p.round_n = n;
    p.round_out = s.out_slots;
    p.direct_out = false;
    if (p.host_out != nullptr && n <= p.direct_max) {
      // Hybrid output (§11.2, HY3): a small round goes straight to the host's slots once the
      // bridge has published every earlier round it copies: then no copy or tail write of it
      // is in flight, and the host's output_tail is this kernel's to move.
      if (p.out_pending &&
          rb_ld_relaxed_sys_u64(&cb->output_tail) == p.out_bridged_end) {
        p.out_pending = false;
      }
      if (!p.out_pending) {
        p.round_out = p.host_out;
        p.direct_out = true;
      }
    }
    if (gridDim.x == 1 || n <= p.local_max) {
      op->kind = RB_OP_ROUND;
      op->in_slots = p.round_in;
      op->out_slots = p.round_out;
      op->start = p.next;
      op->round_start = p.next;
      op->delta = p.delta;
      op->n = n;
      return;
    }
    rb_start_grid_round(p);
    if (rb_claim_chunk(op)) return;
    // Other blocks took every chunk already: wait for them (next call) with an empty op.
    op->kind = RB_OP_CHUNK;
    op->start = p.next;
    op->round_start = p.next;
    op->delta = p.delta;
    op->n = 0;
    return;
  }
}

/// A block other than 0: claims chunks of grid rounds until the poller says exit.
/// @param cb the control block
/// @param op the block's op to fill
RB_DEVICE void rb_worker_next(const rb_control_block* cb, rb_block_op* op) {
  for (uint32_t spin = 0;; ++spin) {
    if (rb_claim_chunk(op)) return;
    if (rb_ld_relaxed_gpu_u32(&rb_grid.exit) != 0) {
      op->kind = RB_OP_EXIT;
      return;
    }
    // Every wait watches terminate: on ABANDON this block may leave at once, since block 0
    // can finish any round alone (claims are dynamic).
    if ((spin & 255u) == 255u &&
        rb_ld_relaxed_sys_u32(&cb->terminate) == RB_TERMINATE_ABANDON) {
      op->kind = RB_OP_EXIT;
      return;
    }
    rb_backoff(spin);
  }
}

// ---------------------------------------------------------------------------------------------
// The kernel.
// ---------------------------------------------------------------------------------------------

/// The persistent ring kernel: serves `cb` until a terminate command (spec §5.1, §9).
/// @param cb the control block, as the kernel sees it (setup line written before launch, L1)
extern "C" __global__ void __launch_bounds__(RB_RING_MAX_THREADS)
    rb_ring_kernel(rb_control_block* cb) {
  __shared__ rb_block_op op;
  // The poller's state lives in shared memory, not registers: only one thread uses it, and
  // registers live across the loop in every thread would spill under the 1024-thread bound.
  __shared__ rb_poller poller;
  rb_poller& p = poller;
  const bool lead = threadIdx.x == 0;
  const bool is_poller = lead && blockIdx.x == 0;
  // A block the scheduler starts only after the poller left (the grid did not fit) leaves at
  // once, before touching the control block, which the host may free after TERMINATED.
  if (blockIdx.x != 0 && rb_ld_relaxed_gpu_u32(&rb_grid.exit) != 0) return;
  const rb_ring_setup s = rb_read_setup(cb);
  const uint32_t h = s.handler;
#ifdef RB_USER_HANDLER
  const bool user = h == RB_HANDLER_USER;
#else
  const bool user = false;
#endif
  if (h != RB_HANDLER_ECHO && h != RB_HANDLER_SAXPY && h != RB_HANDLER_TRAP && !user) {
    if (is_poller) {
      // HANDLER_FAULT, then TERMINATED.
      rb_errors errors = rb_load_errors(cb);
      rb_record_error(cb, &errors, RB_KERNEL_ERROR_HANDLER_FAULT, 1u);
      rb_st_release_gpu_u32(&rb_grid.exit, 1u);
      rb_set_state(cb, RB_STATE_TERMINATED);
    }
    return;
  }

  if (is_poller) {
    p.tail_addr = reinterpret_cast<const uint64_t*>(cb->input_tail_addr);
    p.out_tail_addr = reinterpret_cast<uint64_t*>(cb->output_tail_addr);
    p.out_head_addr = reinterpret_cast<const uint64_t*>(cb->output_head_addr);
    // Relaxed: this kernel is the only writer of both (I1); they are where it resumes.
    p.next = rb_ld_relaxed_sys_u64(&cb->input_head);
    p.delta = rb_ld_relaxed_sys_u64(p.out_tail_addr) - p.next;
    p.cached_tail = p.next;
    // ORDERING: (P2) acquire pairs with the consumer's release of the head (C4).
    p.cached_out_head = rb_ld_acquire_sys_u64(p.out_head_addr);
    p.processed = rb_ld_relaxed_sys_u64(&cb->messages_processed);
    p.errors = rb_load_errors(cb);
    p.done_target = 0;
    p.round_start = p.next;
    p.round_n = 0;
    p.grid_round = false;
    const uint32_t pass = s.groups * RB_RING_UNROLL;
    p.pass = pass;
    p.local_max = gridDim.x == 1 ? pass : pass * RB_RING_LOCAL_PASSES;
    uint64_t cap = static_cast<uint64_t>(gridDim.x) * pass * RB_RING_ROUND_PASSES;
    if (cap > (1u << 20)) cap = 1u << 20;
    p.round_cap = static_cast<uint32_t>(cap);
    // Hybrid (§11.2): direct rounds are block 0's own rounds (never grid rounds), so only the
    // poller's op ever names the host's slots (with one block, every round is). A route stage
    // fed by a kernel has no host input.
    const uint32_t alone = gridDim.x == 1 ? p.round_cap : p.local_max;
    p.direct_max = cb->direct_max < alone ? cb->direct_max : alone;
    p.host_in = p.direct_max != 0 && cb->input_producer == RB_PRODUCER_HOST
                    ? reinterpret_cast<const uint8_t*>(cb->host_input_buffer)
                    : nullptr;
    p.host_out = p.direct_max != 0 ? reinterpret_cast<uint8_t*>(cb->host_output_buffer) : nullptr;
    p.direct_upto_addr = reinterpret_cast<uint64_t*>(cb->direct_upto_addr);
    p.dev_tail_addr = p.tail_addr;
    if (p.host_in != nullptr) p.tail_addr = &cb->input_tail;
    p.cached_dev_tail = p.next;
    p.out_bridged_end = p.next + p.delta;
    p.direct_end = p.direct_told = p.next + p.delta;
    p.out_pending = true;
    p.direct_out = false;
    p.round_in = s.in_slots;
    p.round_out = s.out_slots;
    // K8: on start, RUNNING.
    rb_poller_state(cb, p, RB_STATE_RUNNING);
  }
  for (;;) {
    if (lead) {
      op.err_count = 0;
      op.err_key = 0;
      if (blockIdx.x == 0) {
        rb_poller_next(cb, p, s, &op);
      } else {
        rb_worker_next(cb, &op);
      }
      // Grid rounds always use the transport's slots (only the poller's own rounds go direct).
      if (op.kind == RB_OP_CHUNK) {
        op.in_slots = s.in_slots;
        op.out_slots = s.out_slots;
      }
    }
    // The op (and, through the poller's C2 acquire or the claim's acquire, the input slots it
    // names) reaches every thread of the block here.
    __syncthreads();
    const uint32_t kind = op.kind;
    if (kind == RB_OP_EXIT) break;
    rb_block_op_messages(s, &op);
    // Every thread's slot reads and writes of the op are done before its lead publishes or
    // reports them (the release/fence there is cumulative over this barrier).
    __syncthreads();
    if (lead) {
      if (kind == RB_OP_ROUND) {
        rb_publish_round(cb, p, op.err_count, op.err_key);
      } else if (op.n != 0) {
        rb_chunk_done(&op);
      }
    }
  }
}
