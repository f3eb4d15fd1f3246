/**
 * `RingKernel<TIn, TOut>`: one launched ring kernel, seen from JavaScript. Messages are encoded
 * straight into the input ring's slots in shared memory and replies decoded straight
 * out of the output ring's slots: no per-message call into native code on the hot path.
 * @module
 */
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'

import native from './binding'
import type { Schema } from './codec'
import { RingbridgeError, RingbridgeRangeError, RingbridgeTypeError, badOption, describe, fromNative } from './errors'
import type { Runtime } from './runtime'
import { Fifo, MessageQueue, queueOptions, type QueueOptions } from './queue'
import { cudaHeader } from './cuda'
import { LatencyHistogram, type LatencyPercentiles } from './histogram'
import { producerHandle, sharedInputStats, type ProducerHandle, type SharedInputStats } from './producer'
import { MessageChannel } from 'node:worker_threads'
import { WorkerRunner, type JsHandler } from './handler'
import { ControlBlockView, InputRing, OutputRing, type FrameRef } from './ring'
import {
  ERROR_NAMES,
  FLAG,
  FRAME_HEADER_BYTES,
  MAGIC,
  MAX_CAPACITY,
  MAX_REPLIES,
  MAX_SLOT_SIZE,
  MIN_SLOT_SIZE,
  MULTI_HEADER_BYTES,
  REGION_PAGE,
  STATE,
  STATE_NAMES,
  TERMINATE,
  TRANSPORT_NAMES,
  VERSION,
  WAIT,
  isSkipFrame,
  multiFrameBytes,
  quotedList,
  readErrorRecord,
  readMultiHeader,
} from './protocol'

/**
 * Life-cycle state of a kernel, as its control block reports it.
 * @example
 * ```ts
 * if (kernel.state === 'paused') await kernel.activate()
 * ```
 */
