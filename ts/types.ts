/**
 * The public types of a launched kernel: what {@link Runtime.launch} takes
 * ({@link LaunchOptions}), what a wait takes ({@link WaitOptions}), and what {@link RingKernel}
 * reports ({@link KernelStats}, {@link TerminateReport}, {@link SendOutcome}, …).
 * @module
 */
import type { Schema } from './codec'
import type { RingbridgeError } from './errors'
import type { cudaHeader } from './cuda'
import type { JsHandler } from './handler'
import type { LatencyPercentiles } from './histogram'
import type { RingKernel } from './kernel'
import type { RingProducer, SharedInputStats } from './producer'
import { ERROR_NAMES } from './protocol'
import type { QueueOptions } from './queue'
import type { Runtime } from './runtime'

/**
 * Life-cycle state of a kernel, as its control block reports it.
 * @example
 * ```ts
 * if (kernel.state === 'paused') await kernel.activate()
 * ```
 */
// Restates native's STATE_* names; __test__/protocol.spec.ts checks the union against them.
export type KernelState = 'launching' | 'running' | 'paused' | 'terminated'

/**
 * Names of the kernel-level error codes of the spec (§12), by code.
 * @example
 * ```ts
 * KERNEL_ERROR_NAMES[5] // 'handler-fault'
 * ```
 */
export const KERNEL_ERROR_NAMES: readonly string[] = ERROR_NAMES

/**
 * How to stop a kernel.
 * @example
 * ```ts
 * await kernel.terminate({ mode: 'abandon' satisfies TerminateMode })
 * ```
 */
export type TerminateMode = 'drain' | 'abandon'

/**
 * What {@link Runtime.launch} needs.
 * @example
 * ```ts
 * const options: LaunchOptions<number, number> = { handler: 'echo', input: u32, output: u32, capacity: 4096 }
 * const kernel = await runtime.launch(options)
 * ```
 */