export type KernelState = 'launching' | 'running' | 'paused' | 'terminated'
/** Each state's name, by its `state` word (from protocol.rs; `__test__/protocol.spec.ts` checks the union against it). */
const STATES = STATE_NAMES as readonly KernelState[]

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
   * has. Rebuilt from its source text in the worker: it must not use outer variables; per-kernel
   * state goes in `ctx.state`. `ctx.fail(code, detail)` answers with an error frame.
   */
  cpu?: JsHandler<TIn, TOut>
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
  /** Output slot bytes (default: fits the output schema; 256 for `bytes()`). */
  outputSlotSize?: number
  /** Message type id written in every frame, 0..65535 (default 1). */
  typeId?: number
  /** Host queue in front of the input ring, used when the ring is full (default 4096, `block`). */
  sendQueue?: QueueOptions
  /** Host queue of replies not yet received (default 65536, `block`: a full queue stops draining the ring, which stops the kernel). */
  replyQueue?: QueueOptions
  /** Limit in ms for life-cycle waits: activate, deactivate, terminate (default 10000). */
  timeoutMs?: number
  /**
   * GPU transport (cuda backend): `mapped` (the rings' host memory mapped into the GPU: lowest
   * latency), `dma` (device rings fed by async copies: highest throughput), `managed`, or
   * `auto` (default: the first that works here, in that order; the reason is in
   * {@link RingKernel.transportReason}). The cpu backend takes `auto` only.
   */
  // The union restates native's transport names; __test__/protocol.spec.ts checks it against them.
  transport?: 'auto' | 'mapped' | 'dma' | 'managed'
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
   * Cancels the wait with `ERR_RINGBRIDGE_ABORTED` (the signal's reason as `cause`). A message
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
   * Shared input rings only (`producers: 'shared'`; PROTOCOL.md §16). `claimed`: positions
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

type Entry<T> = { ok: true; value: T } | { ok: false; error: Error }
interface Waiter<T> {
  resolve: (v: T) => void
  reject: (e: Error) => void
  timer?: ReturnType<typeof setTimeout>
  /** `performance.now()` at send, for the latency histogram (requests only). */
  started?: number
}
interface Queued {
  id: number
  bytes: Uint8Array
  /** Under a dropping policy: settles its sender's promise once the outcome is final. */
  outcome?: (o: SendOutcome) => void
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

/** A message waiting for room in a full send queue under `block`; `what` names its caller. */
type Blocked = Waiter<SendOutcome> & { item: Queued; what: string }

/**
 * Replies delivered per turn of the event loop before the rest wait for the next turn: large
 * enough that the `setImmediate` between turns costs nothing measurable, small enough that a
 * turn stays well under a millisecond.
 */
const DRAIN_BUDGET = 1024

/** The longest timer Node keeps: a longer `setTimeout` fires after 1 ms instead (with a warning). */
const MAX_TIMER_MS = 2 ** 31 - 1

/** Slot size for a schema of variable size (`bytes()`) when none is given. */
const DEFAULT_VARIABLE_SLOT = 256

const closedError = (what: string) => new RingbridgeError('ERR_RINGBRIDGE_CLOSED', `${what}: the kernel is terminated`)
const nextPow2 = (n: number) => 2 ** Math.ceil(Math.log2(Math.max(n, 1)))

/** True for an integer power of two from `min` to `max` (numbers past 2^32 included: never wrapped). */
const isPow2In = (v: unknown, min: number, max: number): v is number =>
  typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max && 2 ** Math.round(Math.log2(v)) === v

/**
 * A ring capacity as given, checked against the spec's limits before anything reaches the
 * native side (whose u32 fields would otherwise see 2^32 + 8 as 8).
 */
function checkCapacity(name: string, v: unknown): void {
  if (v !== undefined && !isPow2In(v, 1, MAX_CAPACITY)) badRange(name, `a power of two from 1 to ${MAX_CAPACITY}`, v)
}

/** `badOption` for an integer out of its range (a RangeError; a wrong type stays a TypeError). */
function badRange(name: string, expected: string, got: unknown): never {
  if (typeof got !== 'number' || !Number.isInteger(got)) badOption(name, expected, got)
  throw new RingbridgeRangeError('ERR_RINGBRIDGE_INVALID_ARGUMENT', `${name}: expected ${expected}, got ${describe(got)}`)
}

function slotFor(schema: Schema<unknown>, given: number | undefined, name: string): number {
  if (given !== undefined) {
    if (!isPow2In(given, MIN_SLOT_SIZE, MAX_SLOT_SIZE)) badRange(name, `a power of two from ${MIN_SLOT_SIZE} to ${MAX_SLOT_SIZE} bytes, header included`, given)
    return given
  }
  const payload = schema.size ?? Math.min(schema.maxSize, DEFAULT_VARIABLE_SLOT - FRAME_HEADER_BYTES)
  return Math.max(MIN_SLOT_SIZE, nextPow2(payload + FRAME_HEADER_BYTES))
}

/**
 * A built-in handler's message shapes against the launch's schemas, where both are fixed: a
 * mismatch is an error at launch, never replies that decode to garbage (or fail) at run time.
 */
function checkBuiltinSchemas(handler: string, input: Schema<unknown>, output: Schema<unknown>): void {
  const mismatch = (expected: string) => {
    throw new RingbridgeTypeError('ERR_RINGBRIDGE_INVALID_ARGUMENT', `schemas for the built-in '${handler}' handler: expected ${expected}, got input ${input.kind} of ${input.size ?? 'variable'} bytes and output ${output.kind} of ${output.size ?? 'variable'} bytes`)
  }
  if (handler === 'echo' && input.size !== undefined && output.size !== undefined && input.size !== output.size) {
    mismatch('an output of the input\'s size (echo replies with the request\'s bytes)')
  }
  if (handler === 'saxpy' && input.size !== undefined) {
    const n = (input.size - 4) / 8
    if (!Number.isInteger(n) || n < 0) mismatch('an input of 4 + 8n bytes (a: f32, x: n × f32, y: n × f32)')
    if (output.size !== undefined && output.size !== 4 * n) mismatch(`an output of ${4 * n} bytes (r: ${n} × f32)`)
  }
}

function checkSchema(s: unknown, name: string): void {
  const schema = s as Schema<unknown> | undefined
  if (!schema || typeof schema !== 'object' || typeof schema.encode !== 'function' || typeof schema.decode !== 'function') {
    badOption(name, 'a schema (u32, struct({...}), bytes(), …)', s)
  }
}

/** One stage's validated launch: the native options, the region layout, what runs it. */
interface StageShape {
  shape: Parameters<typeof native.regionLayout>[0]
  layout: ReturnType<typeof native.regionLayout>
  jsHandler: boolean
  isolation: 'process' | 'thread'
  producers: 'single' | 'shared'
  typeId: number
  timeoutMs: number
}

/** Validates one kernel's launch options; `where` names a route's stage in every error. */
function stageShape(options: LaunchOptions<unknown, unknown>, backend: string, device: number, where: string): StageShape {
  try {
    return checkStage(options, backend, device)
  } catch (e) {
    if (where !== '' && e instanceof Error) e.message = where + e.message
    throw e
  }
}

/** Validates one kernel's launch options (every public entry point's bad input gets a clear error). */
function checkStage(options: LaunchOptions<unknown, unknown>, backend: string, device: number): StageShape {
  if (options === null || typeof options !== 'object') badOption('launch options', 'an object { handler, input, output, … }', options)
  if (options.cpu !== undefined && typeof options.cpu !== 'function') badOption('cpu', 'a function (msg, ctx) => reply', options.cpu)
  const jsHandler = backend === 'cpu' && options.cpu !== undefined
  if (jsHandler && options.handler !== undefined) badOption('handler', 'nothing: the cpu handler replaces the built-in handler', options.handler)
  if (backend !== 'cpu' && options.cpu !== undefined && options.source === undefined) {
    badOption('source', `a CUDA handler (source, entry) for the ${backend} backend: the cpu handler runs on the cpu backend only`, options.source)
  }
  const user = !jsHandler && (options.source !== undefined || options.entry !== undefined)
  if (jsHandler) {
    if (options.isolation === 'process') badOption('isolation', "'thread' (a JS handler runs in a worker thread of this process)", options.isolation)
  } else if (user) {
    if (typeof options.source !== 'string' || options.source.trim() === '') badOption('source', 'the CUDA C source of the handler', options.source)
    if (typeof options.entry !== 'string') badOption('entry', 'the name of the handler function in source', options.entry)
    if (options.handler !== undefined) badOption('handler', 'nothing: a user kernel (source, entry) replaces the built-in handler', options.handler)
  } else if (typeof options.handler !== 'string') {
    badOption('handler', `a built-in handler name (${native.builtinHandlers().join(', ')}), or source and entry`, options.handler)
  }
  checkSchema(options.input, 'input')
  checkSchema(options.output, 'output')
  const schemaHeader = user ? cudaHeader(options.input, options.output) : undefined
  const maxReplies = options.maxReplies
  if (maxReplies !== undefined) {
    if (!Number.isInteger(maxReplies) || maxReplies < 1 || maxReplies > MAX_REPLIES) badOption('maxReplies', `an integer from 1 to ${MAX_REPLIES}`, maxReplies)
    if (!user && !jsHandler) badOption('maxReplies', 'a user handler (source and entry): built-in handlers answer once', maxReplies)
  }
  const multiBytes = user && maxReplies !== undefined ? multiFrameBytes(maxReplies, options.output.size ?? 0) : 0
  const capacity = options.capacity ?? 1024
  const typeId = options.typeId ?? 1
  if (!Number.isInteger(typeId) || typeId < 0 || typeId > 0xffff) {
    throw new RingbridgeRangeError('ERR_RINGBRIDGE_INVALID_ARGUMENT', `typeId: expected an integer from 0 to 65535, got ${String(typeId)}`)
  }
  const timeoutMs = options.timeoutMs ?? 10_000
  if (options.spinMicros !== undefined && (typeof options.spinMicros !== 'number' || !(options.spinMicros >= 0) || options.spinMicros > 1e6)) {
    badOption('spinMicros', 'a number of microseconds from 0 to 1000000', options.spinMicros)
  }
  if (typeof timeoutMs !== 'number' || !(timeoutMs > 0) || timeoutMs > MAX_TIMER_MS) badOption('timeoutMs', `a number of milliseconds above 0, at most ${MAX_TIMER_MS}`, timeoutMs)
  checkCapacity('capacity', capacity)
  checkCapacity('outputCapacity', options.outputCapacity)
  const transport = options.transport ?? 'auto'
  if (!TRANSPORT_NAMES.includes(transport)) badOption('transport', quotedList(TRANSPORT_NAMES), transport)
  for (const [name, v] of [['blocks', options.blocks], ['threads', options.threads]] as const) {
    if (v !== undefined && (!Number.isInteger(v) || v < 1 || v > 0xffffffff)) badOption(name, 'a positive integer below 2^32', v)
  }
  if (options.device !== undefined && (!Number.isInteger(options.device) || options.device < 0 || options.device > 0xffffffff)) badOption('device', 'a device ordinal (a non-negative integer)', options.device)
  const producers = options.producers ?? 'single'
  if (producers !== 'single' && producers !== 'shared') badOption('producers', "'single' or 'shared'", producers)
  if (producers === 'shared' && options.isolation === 'process') badOption('isolation', "'thread' with producers 'shared' (worker threads attach to a SharedArrayBuffer)", options.isolation)
  const isolation = jsHandler || producers === 'shared' ? 'thread' : (options.isolation ?? (backend === 'cuda' ? 'process' : 'thread'))
  if (isolation !== 'process' && isolation !== 'thread') badOption('isolation', "'process' or 'thread'", isolation)
  const shape = {
    backend,
    isolation,
    hostCommand: isolation === 'process' ? [process.execPath, join(__dirname, 'kernel-host.js')] : undefined,
    transport,
    blocks: options.blocks,
    threads: options.threads,
    handler: jsHandler ? 'external' : (options.handler ?? 'user'),
    device,
    source: user ? options.source : undefined,
    entry: user ? options.entry : undefined,
    schemaHeader,
    inputCapacity: capacity,
    inputSlotSize: slotFor(options.input, options.slotSize, 'slotSize'),
    outputCapacity: options.outputCapacity ?? capacity,
    outputSlotSize: multiBytes > 0 && options.outputSlotSize === undefined ? Math.max(MIN_SLOT_SIZE, nextPow2(multiBytes + FRAME_HEADER_BYTES)) : slotFor(options.output, options.outputSlotSize, 'outputSlotSize'),
    maxReplies: user ? maxReplies : undefined,
  }
  let layout
  try {
    layout = native.regionLayout(shape)
  } catch (e) {
    throw fromNative(e)
  }
  for (const [schema, slot, name] of [[options.input, shape.inputSlotSize, 'input'], [options.output, shape.outputSlotSize, 'output']] as const) {
    if (schema.size !== undefined && schema.size > slot - FRAME_HEADER_BYTES) {
      throw new RingbridgeRangeError(
        'ERR_RINGBRIDGE_MESSAGE_TOO_LARGE',
        `${name} schema of ${schema.size} bytes exceeds the slot payload of ${slot - FRAME_HEADER_BYTES} bytes (slot size ${slot})`,
      )
    }
  }
  if (!user && !jsHandler) checkBuiltinSchemas(options.handler!, options.input, options.output)
  return { shape, layout, jsHandler, isolation, producers, typeId, timeoutMs }
}

/**
 * What `launchRoute` accepts beyond each stage's own checks (it has checked there are two
 * stages or more): stages fed by a kernel take no
 * host-side role (a JS handler, shared producers), and each stage's output ring is the next
 * one's input ring (the native side checks the ring shapes again, before anything runs).
 */
function checkRoute(list: readonly LaunchOptions<any, any>[], stages: readonly StageShape[]): void {
  stages.forEach((st, i) => {
    if (st.jsHandler) badOption(`route stage ${i}: cpu`, 'a built-in or CUDA handler: a route\'s kernels talk to each other without JavaScript', list[i]!.cpu)
    if (st.producers === 'shared') badOption(`route stage ${i}: producers`, "'single' (shared producers are not available for routes)", st.producers)
    if (st.isolation !== stages[0]!.isolation) badOption(`route stage ${i}: isolation`, `'${stages[0]!.isolation}', as stage 0: a route's stages share one runner`, st.isolation)
    const next = stages[i + 1]
    if (next === undefined) return
    const [o, n] = [st.shape, next.shape]
    if (o.outputCapacity !== n.inputCapacity || o.outputSlotSize !== n.inputSlotSize) {
      throw new RingbridgeRangeError(
        'ERR_RINGBRIDGE_INVALID_ARGUMENT',
        `route stage ${i}'s output ring (${o.outputCapacity} slots of ${o.outputSlotSize} B) must be stage ${i + 1}'s input ring (${n.inputCapacity} slots of ${n.inputSlotSize} B): give outputCapacity/outputSlotSize or capacity/slotSize so they match`,
      )
    }
    const [out, inp] = [list[i]!.output as Schema<unknown>, list[i + 1]!.input as Schema<unknown>]
    if (out.size !== undefined && inp.size !== undefined && out.size !== inp.size) {
      throw new RingbridgeTypeError('ERR_RINGBRIDGE_INVALID_ARGUMENT', `route stage ${i}'s output schema (${out.size} bytes) is not stage ${i + 1}'s input schema (${inp.size} bytes)`)
    }
  })
}

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
 * A launched ring kernel: send messages, receive replies, make requests, control its life.
 *
 * Order is kept end to end: replies arrive in the order the kernel produced them, and the
 * kernel takes messages in the order they were sent.
 * @hideconstructor
 * @example
 * ```ts
 * const rt = await Runtime.open({ backend: 'cpu' })
 * const k = await rt.launch({ handler: 'echo', input: u32, output: u32 })
 * await k.send(7)
 * console.log(await k.receive()) // 7
 * console.log(await k.request(8)) // 8
 * await k.terminate()
 * ```
 */
export class RingKernel<TIn, TOut> {
  /** The backend running this kernel (`cpu` or `cuda`). */
  readonly backend: string
  /** Why that backend was chosen. */
  readonly backendReason: string
  /** The device it runs on (a CUDA ordinal; 0 on the cpu backend). */
  readonly device: number
  /** Where the kernel's runner lives (see {@link LaunchOptions.isolation}). */
  readonly isolation: 'process' | 'thread'
  /** The kernel host's process id under `process` isolation. */
  readonly hostPid: number | undefined
  /** The transport: `shared-memory` on the cpu backend; `mapped`, `dma` or `managed` on cuda. */
  readonly transport: string
  /** Why that transport (what `auto` tried and why the others failed). */
  readonly transportReason: string
  /** Input ring slots. */
  readonly capacity: number
  /**
   * The kernels this object runs: one, or a route's stages first to last
   * ({@link Runtime.launchRoute}), each with its transport and device.
   */
  readonly stages: readonly RouteStageInfo[]

  readonly #native: InstanceType<typeof native.NativeKernel>
  /** Wakes and joins the kernel's runner: the native kernel, or the worker of a JS handler. */
  readonly #runner: { wake(): void; join(): void; joinAsync(): Promise<void> }
  readonly #worker: WorkerRunner | undefined
  readonly #latency = new LatencyHistogram()
  /** Shared-input mode: the producers' claim word and the buffer they attach to. */
  readonly #shared: { claim: SharedArrayBuffer; buffer: SharedArrayBuffer; base: number; inputOffset: number; start: number } | undefined
  /** The input side's control block (a route's first stage). */
  readonly #cb: ControlBlockView
  /** The output side's control block (a route's last stage; else `#cb`). */
  readonly #outCb: ControlBlockView
  /** Every stage's control block, first to last (one for a single kernel). */
  readonly #cbs: readonly ControlBlockView[]
  readonly #in: InputRing
  readonly #out: OutputRing
  readonly #bytes: Uint8Array
  readonly #input: Schema<TIn>
  readonly #output: Schema<TOut>
  readonly #typeId: number
  readonly #timeoutMs: number
  readonly #spinMs: number
  readonly #sendQueue: MessageQueue<Queued>
  readonly #replies: MessageQueue<Entry<TOut>>
  readonly #pending = new Map<number, Waiter<TOut>>()
  readonly #expired = new Set<number>()
  readonly #receivers: Waiter<TOut>[] = []
  readonly #blocked = new Fifo<Blocked>()
  readonly #stateWaiters: (Waiter<void> & { until: () => boolean })[] = []
  readonly #sleepingIdx: number
  readonly #waitingIdx: number
  #nextId = 1
  #sent = 0
  #replied = 0
  #errorReplies = 0
  #droppedReplies = 0
  #overflowed = 0
  /** Replies this turn of the event loop may still deliver (see `#budgetSpent`). */
  #budget = DRAIN_BUDGET
  #resumeScheduled = false
  /** An overflow error was raised and the receiver has not caught up since. */
  #overflowReported = false
  #late = 0
  #waiting = 0
  #pumping = false
  #packedReader = false
  #terminating = false
  #report: Promise<TerminateReport<TIn>> | undefined
  #closed = false
  /** Tells the runtime this kernel ended, so it holds it (and its memory) no longer. */
  readonly #onClosed: (() => void) | undefined
  /** Set once the constructor is done: the doorbell pumps only then. */
  #ready = false
  #keepAlive: ReturnType<typeof setInterval> | undefined

  /**
   * @internal Use `Runtime.launch` or `Runtime.launchRoute`. Under `process` isolation the
   * kernel host starts off the JS thread (`launchAsync`): the event loop runs meanwhile.
   */
  static async open<TIn, TOut>(options: LaunchOptions<TIn, TOut> | readonly LaunchOptions<any, any>[], backend: string, device = 0, onClosed?: () => void): Promise<RingKernel<TIn, TOut>> {
    const route = Array.isArray(options)
    const list: readonly LaunchOptions<any, any>[] = route ? options : [options as LaunchOptions<TIn, TOut>]
    const stages = list.map((o, i) => stageShape(o, backend, route ? (o?.device ?? device) : device, route ? `route stage ${i}: ` : ''))
    if (route) checkRoute(list, stages)
    if (stages[0]!.isolation !== 'process') return new RingKernel<TIn, TOut>(options, backend, device, onClosed)
    const bell: { ref?: WeakRef<RingKernel<any, any>> } = {}
    const doorbell = () => {
      const kernel = bell.ref?.deref()
      if (kernel !== undefined && kernel.#ready) kernel.#pump()
    }
    let n: InstanceType<typeof native.NativeKernel>
    try {
      const memories = stages.map(() => null)
      n = await (route ? native.NativeKernel.routeAsync(memories, stages.map((st) => st.shape), doorbell) : native.NativeKernel.launchAsync(null, stages[0]!.shape, doorbell))
    } catch (e) {
      throw fromNative(e)
    }
    const k = new RingKernel<TIn, TOut>(options, backend, device, onClosed, { native: n, doorbell, stages })
    bell.ref = new WeakRef(k)
    return k
  }

  /** @internal `launched`: a kernel `open` launched off the JS thread, with its checked stages. */
  constructor(
    options: LaunchOptions<TIn, TOut> | readonly LaunchOptions<any, any>[],
    backend: string,
    device = 0,
    onClosed?: () => void,
    launched?: { native: InstanceType<typeof native.NativeKernel>; doorbell: () => void; stages: StageShape[] },
  ) {
    this.#onClosed = onClosed
    const route = Array.isArray(options)
    const list: readonly LaunchOptions<any, any>[] = route ? options : [options as LaunchOptions<TIn, TOut>]
    const stages = launched?.stages ?? list.map((o, i) => stageShape(o, backend, route ? (o?.device ?? device) : device, route ? `route stage ${i}: ` : ''))
    if (route && launched === undefined) checkRoute(list, stages)
    const first = stages[0]!
    const last = stages[stages.length - 1]!
    const { jsHandler, isolation, producers, typeId, timeoutMs } = first
    const opts = list[0] as LaunchOptions<TIn, TOut>
    this.#sendQueue = new MessageQueue(queueOptions('sendQueue', opts.sendQueue, { capacity: 4096, policy: 'block' }))
    this.#replies = new MessageQueue(queueOptions('replyQueue', opts.replyQueue, { capacity: 65536, policy: 'block' }))

    // In this process: a SharedArrayBuffer of whole pages plus one, as the region starts at
    // the first page boundary inside it (V8 does not page-align it) and a GPU transport
    // registers whole pages (spec §3.1). In a kernel host: shared memory the addon maps.
    const page = REGION_PAGE
    const sabs = stages.map((st) => (st.isolation === 'thread' ? new SharedArrayBuffer(Math.ceil(st.layout.totalBytes / page) * page + page) : undefined))
    // The doorbell holds the kernel only weakly, so a forgotten kernel can be collected and its
    // native finalizer can stop the thread.
    const self = new WeakRef(this)
    const doorbell = launched?.doorbell ?? (() => {
      // Not before the constructor is done: a bell that comes while it runs (or after it
      // threw) must not call into a half-built object.
      const kernel = self.deref()
      if (kernel !== undefined && kernel.#ready) kernel.#pump()
    })
    let buffers: ArrayBufferLike[]
    try {
      const memories = sabs.map((sab) => (sab ? new Uint8Array(sab) : null))
      this.#native = launched ? launched.native : route ? native.NativeKernel.route(memories, stages.map((st) => st.shape), doorbell) : new native.NativeKernel(memories[0]!, first.shape, doorbell)
    } catch (e) {
      throw fromNative(e)
    }
    try {
      buffers = sabs.map((sab, i) => sab ?? this.#native.sharedMemory(i))
    } catch (e) {
      this.#abortLaunch()
      throw fromNative(e)
    }
    try {
      this.#cbs = buffers.map((buffer, i) => {
        const cb = new ControlBlockView(buffer, this.#native.stageRegionOffset(i))
        if (cb.load32('magic') !== MAGIC || cb.load32('version') !== VERSION) {
          throw new RingbridgeError('ERR_RINGBRIDGE_PROTOCOL', 'the control block does not carry the expected magic and version')
        }
        // The shapes the native side wrote (L1) are the ones JS lays its views out with: a
        // disagreement (a number the binding converted differently, issue #2) is refused here,
        // not met later as a DataView RangeError at the first frame past the real ring.
        const want = stages[i]!.shape
        const got = [cb.load32('input_capacity'), cb.load32('input_slot_size'), cb.load32('output_capacity'), cb.load32('output_slot_size')]
        const asked = [want.inputCapacity, want.inputSlotSize, want.outputCapacity, want.outputSlotSize]
        if (got.some((v, j) => v !== asked[j])) {
          throw new RingbridgeError('ERR_RINGBRIDGE_PROTOCOL', `the kernel's rings (capacity ${got[0]}, slot ${got[1]}; output ${got[2]}, ${got[3]}) are not the ones asked for (capacity ${asked[0]}, slot ${asked[1]}; output ${asked[2]}, ${asked[3]})`)
        }
        return cb
      })
      this.#cb = this.#cbs[0]!
      this.#outCb = this.#cbs[this.#cbs.length - 1]!
      const buffer = buffers[0]!
      const base = this.#native.stageRegionOffset(0)
      const outBase = this.#native.stageRegionOffset(stages.length - 1)
      const { shape, layout } = first
      this.#in = new InputRing(buffer, { slotsOffset: base + layout.inputOffset, capacity: shape.inputCapacity, slotSize: shape.inputSlotSize }, this.#cb)
      this.#out = new OutputRing(buffers[buffers.length - 1]!, { slotsOffset: outBase + last.layout.outputOffset, capacity: last.shape.outputCapacity, slotSize: last.shape.outputSlotSize }, this.#outCb)
      this.#bytes = new Uint8Array(buffer)
      if (producers === 'shared') {
        const claim = new SharedArrayBuffer(8)
        const start = this.#cb.load64('input_tail')
        new BigUint64Array(claim)[0] = BigInt(start)
        this.#shared = { claim, buffer: buffer as SharedArrayBuffer, base, inputOffset: layout.inputOffset, start }
      } else {
        this.#shared = undefined
      }
      if (jsHandler) {
        const shapeOf = { base, inputOffset: layout.inputOffset, outputOffset: layout.outputOffset, inCapacity: shape.inputCapacity, inSlot: shape.inputSlotSize, outCapacity: shape.outputCapacity, outSlot: shape.outputSlotSize }
        this.#worker = new WorkerRunner(buffer as SharedArrayBuffer, shapeOf, opts.input, opts.output, opts.cpu!, this.#cb, doorbell)
        const w = this.#worker
        this.#runner = { wake: () => w.wake(), join: () => w.join(), joinAsync: async () => w.join() }
      } else {
        this.#worker = undefined
        const n = this.#native
        this.#runner = { wake: () => n.wake(), join: () => n.join(), joinAsync: () => n.joinAsync() }
      }
      this.#input = opts.input
      this.#output = (list[list.length - 1] as LaunchOptions<unknown, TOut>).output
      this.#typeId = typeId
      this.#timeoutMs = timeoutMs
      // A GPU answers in microseconds, faster than the doorbell's trip through the event loop
      // (bench/results: ~22 µs with the doorbell alone on an H100, ~7 µs round trip).
      this.#spinMs = (opts.spinMicros ?? (this.#native.backend === 'cuda' ? 50 : 0)) / 1000
      this.#sleepingIdx = this.#cb.index32('kernel_sleeping')
      this.#waitingIdx = this.#cb.index32('host_waiting')
      this.backend = this.#native.backend
      this.backendReason = this.#native.backendReason
      this.transport = this.#native.transport
      this.transportReason = this.#native.transportReason
      this.stages = Object.freeze(
        stages.map((st, i) => {
          const [transport, transportReason] = this.#native.stageTransport(i)
          return Object.freeze({ transport: transport!, transportReason: transportReason!, device: st.shape.device ?? 0 })
        }),
      )
      this.isolation = isolation
      this.device = device
      this.hostPid = this.#native.hostPid ?? undefined
      this.capacity = shape.inputCapacity
    } catch (e) {
      // The kernel runs already: stop it before the caller sees the error, so nothing is left
      // running behind an object nobody holds.
      this.#abortLaunch()
      throw typeof (e as RingbridgeError)?.code === 'string' ? e : new RingbridgeError('ERR_RINGBRIDGE_PROTOCOL', `the kernel's rings cannot be mapped in JavaScript: ${(e as Error).message}`, { cause: e })
    }
    this.#ready = true
  }

  /** Stops a kernel whose launch failed after the native side started it. */
  #abortLaunch(): void {
    try {
      this.#native.join()
    } catch {
      // The launch error is what the caller needs; a join error after it says nothing more.
    }
  }

  /**
   * For a JS handler (`cpu:`): the message of the first exception it threw that was not a
   * `ctx.fail` (those messages were answered with HANDLER_FAULT error frames).
   */
  get handlerFault(): string | undefined {
    return this.#worker?.lastFault
  }

  /** Current life-cycle state. */
  get state(): KernelState {
    // A route is terminated once any stage is (a faulted stage ends the route), else it is in
    // its first stage's state.
    for (const cb of this.#cbs) if (cb.load32('state') === STATE.terminated) return 'terminated'
    return STATES[this.#cb.load32('state')] ?? 'launching'
  }

  /** Whether the kernel is terminated (or terminating): sends are refused. */
  get closed(): boolean {
    return this.#closed || this.#terminating
  }

  /**
   * Sends `message` if it fits in the input ring now, without queueing.
   * @returns `false` when the ring is full (or messages are queued ahead of it).
   * @throws {RingbridgeTypeError} `ERR_RINGBRIDGE_INVALID_MESSAGE` when `message` does not match the input schema (nothing is sent).
   * @throws {RingbridgeRangeError} `ERR_RINGBRIDGE_MESSAGE_TOO_LARGE` when it does not fit a slot.
   * @throws {RingbridgeError} `ERR_RINGBRIDGE_CLOSED` after terminate.
   */
  trySend(message: TIn): boolean {
    this.#checkOpen('trySend')
    return this.#trySend(message)
  }

  #trySend(message: TIn): boolean {
    if (this.#sendQueue.length > 0 || this.#blocked.length > 0 || this.#in.free(1) === 0) return false
    this.#stage(message, this.#nextId++)
    this.#publish()
    return true
  }

  /**
   * Sends `message`: into the input ring if it has room, else into the send queue, whose policy
   * applies when it is full too (`block` waits for room, `reject` throws, the dropping policies
   * drop a message).
   * @returns what became of it ({@link SendOutcome}): `'sent'` (in the ring), `'queued'` (in
   *   the send queue, where it is never dropped: `block`, `reject`, `drop-newest`) or
   *   `'dropped'` (`drop-newest` dropped this one). Under `drop-oldest` a queued message may
   *   still be displaced by later ones, so the promise settles only when that is decided:
   *   `'sent'` once it reached the ring, `'dropped'` if the policy dropped it (or
   *   `'undelivered'` if the kernel was abandoned first: it is in the terminate report). So
   *   awaiting each `send()` under `drop-oldest` waits for the ring; a producer that must not
   *   wait keeps the promises and looks at them later.
   * @throws {RingbridgeTypeError} `ERR_RINGBRIDGE_INVALID_MESSAGE` (nothing is sent).
   * @throws {RingbridgeRangeError} `ERR_RINGBRIDGE_MESSAGE_TOO_LARGE`.
   * @throws {RingbridgeError} `ERR_RINGBRIDGE_FULL` under `reject`; `ERR_RINGBRIDGE_CLOSED` after terminate; `ERR_RINGBRIDGE_TIMEOUT` / `ERR_RINGBRIDGE_ABORTED` when the wait for room ends first (the message is withdrawn, never sent).
   */
  send(message: TIn, options?: WaitOptions): Promise<SendOutcome> {
    try {
      this.#checkOpen('send')
      const { timeoutMs, signal } = waitLimit(options)
      if (signal?.aborted) throw abortedError('send', signal)
      if (this.#trySend(message)) return Promise.resolve('sent')
      const id = this.#nextId++
      const sent = this.#enqueue({ id, bytes: this.#encode(message) }, 'send')
      if (timeoutMs === undefined && signal === undefined) return sent
      // Bounded: a message still waiting when the limit hits is withdrawn, never half-sent.
      return new Promise<SendOutcome>((resolve, reject) => {
        let timer: ReturnType<typeof setTimeout> | undefined
        const cancel = (error: Error) => {
          if (this.#withdraw(id)) reject(error)
        }
        const onAbort = () => cancel(abortedError(`send ${id}`, signal!))
        if (timeoutMs !== undefined) timer = setTimeout(() => cancel(new RingbridgeError('ERR_RINGBRIDGE_TIMEOUT', `send ${id}: no room within ${timeoutMs} ms (withdrawn: it was not sent)`)), timeoutMs)
        signal?.addEventListener('abort', onAbort, { once: true })
        sent.then(resolve, reject).finally(() => {
          if (timer) clearTimeout(timer)
          signal?.removeEventListener('abort', onAbort)
        })
      })
    } catch (e) {
      return Promise.reject(e)
    }
  }

  /** Takes a message that has not reached the ring out of the send queue or the blocked line. */
  #withdraw(id: number): boolean {
    const blocked = this.#blocked.remove((b) => b.item.id === id)
    if (blocked) {
      blocked.resolve('queued') // its send() promise is settled by the caller's rejection instead
      return true
    }
    return this.#sendQueue.remove((q) => q.id === id) !== undefined
  }

  /**
   * Sends many messages with one publish of the ring's tail. All are checked before any is
   * sent: one bad message rejects the whole batch and sends nothing. Under the send queue's
   * `reject` policy a batch that does not fit the ring and the queue together is refused whole
   * (`ERR_RINGBRIDGE_FULL`, nothing sent).
   * @returns how many messages had each {@link SendOutcome} (settled as {@link RingKernel.send}'s).
   * @throws as {@link RingKernel.send}.
   */
  sendBatch(messages: readonly TIn[]): Promise<Record<SendOutcome, number>> {
    try {
      this.#checkOpen('sendBatch')
      if (!Array.isArray(messages)) badOption('sendBatch messages', 'an array', messages)
      const ahead = this.#sendQueue.length > 0 || this.#blocked.length > 0
      const staged = ahead ? 0 : Math.min(messages.length, this.#in.free(messages.length))
      const room = this.#sendQueue.capacity - this.#sendQueue.length
      if (this.#sendQueue.policy === 'reject' && messages.length - staged > (this.#blocked.length > 0 ? 0 : room)) {
        throw new RingbridgeError('ERR_RINGBRIDGE_FULL', `sendBatch: ${messages.length} messages do not fit the input ring (${staged} free) and the send queue (${room} free of ${this.#sendQueue.capacity}, policy 'reject'): nothing was sent`, {
          details: { capacity: this.#sendQueue.capacity, messages: messages.length },
        })
      }
      let rest: Queued[] = []
      const firstId = this.#nextId
      try {
        for (let i = 0; i < staged; i++) this.#stage(messages[i] as TIn, firstId + i, `messages[${i}]`)
        rest = messages.slice(staged).map((m, i) => ({ id: firstId + staged + i, bytes: this.#encode(m, `messages[${staged + i}]`) }))
      } catch (e) {
        this.#in.next = this.#in.published // unstage: nothing of the batch was published
        throw e
      }
      this.#nextId += messages.length
      this.#publish()
      const counts: Record<SendOutcome, number> = { sent: staged, queued: 0, dropped: 0, undelivered: 0 }
      if (rest.length === 0) return Promise.resolve(counts)
      // Offer every message now, in order: awaiting each before offering the next let a send()
      // made meanwhile slip into the middle of the batch.
      return Promise.all(rest.map((q) => this.#enqueue(q, 'sendBatch'))).then((outcomes) => {
        for (const o of outcomes) counts[o]++
        return counts
      })
    } catch (e) {
      return Promise.reject(e)
    }
  }

  /**
   * Sends up to `count` raw payloads of `size` bytes each, packed back to back in `packed`,
   * with one publish: the streaming path for kernels whose input schema is `bytes()` (the
   * schema is not applied). Never waits and never queues.
   * @returns how many were sent (fewer when the ring is full; 0 when messages are queued ahead).
   * @throws {RingbridgeRangeError} `ERR_RINGBRIDGE_MESSAGE_TOO_LARGE` when `size` exceeds the slot payload; `ERR_RINGBRIDGE_INVALID_ARGUMENT` when `packed` is shorter than `size * count`.
   * @throws {RingbridgeError} `ERR_RINGBRIDGE_CLOSED` after terminate.
   */
  trySendPacked(packed: Uint8Array, size: number, count = Math.floor(packed.length / size)): number {
    this.#checkOpen('trySendPacked')
    if (!(packed instanceof Uint8Array)) badOption('packed', 'a Uint8Array', packed)
    if (!Number.isInteger(size) || size < 0) badOption('size', 'a non-negative integer', size)
    if (size > this.#in.maxPayload) {
      throw new RingbridgeRangeError('ERR_RINGBRIDGE_MESSAGE_TOO_LARGE', `packed message of ${size} bytes exceeds the slot payload of ${this.#in.maxPayload} bytes`)
    }
    if (!Number.isInteger(count) || count < 0 || count * size > packed.length) {
      throw new RingbridgeRangeError('ERR_RINGBRIDGE_INVALID_ARGUMENT', `count: ${String(count)} messages of ${size} bytes need ${count * size} bytes, packed has ${packed.length}`)
    }
    if (this.#sendQueue.length > 0) return 0
    const n = Math.min(count, this.#in.free(count))
    this.#in.stageRaw(this.#typeId, this.#nextId, packed, size, n)
    this.#nextId += n
    this.#publish()
    return n
  }

  /**
   * Takes the replies ready now as raw payloads, packed back to back into `into` (`size` bytes
   * each, up to `into.length / size` of them), bypassing the output schema and the reply queue:
   * the streaming counterpart of {@link RingKernel.trySendPacked}. Do not mix with `receive()`.
   * @returns how many replies were copied.
   * @throws {RingbridgeError} `ERR_RINGBRIDGE_KERNEL_ERROR` for an error frame (the replies before it are kept); `ERR_RINGBRIDGE_PROTOCOL` for a reply longer than `size`.
   */
  tryReceivePacked(into: Uint8Array, size: number): number {
    // From now on replies stay in the ring for this reader: the event-loop pump must not move
    // them into the reply queue behind its back.
    this.#packedReader = true
    if (!(into instanceof Uint8Array)) badOption('into', 'a Uint8Array', into)
    if (!Number.isInteger(size) || size < 1) badOption('size', 'a positive integer', size)
    const out = this.#out
    const max = Math.floor(into.length / size)
    let failure: Error | undefined
    let n = 0
    for (;;) {
      const available = Math.min(max - n, out.available(max - n))
      if (available <= 0) break
      const got = out.copyPayloads(n === 0 ? into : into.subarray(n * size), size, available)
      n += got
      if (got === available) break
      // Stopped at an error frame, a corrupt frame or a reply longer than `size`. A skip frame
      // (shared producers, PROTOCOL.md §16) carries no reply: pass over it.
      const f = out.peek()
      if (this.#shared !== undefined && !f.corrupt && isSkipFrame(out.view, f.offset, f.length, f.flags)) {
        out.advance()
        continue
      }
      const entry = this.#decode(f)
      failure = entry.ok ? new RingbridgeError('ERR_RINGBRIDGE_PROTOCOL', `reply of ${f.length} bytes is longer than the packed size ${size}`) : entry.error
      out.advance()
      break
    }
    this.#replied += n
    if (out.release()) this.#wakeKernel()
    if (failure) throw failure
    return n
  }

  /**
   * Sends `message` and resolves with the reply that carries its correlation id.
   * @throws {RingbridgeError} `ERR_RINGBRIDGE_KERNEL_ERROR` when the kernel answers with an error frame; `ERR_RINGBRIDGE_TIMEOUT` after `timeoutMs`; `ERR_RINGBRIDGE_CLOSED` if the kernel ends first; `ERR_RINGBRIDGE_FULL` as {@link RingKernel.send}.
   * @throws {RingbridgeTypeError} `ERR_RINGBRIDGE_INVALID_MESSAGE`.
   */
  request(message: TIn, options?: WaitOptions): Promise<TOut> {
    try {
      this.#checkOpen('request')
      const { timeoutMs, signal } = waitLimit(options)
      if (signal?.aborted) throw abortedError('request', signal)
      const id = this.#nextId++
      const fast = this.#sendQueue.length === 0 && this.#in.free(1) > 0
      const bytes = fast ? undefined : this.#encode(message)
      if (fast) this.#stage(message, id)
      const reply = new Promise<TOut>((resolve, reject) => {
        const w: Waiter<TOut> = { resolve, reject, started: performance.now() }
        if (timeoutMs !== undefined) {
          w.timer = setTimeout(() => {
            if (this.#pending.delete(id)) {
              // Withdrawn if it never reached the ring (as an abort does); otherwise its reply
              // will be late.
              const withdrawn = this.#withdraw(id)
              if (!withdrawn) this.#expired.add(id)
              reject(new RingbridgeError('ERR_RINGBRIDGE_TIMEOUT', `request ${id}: no reply within ${timeoutMs} ms${withdrawn ? ' (withdrawn: it had not reached the ring)' : ''}`, { details: { withdrawn } }))
              this.#pump()
            }
          }, timeoutMs)
        }
        if (signal) {
          const onAbort = () => {
            if (this.#pending.delete(id)) {
              if (w.timer) clearTimeout(w.timer)
              // Withdrawn if it never reached the ring; otherwise its reply will be late.
              if (!this.#withdraw(id)) this.#expired.add(id)
              reject(abortedError(`request ${id}`, signal))
              this.#pump()
            }
          }
          signal.addEventListener('abort', onAbort, { once: true })
          const settle = w.resolve
          const fail = w.reject
          w.resolve = (v) => {
            signal.removeEventListener('abort', onAbort)
            settle(v)
          }
          w.reject = (e) => {
            signal.removeEventListener('abort', onAbort)
            fail(e)
          }
        }
        this.#pending.set(id, w)
      })
      if (fast) this.#publish()
      else this.#enqueue({ id, bytes: bytes! }, `request ${id}`).catch((e: Error) => this.#settle(id, { ok: false, error: e }))
      this.#pump()
      if (this.#spinMs > 0 && this.#pending.has(id)) this.#spinFor(id)
      return reply
    } catch (e) {
      return Promise.reject(e)
    }
  }

  /**
   * The next reply not claimed by a {@link RingKernel.request}.
   * @throws {RingbridgeError} `ERR_RINGBRIDGE_KERNEL_ERROR` for an error frame; `ERR_RINGBRIDGE_OVERFLOW` once after replies were dropped under the reply queue's `reject` policy; `ERR_RINGBRIDGE_TIMEOUT`; `ERR_RINGBRIDGE_CLOSED` when the kernel is terminated and no reply is left.
   */
  receive(options?: WaitOptions): Promise<TOut> {
    try {
      const { timeoutMs, signal } = waitLimit(options)
      if (signal?.aborted) throw abortedError('receive', signal)
      this.#pump()
      const now = this.#takeReply()
      if (now) return now.ok ? Promise.resolve(now.value) : Promise.reject(now.error)
      if (this.#closed) return Promise.reject(closedError('receive'))
      return new Promise<TOut>((resolve, reject) => {
        const w: Waiter<TOut> = { resolve, reject }
        if (timeoutMs !== undefined) {
          w.timer = setTimeout(() => {
            const i = this.#receivers.indexOf(w)
            if (i >= 0) {
              this.#receivers.splice(i, 1)
              reject(new RingbridgeError('ERR_RINGBRIDGE_TIMEOUT', `receive: no reply within ${timeoutMs} ms`))
              this.#pump()
            }
          }, timeoutMs)
        }
        if (signal) {
          const onAbort = () => {
            const i = this.#receivers.indexOf(w)
            if (i >= 0) {
              this.#receivers.splice(i, 1)
              if (w.timer) clearTimeout(w.timer)
              reject(abortedError('receive', signal))
            }
          }
          signal.addEventListener('abort', onAbort, { once: true })
          const settle = w.resolve
          const fail = w.reject
          w.resolve = (v) => {
            signal.removeEventListener('abort', onAbort)
            settle(v)
          }
          w.reject = (e) => {
            signal.removeEventListener('abort', onAbort)
            fail(e)
          }
        }
        this.#receivers.push(w)
        this.#pump()
      })
    } catch (e) {
      return Promise.reject(e)
    }
  }

  /**
   * Takes up to `max` replies that are ready now, without waiting.
   * @throws {RingbridgeError} the first error reply, if it comes before any value.
   */
  tryReceiveMany(max = Infinity): TOut[] {
    if (max !== Infinity && (!Number.isInteger(max) || max < 0)) badOption('tryReceiveMany max', 'a non-negative integer or Infinity', max)
    this.#pump()
    const out: TOut[] = []
    while (out.length < max) {
      if (this.#overflowDue()) {
        // The overflow error comes before the replies that survived it, as in receive().
        if (out.length > 0) break
        throw (this.#takeReply() as { ok: false; error: Error }).error
      }
      const front = this.#replies.peek()
      if (!front) break
      if (!front.ok) {
        if (out.length > 0) break
        this.#takeReply()
        throw front.error
      }
      out.push((this.#takeReply() as { value: TOut }).value)
    }
    if (out.length > 0) this.#pump()
    return out
  }

  /**
   * Waits for at least one reply, then returns every reply ready (up to `max`): the
   * high-throughput way to receive.
   * @throws as {@link RingKernel.receive}.
   */
  async receiveBatch(max = 1024, options?: WaitOptions): Promise<TOut[]> {
    if (!Number.isInteger(max) || max < 1) badOption('receiveBatch max', 'a positive integer', max)
    const now = this.tryReceiveMany(max)
    if (now.length > 0) return now
    const first = await this.receive(options)
    return max > 1 ? [first, ...this.tryReceiveMany(max - 1)] : [first]
  }

  /**
   * Replies as an async iterator; ends when the kernel is terminated and drained. Takes one
   * reply per step, so leaving the loop early (`break`, `return`, a throw) leaves every reply
   * it did not yield receivable.
   */
  async *replies(): AsyncGenerator<TOut, void, undefined> {
    for (;;) {
      let value: TOut
      try {
        const now = this.tryReceiveMany(1)
        value = now.length > 0 ? now[0]! : await this.receive()
      } catch (e) {
        if ((e as RingbridgeError).code === 'ERR_RINGBRIDGE_CLOSED') return
        throw e
      }
      yield value
    }
  }

  /**
   * Resumes a paused kernel; resolves when it runs again.
   * @throws {RingbridgeError} `ERR_RINGBRIDGE_CLOSED`; `ERR_RINGBRIDGE_TIMEOUT` if the kernel does not answer.
   */
  async activate(): Promise<void> {
    this.#checkOpen('activate')
    for (const cb of this.#cbs) cb.store32('active', 1)
    this.#runner.wake()
    await this.#until(() => this.state !== 'paused', 'activate')
  }

  /**
   * Pauses the kernel after the batch in hand; resolves once it has stopped taking messages.
   * Messages sent meanwhile wait in the ring.
   * @throws {RingbridgeError} `ERR_RINGBRIDGE_CLOSED`; `ERR_RINGBRIDGE_TIMEOUT` if the kernel does not answer.
   */
  async deactivate(): Promise<void> {
    this.#checkOpen('deactivate')
    for (const cb of this.#cbs) cb.store32('active', 0)
    this.#runner.wake()
    await this.#until(() => this.state === 'terminated' || this.#cbs.every((cb) => STATES[cb.load32('state')] === 'paused'), 'deactivate')
  }

  /**
   * Stops the kernel. `drain` (default) hands every queued message to the kernel — those still
   * waiting for room behind a full send queue too — and waits until it has handled them all; `abandon` stops after the batch in hand and returns what was not
   * handled. Replies already produced stay receivable. Pending requests without a reply reject
   * with `ERR_RINGBRIDGE_CLOSED`. Idempotent: later calls return the same report.
   * @throws {RingbridgeRangeError} `ERR_RINGBRIDGE_INVALID_ARGUMENT` for an unknown mode.
   */
  terminate(options?: { mode?: TerminateMode }): Promise<TerminateReport<TIn>> {
    const mode = options?.mode ?? 'drain'
    if (mode !== 'drain' && mode !== 'abandon') return Promise.reject(new RingbridgeRangeError('ERR_RINGBRIDGE_INVALID_ARGUMENT', `terminate mode: expected 'drain' or 'abandon', got ${String(mode)}`))
    this.#report ??= this.#terminate(mode)
    return this.#report
  }

  /** Stops the kernel at once (abandon) and releases it; synchronous. Prefer {@link RingKernel.terminate}. */
  dispose(): void {
    if (this.#closed) return
    this.#terminating = true
    for (const cb of this.#cbs) cb.store32('terminate', TERMINATE.abandon)
    this.#finish()
  }

  /** Counters and depths (cheap: reads a few words). */
  stats(): KernelStats {
    const cb = this.#cb
    const firstError = cb.load32('error_code')
    // Under shared producers the host publishes nothing itself: the tail and the producers'
    // counters say what was sent (skip frames are not messages).
    const inputTail = this.#shared ? cb.load64('input_tail') : this.#in.published
    const producers = this.#shared ? sharedInputStats(this.#shared.claim, inputTail) : undefined
    return {
      backend: this.backend,
      state: this.state,
      sent: this.#shared && producers ? inputTail - this.#shared.start - producers.skipped : this.#sent,
      processed: cb.load64('messages_processed'),
      replied: this.#replied,
      errors: { replies: this.#errorReplies, kernel: cb.load32('error_count'), firstKernelError: KERNEL_ERROR_NAMES[firstError] ?? `code-${firstError}` },
      dropped: { send: this.#sendQueue.dropped, reply: this.#droppedReplies },
      lateReplies: this.#late,
      depth: {
        sendQueue: this.#sendQueue.length,
        inputRing: inputTail - cb.load64('input_head'),
        outputRing: this.#outCb.load64('output_tail') - this.#out.next,
        replyQueue: this.#replies.length,
      },
      pendingRequests: this.#pending.size,
      ...this.#hostStats(),
      requestLatency: this.#latency.percentiles(),
      stages: this.#cbs.map((c, i) => {
        const code = c.load32('error_code')
        // The first stage's tail is the host's (what it published); a later stage's is only in
        // its kernel's view (a device word on dma), so its input depth is taken from the stage
        // before: what that one processed, minus what this one did.
        const tail = i === 0 ? inputTail : this.#cbs[i - 1]!.load64('messages_processed')
        return {
          state: STATES[c.load32('state')] ?? 'launching',
          processed: c.load64('messages_processed'),
          errors: c.load32('error_count'),
          firstKernelError: KERNEL_ERROR_NAMES[code] ?? `code-${code}`,
          inputRing: Math.max(0, tail - c.load64('input_head')),
        }
      }),
      ...(producers ? { producers } : {}),
    }
  }

  // ---- host steps -------------------------------------------------------------------------

  /** Polls the output ring for request `id`'s reply for at most `#spinMs`. */
  #spinFor(id: number): void {
    const end = performance.now() + this.#spinMs
    while (this.#pending.has(id) && performance.now() < end) {
      if (this.#out.available(1) > 0) this.#pump()
    }
  }

  #checkOpen(what: string): void {
    if (this.#closed || this.#terminating) throw closedError(what)
    if (this.#shared !== undefined && what !== 'activate' && what !== 'deactivate') {
      throw new RingbridgeError('ERR_RINGBRIDGE_INVALID_ARGUMENT', `${what}: this kernel's input is shared by producers (producers: 'shared'): send through a RingProducer from kernel.producer()`)
    }
  }

  /**
   * A handle for one more producer of a shared input ring (`producers: 'shared'`): post it to
   * a worker thread — with `handle.wake` in the transfer list — and attach a
   * {@link RingProducer} there. Replies come back here, to `receive()`.
   * @throws {RingbridgeError} `ERR_RINGBRIDGE_INVALID_ARGUMENT` unless launched with `producers: 'shared'`; `ERR_RINGBRIDGE_CLOSED` after terminate.
   * @example
   * ```ts
   * const handle = kernel.producer()
   * const worker = new Worker('./producer.js', { workerData: handle, transferList: [handle.wake] })
   * ```
   */
  producer(): ProducerHandle {
    if (this.#closed || this.#terminating) throw closedError('producer')
    const s = this.#shared
    if (s === undefined) throw new RingbridgeError('ERR_RINGBRIDGE_INVALID_ARGUMENT', "producer(): launch with producers: 'shared' to share the input ring")
    const { port1, port2 } = new MessageChannel()
    // A producer that publishes to a parked cpu kernel asks its owner to wake it (D2).
    port1.on('message', () => this.#runner.wake())
    port1.unref()
    return producerHandle(s.buffer, s.claim, s.base, s.inputOffset, this.capacity, this.#in.slotSize, this.#typeId, this.#input, port2)
  }

  #stage(message: TIn, id: number, path?: string): void {
    this.#in.stage(this.#typeId, id, (view, offset, capacity) => this.#input.encode(view, offset, message, capacity, path))
  }

  #encode(message: TIn, path = 'message'): Uint8Array {
    const scratch = new Uint8Array(this.#in.maxPayload)
    const n = this.#input.encode(new DataView(scratch.buffer), 0, message, scratch.length, path)
    return scratch.subarray(0, n)
  }

  /** H3 + H4: publish the staged frames, wake the kernel if it announced sleep. */
  #publish(): void {
    const n = this.#in.staged
    if (this.#in.publish()) {
      this.#sent += n
      this.#wakeKernel()
    }
  }

  #wakeKernel(): void {
    // D2: our Atomics.store of the index is seq_cst, so this load cannot pass it. (A route:
    // we feed its first stage and drain its last; the runner wakes them all.)
    if (Atomics.load(this.#cb.u32, this.#sleepingIdx) !== 0 || (this.#outCb !== this.#cb && Atomics.load(this.#outCb.u32, this.#sleepingIdx) !== 0)) this.#runner.wake()
  }

  /**
   * Offers a message that did not fit the ring to the send queue (or the line of messages
   * blocked behind a full queue) and resolves with its {@link SendOutcome}; `what` names the
   * caller in errors.
   */
  #enqueue(item: Queued, what: string): Promise<SendOutcome> {
    this.#checkOpen(what)
    // Under `block`, a message waiting for room stays ahead of every later one: later messages
    // wait in line behind it instead of taking the room it waits for.
    if (this.#blocked.length === 0) {
      // Under `drop-oldest` a queued message may be displaced later, so its outcome waits
      // until it is decided; under `drop-newest` only a new message is ever dropped, so the
      // offer decides it now.
      let decided: Promise<SendOutcome> | undefined
      if (this.#sendQueue.policy === 'drop-oldest') decided = new Promise<SendOutcome>((resolve) => (item.outcome = resolve))
      const r = this.#sendQueue.offer(item)
      if (r.status === 'dropped-oldest' || r.status === 'dropped-newest') this.#dropped(r.dropped)
      if (r.status === 'dropped-newest') return Promise.resolve('dropped')
      if (r.status !== 'full') {
        this.#pump()
        return decided ?? Promise.resolve('queued')
      }
      if (this.#sendQueue.policy === 'reject') {
        return Promise.reject(
          new RingbridgeError('ERR_RINGBRIDGE_FULL', `${what}: the input ring and the send queue are full (${this.#sendQueue.capacity} queued, policy 'reject'); not sent`, {
            details: { capacity: this.#sendQueue.capacity },
          }),
        )
      }
    }
    return new Promise<SendOutcome>((resolve, reject) => {
      this.#blocked.push({ item, what, resolve, reject })
      this.#pump()
    })
  }

  /** A message the send queue's dropping policy discarded: its sender learns it, and a request fails. */
  #dropped(q: Queued): void {
    q.outcome?.('dropped')
    this.#settle(q.id, { ok: false, error: new RingbridgeError('ERR_RINGBRIDGE_FULL', `request ${q.id}: dropped by the send queue's '${this.#sendQueue.policy}' policy (capacity ${this.#sendQueue.capacity}); not sent`, { details: { capacity: this.#sendQueue.capacity } }) })
  }

  /** Moves queued messages into the ring while it has room, and blocked sends into the queue. */
  #flushSendQueue(): number {
    let n = 0
    for (;;) {
      while (this.#sendQueue.length > 0 && this.#in.free(1) > 0) {
        const q = this.#sendQueue.shift() as Queued
        this.#in.stage(this.#typeId, q.id, (view, offset) => {
          this.#bytes.set(q.bytes, view.byteOffset + offset)
          return q.bytes.length
        })
        q.outcome?.('sent')
        n++
      }
      if (this.#blocked.length === 0 || this.#sendQueue.full) break
      // Blocked messages take the room in the order they were sent.
      while (this.#blocked.length > 0 && !this.#sendQueue.full) {
        const b = this.#blocked.shift() as Blocked
        this.#sendQueue.offer(b.item)
        b.resolve('queued')
      }
    }
    if (n > 0) this.#publish()
    return n
  }

  #canDrain(): boolean {
    return this.#terminating || this.#receivers.length > 0 || !this.#replies.full || this.#replies.policy !== 'block'
  }

  /**
   * Whether this turn of the event loop has delivered its share of replies. Each reply settles
   * a promise, and a caller whose continuation sends the next request pumps again from that
   * microtask: with a fast kernel the microtask queue would never empty and timers (request
   * timeouts among them) would never fire. So a turn delivers at most {@link DRAIN_BUDGET}
   * replies, then leaves the rest to a `setImmediate` — after timers and I/O have had their turn.
   */
  #budgetSpent(): boolean {
    if (this.#budget > 0) return false
    if (!this.#resumeScheduled) {
      this.#resumeScheduled = true
      setImmediate(() => {
        this.#resumeScheduled = false
        this.#budget = DRAIN_BUDGET
        this.#pump()
      })
    }
    return true
  }

  /** C1–C4 for replies: route each to its request, a waiting receiver or the reply queue. */
  #drainOutput(): number {
    if (this.#packedReader && !this.#terminating) return 0
    const out = this.#out
    let n = 0
    let available = out.available(1)
    while (available > 0) {
      if (!this.#terminating && this.#budgetSpent()) break
      const f = out.peek()
      if (this.#shared !== undefined && !f.corrupt && isSkipFrame(out.view, f.offset, f.length, f.flags)) {
        // A skip frame (PROTOCOL.md §16) stands for a position whose producer died before
        // writing it: no message, no reply. stats().producers counts them.
        out.advance()
        n++
        this.#budget--
        if (--available === 0) available = out.available(1)
        continue
      }
      if (!this.#pending.has(f.correlationId) && !this.#canDrain()) break
      if (!f.corrupt && f.flags & FLAG.multi) {
        // Several replies (or none) to one message in one frame: count, 4 reserved bytes, records.
        const size = this.#output.size ?? 0
        const { count, fits } = readMultiHeader(this.#out.view, f.offset, f.length, size)
        out.advance()
        n++
        this.#budget--
        if (!fits) {
          this.#errorReplies++
          this.#route(f.correlationId, { ok: false, error: new RingbridgeError('ERR_RINGBRIDGE_PROTOCOL', `multi-reply frame ${f.correlationId}: ${count} replies of ${size} bytes do not make ${f.length} bytes`) })
        }
        for (let i = 0; fits && i < count; i++) {
          this.#replied++
          let entry: Entry<TOut>
          try {
            entry = { ok: true, value: this.#output.decode(this.#out.view, f.offset + MULTI_HEADER_BYTES + i * size, size) }
          } catch (e) {
            entry = { ok: false, error: e as Error }
          }
          this.#route(f.correlationId, entry)
        }
        if (--available === 0) available = out.available(1)
        continue
      }
      const entry = this.#decode(f)
      out.advance()
      n++
      this.#budget--
      this.#replied++
      this.#route(f.correlationId, entry)
      if (--available === 0) available = out.available(1)
    }
    if (out.release()) this.#wakeKernel()
    return n
  }

  #decode(f: FrameRef): Entry<TOut> {
    if (f.corrupt) {
      this.#errorReplies++
      return {
        ok: false,
        error: new RingbridgeError('ERR_RINGBRIDGE_PROTOCOL', `reply frame ${f.correlationId} has length ${f.corrupt}, over the slot payload of ${this.#out.maxPayload}; skipped`, {
          details: { length: f.corrupt, max: this.#out.maxPayload },
        }),
      }
    }
    if (f.flags & FLAG.error) {
      this.#errorReplies++
      const { code, detail } = readErrorRecord(this.#out.view, f.offset, f.length)
      const name = KERNEL_ERROR_NAMES[code] ?? `handler-${code}`
      return {
        ok: false,
        error: new RingbridgeError('ERR_RINGBRIDGE_KERNEL_ERROR', `kernel rejected message ${f.correlationId}: ${name} (code ${code}, detail ${detail})`, {
          details: { kernelCode: code, kernelError: name, detail, correlationId: f.correlationId },
        }),
      }
    }
    try {
      return { ok: true, value: this.#output.decode(this.#out.view, f.offset, f.length) }
    } catch (e) {
      return { ok: false, error: e as Error }
    }
  }

  #route(id: number, entry: Entry<TOut>): void {
    if (this.#settle(id, entry)) return
    if (this.#expired.delete(id)) {
      this.#late++
      return
    }
    const r = this.#receivers.shift()
    if (r) {
      if (r.timer) clearTimeout(r.timer)
      if (entry.ok) r.resolve(entry.value)
      else r.reject(entry.error)
      return
    }
    if (this.#terminating) {
      this.#replies.force(entry)
      return
    }
    const res = this.#replies.offer(entry)
    if (res.status === 'full') {
      this.#droppedReplies++
      this.#overflowed++
    } else if (res.status !== 'queued') {
      this.#droppedReplies++
    }
  }

  #settle(id: number, entry: Entry<TOut>): boolean {
    const p = this.#pending.get(id)
    if (!p) return false
    this.#pending.delete(id)
    if (p.timer) clearTimeout(p.timer)
    if (p.started !== undefined && entry.ok) this.#latency.record(performance.now() - p.started)
    if (entry.ok) p.resolve(entry.value)
    else p.reject(entry.error)
    return true
  }

  /**
   * Whether the next reply taken is the `ERR_RINGBRIDGE_OVERFLOW` error: raised once per
   * episode of drops (the first drop after the receiver last caught up), and once more for
   * the drops that came after it when the receiver catches up (the reply queue empties). So a
   * receiver that stays behind gets one error, not one between every two replies, and every
   * drop is reported by some error and in `stats().dropped.reply`.
   */
  #overflowDue(): boolean {
    return this.#overflowed > 0 && (!this.#overflowReported || this.#replies.length === 0)
  }

  #takeReply(): Entry<TOut> | undefined {
    if (this.#overflowDue()) {
      const n = this.#overflowed
      this.#overflowed = 0
      this.#overflowReported = true
      const capacity = this.#replies.capacity
      return {
        ok: false,
        error: new RingbridgeError(
          'ERR_RINGBRIDGE_OVERFLOW',
          `${n} replies were dropped: the reply queue (capacity ${capacity}) was full under policy 'reject'. Replies dropped before you catch up (the queue empties) are counted in stats().dropped.reply and reported by one more such error then`,
          { details: { dropped: n, capacity } },
        ),
      }
    }
    const entry = this.#replies.shift()
    if (this.#replies.length === 0) this.#overflowReported = false
    return entry
  }

  /**
   * The host's event loop step, run on every doorbell and after every call: drain replies,
   * refill the ring from the send queue, settle waiters, then announce what we wait for (H7)
   * and re-check so no doorbell can be missed.
   */
  #pump(): void {
    if (this.#pumping || this.#closed) return
    if (!this.#terminating && this.state === 'terminated') {
      // The kernel stopped without being asked: it faulted (a trapping handler). Its service
      // thread took over its status words; join() reports the fault and everyone waiting gets it.
      this.#terminating = true
      this.#report = Promise.resolve(this.#finish('abandon'))
      return
    }
    this.#pumping = true
    try {
      for (;;) {
        const progress = this.#drainOutput() + this.#flushSendQueue()
        while (this.#receivers.length > 0 && this.#replies.length + this.#overflowed > 0) {
          const r = this.#receivers.shift() as Waiter<TOut>
          const e = this.#takeReply() as Entry<TOut>
          if (r.timer) clearTimeout(r.timer)
          if (e.ok) r.resolve(e.value)
          else r.reject(e.error)
        }
        this.#settleStateWaiters()
        if (progress > 0) continue
        const wantOutput = (this.#receivers.length > 0 || this.#pending.size > 0 || this.#stateWaiters.length > 0) && this.#canDrain()
        const wantInput = this.#sendQueue.length > 0
        this.#announce((wantOutput ? WAIT.output : 0) | (wantInput ? WAIT.input : 0) | (this.#stateWaiters.length > 0 ? WAIT.output : 0))
        // A spent budget has a setImmediate coming that pumps again: replies wait for it.
        const drainable = wantOutput && this.#out.available(1) > 0 && (this.#terminating || this.#budget > 0)
        if (drainable || (wantInput && this.#in.free(1) > 0)) continue
        break
      }
    } finally {
      this.#pumping = false
    }
  }

  /** H7: store what we wait for; keep the process alive while we wait on the kernel. */
  #announce(bits: number): void {
    if (bits !== this.#waiting) {
      if (this.#outCb === this.#cb) Atomics.store(this.#cb.u32, this.#waitingIdx, bits)
      else {
        // A route: input room is the first stage's news, replies the last stage's.
        Atomics.store(this.#cb.u32, this.#waitingIdx, bits & WAIT.input)
        Atomics.store(this.#outCb.u32, this.#waitingIdx, bits & WAIT.output)
      }
      this.#waiting = bits
    }
    if (bits !== 0 && this.#keepAlive === undefined) this.#keepAlive = setInterval(() => this.#pump(), 1000)
    else if (bits === 0 && this.#keepAlive !== undefined) {
      clearInterval(this.#keepAlive)
      this.#keepAlive = undefined
    }
  }

  #settleStateWaiters(): void {
    for (let i = this.#stateWaiters.length - 1; i >= 0; i--) {
      const w = this.#stateWaiters[i]!
      if (w.until()) {
        this.#stateWaiters.splice(i, 1)
        if (w.timer) clearTimeout(w.timer)
        w.resolve()
      }
    }
  }

  #until(until: () => boolean, what: string): Promise<void> {
    if (until()) return Promise.resolve()
    return new Promise<void>((resolve, reject) => {
      const w = { resolve, reject, until } as Waiter<void> & { until: () => boolean }
      w.timer = setTimeout(() => {
        const i = this.#stateWaiters.indexOf(w)
        if (i >= 0) this.#stateWaiters.splice(i, 1)
        reject(new RingbridgeError('ERR_RINGBRIDGE_TIMEOUT', `${what}: the kernel did not answer within ${this.#timeoutMs} ms (state ${this.state})`))
      }, this.#timeoutMs)
      this.#stateWaiters.push(w)
      this.#pump()
    })
  }

  async #terminate(mode: TerminateMode): Promise<TerminateReport<TIn>> {
    // Already stopped by dispose(): its report says what it abandoned.
    if (this.#closed) return this.#undelivered
    this.#terminating = true
    // `abandon` refuses the messages still waiting for room behind a full send queue (their
    // send()/request() never resolved); `drain` delivers them, like the queue itself.
    if (mode === 'abandon') for (const w of this.#blocked.drain()) w.reject(closedError(w.what))
    try {
      if (mode === 'drain') {
        // A paused kernel takes nothing, so the send queue would never flush: drain overrides
        // pause, as the kernel does for the ring (dispatch.rs).
        for (const cb of this.#cbs) cb.store32('active', 1)
        this.#runner.wake()
        await this.#until(() => (this.#sendQueue.length === 0 && this.#blocked.length === 0) || this.state === 'terminated' || this.#hostStuck(), 'terminate (flushing the send queue)')
      }
      // A route stops stage by stage, each once the one before it has (PROTOCOL.md §14): each
      // drains into the next; `abandon` abandons the first stage only, so every message the
      // route took comes out of its last stage.
      for (const [i, cb] of this.#cbs.entries()) {
        cb.store32('terminate', mode === 'drain' || i > 0 ? TERMINATE.drain : TERMINATE.abandon)
        this.#runner.wake()
        await this.#until(() => cb.load32('state') === STATE.terminated || this.#hostStuck(), 'terminate')
      }
    } catch (e) {
      // The kernel did not stop in time: abandon it (join stops it for certain) and report.
      for (const cb of this.#cbs) cb.store32('terminate', TERMINATE.abandon)
      if ((e as RingbridgeError).code !== 'ERR_RINGBRIDGE_TIMEOUT') throw e
    }
    let joinError: unknown
    try {
      await this.#runner.joinAsync()
    } catch (e) {
      joinError = e
    }
    // dispose() may have finished it meanwhile.
    if (this.#closed) return this.#undelivered
    return this.#finish(mode, { error: joinError })
  }

  #hostStats(): { host?: KernelHostStatus } {
    const h = this.#native.hostStatus()
    if (h === null) return {}
    const host: KernelHostStatus = { pid: h.pid, state: h.state as KernelHostStatus['state'], sinceProgressMs: h.sinceProgressMs }
    if (h.exitReason !== undefined && h.exitReason !== null) host.exitReason = h.exitReason
    if (h.stoppedForMs !== undefined && h.stoppedForMs !== null) host.stoppedForMs = h.stoppedForMs
    return { host }
  }

  /** The kernel host stopped (SIGSTOP) for a second or more, or exited: waiting is pointless. */
  #hostStuck(): boolean {
    const s = this.#native.hostStatus()
    return s !== null && (s.state === 'exited' || (s.state === 'stopped' && (s.stoppedForMs ?? 0) >= 1000))
  }

  /** Joins the kernel, drains what it produced, and reports what it never handled. */
  #finish(mode: TerminateMode = 'abandon', joined?: { error: unknown }): TerminateReport<TIn> {
    let fault: Error | undefined
    try {
      if (joined === undefined) this.#runner.join()
      else if (joined.error !== undefined) throw joined.error
    } catch (e) {
      fault = fromNative(e)
    } finally {
      this.#fault = fault
      const ended = (what: string) => fault ?? closedError(what)
      this.#drainOutput()
      const head = this.#cb.load64('input_head')
      const undelivered: TIn[] = []
      const end = this.#shared ? this.#cb.load64('input_tail') : this.#in.published
      for (let p = head; p < end; p++) {
        const f = this.#in.frameAt(p)
        // A skip frame (shared producers, PROTOCOL.md §16) is no message.
        if (this.#shared !== undefined && isSkipFrame(this.#in.view, f.offset, f.length, f.flags)) continue
        undelivered.push(this.#input.decode(this.#in.view, f.offset, f.length))
      }
      for (const q of this.#sendQueue.drain()) {
        undelivered.push(this.#input.decode(new DataView(q.bytes.buffer, q.bytes.byteOffset, q.bytes.length), 0, q.bytes.length))
        q.outcome?.('undelivered')
      }
      this.#closed = true
      this.#announce(0)
      this.#onClosed?.()
      for (const w of this.#blocked.drain()) w.reject(ended(w.what))
      for (const [id] of this.#pending) this.#settle(id, { ok: false, error: ended(`request ${id}`) })
      // Every waiter settles now and leaves no timer behind (a pending timer would keep the
      // process alive after close()).
      if (this.#replies.length === 0) {
        for (const r of this.#receivers.splice(0)) {
          if (r.timer) clearTimeout(r.timer)
          r.reject(ended('receive'))
        }
      }
      for (const w of this.#stateWaiters.splice(0)) {
        if (w.timer) clearTimeout(w.timer)
        w.reject(ended('wait'))
      }
      this.#undelivered = { mode, processed: this.#cb.load64('messages_processed'), undelivered, ...(fault ? { fault } : {}) }
    }
    return this.#undelivered
  }

  #undelivered!: TerminateReport<TIn>
  #fault: Error | undefined

  /** The fault that ended the kernel (a trapping GPU handler), if one did. */
  get fault(): Error | undefined {
    return this.#fault
  }
}

function waitLimit(options: WaitOptions | undefined): { timeoutMs: number | undefined; signal: AbortSignal | undefined } {
  if (options === undefined) return { timeoutMs: undefined, signal: undefined }
  if (options === null || typeof options !== 'object') badOption('options', 'an object { timeoutMs?, signal? }', options)
  const t = options.timeoutMs
  if (t !== undefined && (typeof t !== 'number' || !(t >= 0) || t > MAX_TIMER_MS)) badOption('timeoutMs', `a number of milliseconds from 0 to ${MAX_TIMER_MS} (about 24.8 days)`, t)
  const signal = options.signal
  if (signal !== undefined && !(signal instanceof AbortSignal)) badOption('signal', 'an AbortSignal', signal)
  return { timeoutMs: t, signal }
}

function abortedError(what: string, signal: AbortSignal): RingbridgeError {
  return new RingbridgeError('ERR_RINGBRIDGE_ABORTED', `${what}: aborted`, { cause: signal.reason })
}