export interface LaunchOptions<TIn, TOut> {
  /** Built-in handler: `echo` or `saxpy` (see `builtinHandlers()`); or give `source` and `entry`. */
  handler?: string
  /**
   * A user handler in CUDA C (cuda backend), instead of `handler`: compiled by NVRTC for the
   * device together with the structs generated from `input` and `output` ({@link cudaHeader}:
   * `rb_input`, `rb_output`), disk-cached. `entry` names its function:
   * `__device__ uint32_t entry(const rb_input& in, rb_output& out, rb_context& ctx)`, returning 0
   * for the reply in `out`, or an error code (>= 256) that rejects this message's `request()`
   * with `ERR_RINGBRIDGE_KERNEL_ERROR` (`details.kernelCode`, and `ctx.detail` as
   * `details.detail`). Compile errors throw `ERR_RINGBRIDGE_COMPILE` with NVRTC's log, lines
   * numbered as in `source` (file `handler.cu`).
   */
  source?: string
  /** The user handler's function name in `source`. */
  entry?: string
  /**
   * Lets a CUDA handler answer a message 0 to `maxReplies` times (1..4096): its signature
   * becomes `uint32_t entry(const rb_input& in, rb_replies& out, rb_context& ctx)` and it calls
   * `out.push(reply)` for each; they travel in one output frame (`FLAG_MULTI`, PROTOCOL.md
   * §3.3), so the output slot grows to hold `maxReplies` records. `request()` resolves with the
   * first reply; the others go to `receive()`. (JS handlers answer any number of times without
   * it: `ctx.reply`.)
   */
  maxReplies?: number
  /**
   * A handler in JavaScript for the cpu backend (instead of `handler`): runs in a worker thread
   * over the same rings, so flows written for a CUDA handler (`source`) can be developed and
   * tested without a GPU. Give both `source` and `cpu` to run on whichever backend the runtime
   * has. `ctx.fail(code, detail)` answers with an error frame. Two forms:
   * - a function: rebuilt from its source text in the worker, so it must not use outer
   *   variables or imports; per-kernel state goes in `ctx.state`.
   * - `{ filename, export? }`, as piscina takes its workers: the worker loads the module
   *   (`require` for `.js`/`.cjs`, `import()` for `.mjs` or an ES module `.js`) and takes its
   *   export `export` (default: `default`, else `module.exports` when that is a function), so
   *   the handler may import modules and keep module state. `filename` is an absolute path or
   *   a `file:` URL (a relative one is an error). A module that fails to load, or an export that
   *   is not a function, fails the launch (`ERR_RINGBRIDGE_INVALID_ARGUMENT`, naming the file,
   *   the export and what was found). It is called as the function form is: synchronously.
   *
   * A handler that throws answers with a HANDLER_FAULT error frame: the message's `request()`
   * rejects with `ERR_RINGBRIDGE_KERNEL_ERROR` whose message ends with the exception's text, and
   * whose `cause` is the exception.
   * @example
   * ```ts
   * // scale.mjs: import { hostname } from 'node:os'
   * //            const FACTOR = 3
   * //            export function scale(x) { return x * FACTOR }
   * const k = await rt.launch({ input: u32, output: u32, cpu: { filename: new URL('./scale.mjs', import.meta.url), export: 'scale' } })
   * await k.request(2) // 6
   * ```
   */
  cpu?: JsHandler<TIn, TOut> | { filename: string | URL; export?: string }
  /** Schema of the messages sent. */
  input: Schema<TIn>
  /** Schema of the replies. */
  output: Schema<TOut>
  /** Input ring slots, a power of two (default 1024). */
  capacity?: number
  /** Output ring slots, a power of two (default: `capacity`). */
  outputCapacity?: number
  /** Input slot bytes, header included, a power of two from 32 (default: fits the input schema; 256 for `bytes()`). */
  slotSize?: number
  /** Output slot bytes (default: fits a fixed-size output schema; for a variable-size one such as `bytes()`, `slotSize` when given, else 256). */
  outputSlotSize?: number
  /** Message type id written in every frame, 0..65535 (default 1). */
  typeId?: number
  /** Host queue in front of the input ring, used when the ring is full (default 4096 messages, `block`). Its capacity counts messages; a batch that overflows the ring waits in it as runs of frames. */
  sendQueue?: QueueOptions
  /** Host queue of replies not yet received (default 65536, `block`: a full queue stops draining the ring, which stops the kernel). */
  replyQueue?: QueueOptions
  /** Limit in ms for life-cycle waits: activate, deactivate, terminate (default 10000). */
  timeoutMs?: number
  /**
   * GPU transport (cuda backend): `mapped` (the rings' host memory mapped into the GPU: lowest
   * latency), `dma` (device rings fed by async copies: highest throughput), `managed`, or
   * `auto` (default: the first of those three that works here, in that order; the reason is in
   * {@link RingKernel.transportReason}); or `hybrid` (experimental, not yet run on a GPU: each
   * round of the kernel reads a shallow queue straight from host memory and leaves a deep one to
   * `dma`'s copies, meant to give one message `mapped`'s latency and a stream `dma`'s
   * throughput; spec §11.2). The cpu backend takes `auto` only.
   */
  // The union restates native's transport names; __test__/protocol.spec.ts checks it against them.
  transport?: 'auto' | 'hybrid' | 'mapped' | 'dma' | 'managed'
  /** GPU blocks of the ring kernel (default: 1 for mapped, one per SM otherwise). */
  blocks?: number
  /** GPU threads per block, a multiple of 32 up to 1024 (default: 512 for mapped, 256 otherwise). */
  threads?: number
  /**
   * How long `request()` polls the output ring on the calling thread before leaving the wait to
   * the doorbell, in µs (default: 50 on cuda, where a reply takes a few µs and the doorbell's
   * trip through the event loop costs more than the round trip itself; 0 on cpu). Blocks the
   * event loop for at most this long per request.
   */
  spinMicros?: number
  /**
   * Where the kernel's runner lives (default: `process` on cuda, `thread` on cpu).
   * - `process`: a kernel host process of its own (a child `node`), over shared memory both
   *   processes map, so nothing is copied between them. A GPU fault (a trapping handler)
   *   leaves a sticky error that ends CUDA for the process it happens in: here that is the
   *   host, so the fault rejects this kernel's promises and the next launch works. Costs
   *   ~0.1 s per launch and one CUDA context per kernel.
   * - `thread`: in this process. Cheapest to launch; after a GPU fault this process cannot use
   *   CUDA again (launches fail with `ERR_RINGBRIDGE_CUDA` saying so).
   */
  isolation?: 'process' | 'thread'
  /**
   * `single` (default): this object is the input ring's one producer. `shared`: several
   * {@link RingProducer}s — one per worker thread, say — write the input ring with no lock on
   * the hot path (claims by compare-and-swap, publication in claim order; see `RingProducer`);
   * take handles with {@link RingKernel.producer}. This object then only receives: its send
   * methods throw. Needs the rings in a SharedArrayBuffer (`isolation: 'thread'`).
   */
  producers?: 'single' | 'shared'
  /** The GPU to run on: one of `runtime.devices` (default: the first). */
  device?: number
}

/**
 * Options of a single wait.
 * @example
 * ```ts
 * const ac = new AbortController()
 * const reply = await kernel.request(7, { timeoutMs: 1000, signal: ac.signal } satisfies WaitOptions)
 * ```
 */
export interface WaitOptions {
  /** Give up after this many ms with `ERR_RINGBRIDGE_TIMEOUT` (default: no limit). */
  timeoutMs?: number
  /**
   * Cancels the wait with `ERR_RINGBRIDGE_ABORTED`: a {@link RingbridgeError} named `AbortError`
   * (as Node names its own cancellations), the signal's reason as `cause`. A message
   * not yet in the input ring (waiting in the send queue or for room) is withdrawn and never
   * sent; one already in the ring cannot be taken back: its reply is counted as late.
   */
  signal?: AbortSignal
}

/**
 * Counters and depths of one kernel.
 * @example
 * ```ts
 * const s: KernelStats = kernel.stats()
 * console.log(s.processed, s.depth.inputRing, s.requestLatency.p99)
 * ```
 */
export interface KernelStats {
  /** The backend running it. */
  backend: string
  /** Life-cycle state. */
  state: KernelState
  /** Messages accepted into the input ring. */
  sent: number
  /** Messages the kernel took and handled (its own counter). */
  processed: number
  /** Replies taken from the output ring. */
  replied: number
  /** Error frames received and errors the kernel counted. */
  errors: { replies: number; kernel: number; firstKernelError: string }
  /** Messages dropped by the queue policies (never silently). */
  dropped: { send: number; reply: number }
  /** Replies that came after their request timed out. */
  lateReplies: number
  /** Messages waiting in each stage. */
  depth: { sendQueue: number; inputRing: number; outputRing: number; replyQueue: number }
  /** Requests awaiting their reply. */
  pendingRequests: number
  /**
   * The kernel host's liveness under `process` isolation (else absent): `state` is `running`,
   * `stopped` (SIGSTOP, a debugger: it answers nothing until continued; `terminate()` gives up
   * on it after a second and kills it) or `exited` (with `exitReason`).
   */
  host?: KernelHostStatus
  /** Round trips of `request()` that got their reply, send to settle, in µs. */
  requestLatency: LatencyPercentiles
  /**
   * Each kernel's own counters, first to last (one entry, or a route's stages): where a route
   * stalls or fails. `inputRing`: messages in that stage's input ring (for a later stage, those
   * the stage before it wrote and it has not taken).
   */
  stages: { state: KernelState; processed: number; errors: number; firstKernelError: string; inputRing: number }[]
  /**
   * Shared input rings only (`producers: 'shared'`; PROTOCOL.md §15). `claimed`: positions
   * claimed; `unpublished`: claimed and not yet published (claims in flight, or held by a
   * producer that died and that no producer has rescued yet); `rescuedClaims`: claims another
   * producer rescued because theirs stalled past `recoverAfterMs` (a Worker terminated
   * mid-claim); `skipped`: positions of those claims filled with skip frames — their messages
   * were lost with their producer; the kernel took them (they count in `processed`), nobody
   * receives them; `rescuedFrames`: positions of rescued claims whose frames were complete and
   * were published for their producer (delivered).
   */
  producers?: SharedInputStats
}

/**
 * A kernel host's liveness, as {@link KernelStats.host} reports it.
 * @example
 * ```ts
 * const h = kernel.stats().host
 * if (h?.state === 'stopped') console.warn(`kernel host ${h.pid} stopped ${h.stoppedForMs} ms ago`)
 * ```
 */
export interface KernelHostStatus {
  /** The host's process id. */
  pid: number
  /** `running` (or idle: it can answer), `stopped` (answers nothing until continued), `exited`. */
  state: 'running' | 'stopped' | 'exited'
  /** How it ended (`signal: 9 (SIGKILL)`), once exited. */
  exitReason?: string
  /** While stopped: how long it has been seen stopped, in ms (measured from the first look). */
  stoppedForMs?: number
  /** Milliseconds since the host last showed progress (a doorbell, a report, a handled message). */
  sinceProgressMs: number
}

/**
 * What {@link RingKernel.terminate} hands back.
 * @example
 * ```ts
 * const report: TerminateReport<number> = await kernel.terminate()
 * console.log(report.processed, report.undelivered.length)
 * ```
 */
export interface TerminateReport<TIn> {
  /** How it stopped. */
  mode: TerminateMode
  /** Messages the kernel handled over its life. */
  processed: number
  /** Messages sent but never handled, oldest first (empty after a drain). */
  undelivered: TIn[]
  /** What ended the kernel when it was not a terminate command (a faulting GPU handler). */
  fault?: Error
}

/**
 * What became of a message given to {@link RingKernel.send} (and each of
 * {@link RingKernel.sendBatch}'s):
 * - `sent`: it is in the input ring; the kernel will take it.
 * - `queued`: it waits in the send queue (`block`, `reject`, `drop-newest`: policies that never
 *   drop a queued message) and goes into the ring in order; if the kernel is abandoned first it
 *   is listed in the terminate report.
 * - `dropped`: the send queue's `drop-oldest` / `drop-newest` policy discarded it (counted in
 *   `stats().dropped.send`). Never sent.
 * - `undelivered`: under `drop-oldest`, the kernel was abandoned while it waited in the queue:
 *   it is listed in the terminate report.
 * @example
 * ```ts
 * if ((await kernel.send(msg)) === 'dropped') retryLater(msg)
 * ```
 */
export type SendOutcome = 'sent' | 'queued' | 'dropped' | 'undelivered'

/**
 * One kernel of a {@link RingKernel}: a route's stage, or the kernel itself.
 * @example
 * ```ts
 * for (const [i, stage] of route.stages.entries()) console.log(i, stage.transport, stage.device)
 * ```
 */
export interface RouteStageInfo {
  /** `shared-memory` on cpu, else the GPU transport. */
  readonly transport: string
  /** Why that transport. */
  readonly transportReason: string
  /** The device it runs on. */
  readonly device: number
}

/**
 * Options of {@link SendChunk.commit}.
 * @example
 * ```ts
 * const options: CommitOptions = { size: 48, typeId: 7 }
 * chunk.commit(chunk.count, options)
 * ```
 */
export interface CommitOptions {
  /** Payload bytes of every committed message, 0 to the slot payload (default: the size given to `set()`, else the whole slot payload). */
  size?: number
  /** Message type id of every committed message, 0..65535 (default: the kernel's `typeId`). */
  typeId?: number
}
