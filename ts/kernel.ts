/**
 * `RingKernel<TIn, TOut>`: one launched ring kernel, seen from JavaScript. Messages are encoded
 * straight into the input ring's slots in shared memory and replies decoded straight
 * out of the output ring's slots: no per-message call into native code on the hot path.
 *
 * This class is the facade; the work is in its parts, each a module of its own:
 * - `launch.ts`: launch options, validation, memory sizing, the native kernel and its control blocks;
 * - `host.ts`: the protocol's host steps (H3–H7), the event-loop pump, life-cycle waits — the
 *   twin of `ringbridge-core/src/host.rs`;
 * - `outbox.ts`: the send queue in front of the input ring (backpressure, withdrawal, flush);
 * - `inbox.ts`: the output ring's replies, decoded and delivered to requests and receivers;
 * - `wait.ts`: the bounded wait (`{ timeoutMs, signal }`) every waiting call takes;
 * - `protocol.ts`, `ring.ts`: the protocol's constants and codecs, and the rings' ends.
 * @module
 */
import { performance } from 'node:perf_hooks'
import { MessageChannel } from 'node:worker_threads'

import { ChunkReader, ChunkWriter, type ReceiveChunk, type SendChunk } from './chunk'
import type { Schema } from './codec'
import { RingbridgeError, RingbridgeRangeError, badOption, fromNative } from './errors'
import { withModuleHandler, type WorkerRunner } from './handler'
import { Host } from './host'
import { Inbox } from './inbox'
import { abortLaunch, checkLaunch, launchNativeAsync, mapKernel, stageBuffers, stageMemory, type NativeKernel, type SharedInput, type StageShape } from './launch'
import { Outbox } from './outbox'
import { producerHandle, sharedInputStats, type ProducerHandle } from './producer'
import { ERROR_NAMES } from './protocol'
import { MessageQueue, queueOptions } from './queue'
import { SendQueue } from './send-queue'
import type { InputRing, OutputRing } from './ring'
import type { Runtime } from './runtime'
import type { CommitOptions, KernelHostStatus, KernelState, KernelStats, LaunchOptions, RouteStageInfo, SendOutcome, TerminateMode, TerminateReport, WaitOptions } from './types'
import { abortedError, bound, waitLimit, type Entry, type Waiter } from './wait'

const closedError = (what: string) => new RingbridgeError('ERR_RINGBRIDGE_CLOSED', `${what}: the kernel is terminated`)

// `await using` looks up `Symbol.asyncDispose`: Node has it from 20.4 (18.18); on an older Node
// it is defined here as Node defines it, `Symbol.for('nodejs.asyncDispose')`, so that the
// classes below and the streams of Node agree on the symbol. Before the classes: their method
// names are computed when they are defined.
;(Symbol as { asyncDispose?: symbol }).asyncDispose ??= Symbol.for('nodejs.asyncDispose')

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
 * @example
 * A kernel is `AsyncDisposable`: `await using` terminates it (drain) when the block ends.
 * ```ts
 * {
 *   await using k = await rt.launch({ handler: 'echo', input: u32, output: u32 })
 *   console.log(await k.request(8)) // 8
 * } // k.terminate() here, however the block is left
 * ```
 */
export class RingKernel<TIn, TOut> implements AsyncDisposable {
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

  readonly #native: NativeKernel
  readonly #worker: WorkerRunner | undefined
  readonly #host: Host
  readonly #outbox: Outbox<TIn>
  readonly #inbox: Inbox<TOut>
  /** Shared-input mode: the producers' claim word and the buffer they attach to. */
  readonly #shared: SharedInput | undefined
  readonly #in: InputRing
  readonly #out: OutputRing
  readonly #input: Schema<TIn>
  readonly #typeId: number
  readonly #spinMs: number
  /** The input ring's chunk producer ({@link RingKernel.reserve}). */
  readonly #chunkWriter: ChunkWriter
  /** The output ring's chunk consumer, made by the first {@link RingKernel.receiveChunk}. */
  #chunkReader: ChunkReader | undefined
  #report: Promise<TerminateReport<TIn>> | undefined
  /** Tells the runtime this kernel ended, so it holds it (and its memory) no longer. */
  readonly #onClosed: (() => void) | undefined
  /** Set once the constructor is done: the doorbell pumps only then. */
  #ready = false

  /**
   * @internal Use `Runtime.launch` or `Runtime.launchRoute`. The launch runs off the JS thread
   * (the addon's `launchAsync` on the libuv pool): a kernel host's start under `process`
   * isolation, and under `thread` isolation the in-process launch over memory made here (a CUDA
   * context, an NVRTC compile on a cold cache, the kernel launch, the service thread). The event
   * loop runs meanwhile.
   */
  static async open<TIn, TOut>(given: LaunchOptions<TIn, TOut> | readonly LaunchOptions<any, any>[], backend: string, device = 0, onClosed?: () => void): Promise<RingKernel<TIn, TOut>> {
    // `cpu: { filename, export }` is checked here and stands in as a function from now on.
    const options = Array.isArray(given) ? given.map((o) => withModuleHandler(o)) : withModuleHandler(given as LaunchOptions<TIn, TOut>)
    const { stages } = checkLaunch(options, backend, device)
    // The doorbell holds the kernel only weakly, so a forgotten kernel can be collected and its
    // native finalizer can stop the thread. It pumps only once the constructor is done: a bell
    // that comes before (the kernel runs from the launch on) or after it threw must not call
    // into a half-built object; the first pump re-checks the rings (H7), so none is missed.
    const bell: { ref?: WeakRef<RingKernel<any, any>> } = {}
    const doorbell = () => {
      const kernel = bell.ref?.deref()
      if (kernel !== undefined && kernel.#ready) kernel.#host.pump()
    }
    const memory = stageMemory(stages)
    const n = await launchNativeAsync(memory, stages, Array.isArray(options), doorbell)
    const k = new RingKernel<TIn, TOut>(options, onClosed, { native: n, memory, stages, doorbell })
    bell.ref = new WeakRef(k)
    return RingKernel.#started(k)
  }

  /**
   * A kernel with a JS handler is handed out once its worker has built the handler (loaded its
   * module): a module that fails to load, or whose export is not a function, fails the launch
   * (the kernel is stopped).
   */
  static async #started<K extends RingKernel<any, any>>(kernel: K): Promise<K> {
    const worker = kernel.#worker
    if (worker === undefined) return kernel
    try {
      await worker.ready
    } catch (e) {
      kernel.dispose()
      throw e
    }
    return kernel
  }

  /** @internal `launched`: the kernel {@link RingKernel.open} launched, with its checked stages and their memory. */
  constructor(
    options: LaunchOptions<TIn, TOut> | readonly LaunchOptions<any, any>[],
    onClosed: (() => void) | undefined,
    launched: { native: NativeKernel; memory: (SharedArrayBuffer | undefined)[]; stages: StageShape[]; doorbell: () => void },
  ) {
    this.#onClosed = onClosed
    const list = (Array.isArray(options) ? options : [options]) as readonly LaunchOptions<any, any>[]
    const { stages, memory, doorbell } = launched
    const first = stages[0]!
    const { isolation, typeId, timeoutMs } = first
    const device = first.shape.device ?? 0
    const opts = list[0] as LaunchOptions<TIn, TOut>
    const sendQueue = new SendQueue(queueOptions('sendQueue', opts.sendQueue, { capacity: 4096, policy: 'block' }))
    const replyQueue = new MessageQueue<Entry<TOut>>(queueOptions('replyQueue', opts.replyQueue, { capacity: 65536, policy: 'block' }))
    this.#native = launched.native
    let buffers: ArrayBufferLike[]
    try {
      buffers = stageBuffers(this.#native, memory)
    } catch (e) {
      abortLaunch(this.#native)
      throw e
    }
    try {
      const mapped = mapKernel(this.#native, buffers, stages, opts, doorbell)
      this.#in = mapped.input
      this.#out = mapped.output
      this.#shared = mapped.shared
      this.#worker = mapped.worker
      this.#host = new Host(mapped.cbs, mapped.runner, { input: this.#in, output: this.#out }, timeoutMs, () => {
        this.#report = Promise.resolve(this.#finish('abandon'))
      })
      this.#inbox = new Inbox(this.#host, this.#out, (list[list.length - 1] as LaunchOptions<unknown, TOut>).output, replyQueue, this.#shared !== undefined)
      this.#outbox = new Outbox(this.#host, this.#in, opts.input, typeId, sendQueue, (what) => this.#checkOpen(what), (id, error) => this.#inbox.settle(id, { ok: false, error }))
      this.#host.attach(this.#inbox, this.#outbox)
      this.#input = opts.input
      this.#typeId = typeId
      const outbox = this.#outbox
      this.#chunkWriter = new ChunkWriter(this.#in, typeId, () => outbox.ahead, () => outbox.publish(), (what) => this.#checkOpen(what), (limit, what) => outbox.waitForRoom(limit, what))
      // A GPU answers in microseconds, faster than the doorbell's trip through the event loop
      // (bench/results: ~22 µs with the doorbell alone on an H100, ~7 µs round trip).
      this.#spinMs = (opts.spinMicros ?? (this.#native.backend === 'cuda' ? 50 : 0)) / 1000
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
      this.capacity = first.shape.inputCapacity
    } catch (e) {
      // The kernel runs already: stop it before the caller sees the error, so nothing is left
      // running behind an object nobody holds.
      abortLaunch(this.#native)
      throw typeof (e as RingbridgeError)?.code === 'string' ? e : new RingbridgeError('ERR_RINGBRIDGE_PROTOCOL', `the kernel's rings cannot be mapped in JavaScript: ${(e as Error).message}`, { cause: e })
    }
    this.#ready = true
  }

  /**
   * For a JS handler (`cpu:`): the message of the first exception it threw that was not a
   * `ctx.fail` (those messages were answered with HANDLER_FAULT error frames). Each such
   * message's own rejection carries its exception too: its text at the end of the error's
   * message, the exception itself (rebuilt from the worker: name, message, stack) as `cause`,
   * and its message as `details.handlerError`.
   * @example
   * ```ts
   * try {
   *   await kernel.request(msg)
   * } catch (e) {
   *   console.error(e.message) // kernel rejected message 1: handler-fault (code 5, detail 0): ReferenceError: FACTOR is not defined
   *   console.error(kernel.handlerFault) // FACTOR is not defined (the first one)
   * }
   * ```
   */
  get handlerFault(): string | undefined {
    return this.#worker?.lastFault
  }

  /** Current life-cycle state. */
  get state(): KernelState {
    return this.#host.state()
  }

  /** Whether the kernel is terminated (or terminating): sends are refused. */
  get closed(): boolean {
    return this.#host.closed || this.#host.terminating
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
    this.#inbox.notChunkOnly()
    return this.#outbox.trySend(message)
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
      this.#inbox.notChunkOnly()
      const limit = waitLimit(options)
      if (limit.signal?.aborted) throw abortedError('send', limit.signal)
      if (this.#outbox.trySend(message)) return Promise.resolve('sent')
      const id = this.#outbox.nextId++
      const sent = this.#outbox.enqueue(this.#outbox.encode(message, id), 'send')
      if (limit.timeoutMs === undefined && limit.signal === undefined) return sent
      // Bounded: a message still waiting when the limit hits is withdrawn, never half-sent.
      return new Promise<SendOutcome>((resolve, reject) => {
        const disarm = bound(limit, (why) => {
          if (!this.#outbox.withdraw(id)) return
          reject(why === 'abort' ? abortedError(`send ${id}`, limit.signal!) : new RingbridgeError('ERR_RINGBRIDGE_TIMEOUT', `send ${id}: no room within ${limit.timeoutMs} ms (withdrawn: it was not sent)`))
        })
        sent.then(resolve, reject).finally(disarm)
      })
    } catch (e) {
      return Promise.reject(e)
    }
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
      this.#inbox.notChunkOnly()
      if (!Array.isArray(messages)) badOption('sendBatch messages', 'an array', messages)
      return this.#outbox.sendBatch(messages)
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
    return this.#outbox.sendPacked(packed, size, count)
  }

  /**
   * Takes the replies ready now as raw payloads, packed back to back into `into` (`size` bytes
   * each, up to `into.length / size` of them), bypassing the output schema and the reply queue:
   * the streaming counterpart of {@link RingKernel.trySendPacked}. Do not mix with `receive()`.
   * @returns how many replies were copied.
   * @throws {RingbridgeError} `ERR_RINGBRIDGE_KERNEL_ERROR` for an error frame (the replies before it are kept); `ERR_RINGBRIDGE_PROTOCOL` for a reply longer than `size`.
   */
  tryReceivePacked(into: Uint8Array, size: number): number {
    this.#inbox.keepForPackedReader()
    if (!(into instanceof Uint8Array)) badOption('into', 'a Uint8Array', into)
    if (!Number.isInteger(size) || size < 1) badOption('size', 'a positive integer', size)
    if (this.#chunkReader?.claims) throw new RingbridgeRangeError('ERR_RINGBRIDGE_INVALID_ARGUMENT', 'tryReceivePacked: a receive chunk is held or awaited; release() it first')
    return this.#inbox.copyPacked(into, size)
  }

  /**
   * Reserves up to `max` free input slots to fill in place: the zero-copy way to stream
   * (PROTOCOL.md §5.3). Write payloads into the chunk's slots, then
   * {@link SendChunk.commit} sends them with one publish; after the first lap of equal-sized
   * messages a commit writes no header either, so a stream costs no per-message work beyond
   * your own writes. Never waits and never queues: the chunk may have fewer slots than `max`,
   * or none when the ring is full or messages wait in the send queue (they are not overtaken).
   * A reservation changes nothing until its commit; another reservation or any other send
   * makes it stale. Messages go out with correlation id 0 and the input schema is not applied.
   * @param max most slots wanted, an integer from 0 to 2^32 (default: the ring's capacity).
   * @throws {RingbridgeTypeError} `ERR_RINGBRIDGE_INVALID_ARGUMENT` for a bad `max`.
   * @throws {RingbridgeError} `ERR_RINGBRIDGE_CLOSED` after terminate.
   * @example
   * ```ts
   * const k = await rt.launch({ handler: 'echo', input: bytes(48), output: bytes(48), slotSize: 64 })
   * const chunk = k.reserve(256)
   * for (let i = 0; i < chunk.count; i++) chunk.payload(i).fill(i & 0xff)
   * chunk.commit(chunk.count, { size: 48 })
   * ```
   */
  reserve(max: number = this.capacity): SendChunk {
    this.#inbox.keepForChunkSender()
    return this.#chunkWriter.reserve(max)
  }

  /**
   * As {@link RingKernel.reserve}, waiting until at least one input slot is free (the kernel's
   * release of input slots rings the doorbell, as for `send()` under `block`). A streaming loop
   * needs it beside {@link RingKernel.nextChunk}: when every message sent has been answered and
   * `reserve()` still finds no room (the kernel answers before it releases the input slots,
   * PROTOCOL.md K5 then K6), there is no reply to wait for, only room.
   * @throws {RingbridgeError} `ERR_RINGBRIDGE_TIMEOUT` / `ERR_RINGBRIDGE_ABORTED` when the wait ends first; `ERR_RINGBRIDGE_CLOSED` once the kernel is terminating.
   * @throws {RingbridgeRangeError} `ERR_RINGBRIDGE_INVALID_ARGUMENT` for a bad `max`, or while another `nextReserve()` waits.
   * @example
   * ```ts
   * const chunk = await k.nextReserve(1024, { timeoutMs: 1000 })
   * chunk.payload(0).set(bytes)
   * chunk.commit(1, { size: bytes.length })
   * ```
   */
  nextReserve(max: number = this.capacity, options?: WaitOptions): Promise<SendChunk> {
    try {
      this.#inbox.keepForChunkSender()
      return this.#chunkWriter.next(max, options)
    } catch (e) {
      return Promise.reject(e)
    }
  }

  /**
   * Up to `max` replies ready now, read in place in the output ring's slots (no copy, no
   * decode), held until {@link ReceiveChunk.release}; a chunk of 0 when none is ready. One
   * chunk is held at a time. Like {@link RingKernel.tryReceivePacked}, this keeps replies in the
   * ring for you: do not mix with `receive()`, `request()` and the like. When the kernel is
   * terminated, replies still in the ring and not held by a chunk move to the reply queue
   * (`tryReceiveMany()` takes them), so that a drain can finish.
   *
   * Replies stay in the ring from the first `receiveChunk()`, or from the first
   * {@link RingKernel.reserve} made while only chunk calls were used; a program that only uses
   * chunks therefore finds every reply here. (A send, request or receive by another call before
   * the first `receiveChunk()` ends what `reserve()` implied.)
   * @param max most replies wanted, an integer from 0 to 2^32 (default: the ring's capacity).
   * @throws {RingbridgeRangeError} `ERR_RINGBRIDGE_INVALID_ARGUMENT` while a chunk is held, or for a bad `max`; and once, on the first call, when replies had already gone to the reply queue — possible only after other sends or reads came first (take them with `tryReceiveMany()` first: they are older than the ring's).
   * @example
   * ```ts
   * const replies = k.receiveChunk(1024)
   * for (let i = 0; i < replies.count; i++) if (replies.isErrorAt(i)) console.error(replies.errorAt(i))
   * replies.release()
   * ```
   */
  receiveChunk(max: number = this.#out.capacity): ReceiveChunk {
    return this.#chunks().take(max, 'receiveChunk')
  }

  /**
   * As {@link RingKernel.receiveChunk}, waiting until at least one reply is ready (through the
   * doorbell, as `receive()` waits).
   * @throws {RingbridgeError} `ERR_RINGBRIDGE_TIMEOUT` / `ERR_RINGBRIDGE_ABORTED` when the wait ends first; `ERR_RINGBRIDGE_CLOSED` when the kernel is terminated and no reply is left in the ring.
   * @throws {RingbridgeRangeError} `ERR_RINGBRIDGE_INVALID_ARGUMENT` while a chunk is held or another `nextChunk()` waits, or for a bad `max`.
   * @example
   * ```ts
   * const replies = await k.nextChunk(4096, { timeoutMs: 1000 })
   * console.log(replies.count, replies.lengthAt(0))
   * replies.release()
   * ```
   */
  nextChunk(max: number = this.#out.capacity, options?: WaitOptions): Promise<ReceiveChunk> {
    try {
      return this.#chunks().next(max, options, () => this.#host.closed)
    } catch (e) {
      return Promise.reject(e)
    }
  }

  /**
   * The chunk reader; the inbox keeps replies in the ring for it from now on. Replies the pump
   * had already moved into the reply queue cannot go back into the ring: the first call says so
   * (once) instead of handing out later replies as if they were the first.
   */
  #chunks(): ChunkReader {
    if (this.#chunkReader === undefined) {
      const inbox = this.#inbox
      inbox.keepForPackedReader()
      this.#chunkReader = inbox.chunks = new ChunkReader(this.#out, this.#host, (n) => (inbox.replied += n))
      const queued = inbox.replies.length
      if (queued > 0) {
        throw new RingbridgeRangeError(
          'ERR_RINGBRIDGE_INVALID_ARGUMENT',
          `receiveChunk: ${queued} repl${queued === 1 ? 'y' : 'ies'} arrived before the first receiveChunk and went to the reply queue: take ${queued === 1 ? 'it' : 'them'} first with tryReceiveMany() (they come before the ring's), then receiveChunk again; call receiveChunk(0) before sending to keep every reply in the ring`,
        )
      }
    }
    return this.#chunkReader
  }

  /**
   * Sends `message` and resolves with the reply that carries its correlation id.
   * @throws {RingbridgeError} `ERR_RINGBRIDGE_KERNEL_ERROR` when the kernel answers with an error frame; `ERR_RINGBRIDGE_TIMEOUT` after `timeoutMs`; `ERR_RINGBRIDGE_CLOSED` if the kernel ends first; `ERR_RINGBRIDGE_FULL` as {@link RingKernel.send}.
   * @throws {RingbridgeTypeError} `ERR_RINGBRIDGE_INVALID_MESSAGE`.
   */
  request(message: TIn, options?: WaitOptions): Promise<TOut> {
    try {
      this.#checkOpen('request')
      this.#inbox.notChunkOnly()
      const limit = waitLimit(options)
      if (limit.signal?.aborted) throw abortedError('request', limit.signal)
      const outbox = this.#outbox
      const pending = this.#inbox.pending
      const id = outbox.nextId++
      const fast = outbox.queued === 0 && this.#in.free(1) > 0
      const queued = fast ? undefined : outbox.encode(message, id)
      if (fast) outbox.stage(message, id)
      const reply = new Promise<TOut>((resolve, reject) => {
        const w: Waiter<TOut> = { resolve, reject: this.#worker ? (e) => reject(this.#explain(e)) : reject, started: performance.now() }
        if (limit.timeoutMs !== undefined || limit.signal !== undefined) {
          w.disarm = bound(limit, (why) => {
            if (!pending.delete(id)) return
            // Withdrawn if it never reached the ring; otherwise its reply will be late.
            const withdrawn = outbox.withdraw(id)
            if (!withdrawn) this.#inbox.expired.add(id)
            reject(
              why === 'abort'
                ? abortedError(`request ${id}`, limit.signal!)
                : new RingbridgeError('ERR_RINGBRIDGE_TIMEOUT', `request ${id}: no reply within ${limit.timeoutMs} ms${withdrawn ? ' (withdrawn: it had not reached the ring)' : ''}`, { details: { withdrawn } }),
            )
            this.#host.pump()
          })
        }
        pending.set(id, w)
      })
      if (fast) outbox.publish()
      else outbox.enqueue(queued!, `request ${id}`).catch((e: Error) => this.#inbox.settle(id, { ok: false, error: e }))
      this.#host.pump()
      if (this.#spinMs > 0 && pending.has(id)) this.#spinFor(id)
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
      const limit = waitLimit(options)
      if (limit.signal?.aborted) throw abortedError('receive', limit.signal)
      this.#inbox.notChunkOnly()
      this.#host.pump()
      const now = this.#inbox.takeReply()
      if (now) return now.ok ? Promise.resolve(now.value) : Promise.reject(this.#explain(now.error))
      if (this.#host.closed) return Promise.reject(closedError('receive'))
      const receivers = this.#inbox.receivers
      return new Promise<TOut>((resolve, reject) => {
        const w: Waiter<TOut> = { resolve, reject: this.#worker ? (e) => reject(this.#explain(e)) : reject }
        if (limit.timeoutMs !== undefined || limit.signal !== undefined) {
          w.disarm = bound(limit, (why) => {
            const i = receivers.indexOf(w)
            if (i < 0) return
            receivers.splice(i, 1)
            if (why === 'abort') return reject(abortedError('receive', limit.signal!))
            reject(new RingbridgeError('ERR_RINGBRIDGE_TIMEOUT', `receive: no reply within ${limit.timeoutMs} ms`))
            this.#host.pump()
          })
        }
        receivers.push(w)
        this.#host.pump()
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
    return this.#takeInto([], max)
  }

  /** Appends the replies ready now to `out` until it holds `max`; throws as {@link RingKernel.tryReceiveMany}. */
  #takeInto(out: TOut[], max: number): TOut[] {
    // Replies already queued come first; then, with nothing queued ahead, straight from the
    // ring (no queue entry per reply); the pump afterwards routes what the fast path left.
    try {
      this.#inbox.notChunkOnly()
      this.#inbox.takeMany(max, out)
      this.#inbox.pullDirect(out, max)
      this.#host.pump()
      if (out.length < max && this.#inbox.replies.length > 0) this.#inbox.takeMany(max, out)
      return out
    } catch (e) {
      throw this.#explain(e as Error)
    }
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
    return max > 1 ? this.#takeInto([first], max) : [first]
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
    this.#host.setActive(true)
    await this.#host.until(() => this.state !== 'paused', 'activate')
  }

  /**
   * Pauses the kernel after the batch in hand; resolves once it has stopped taking messages.
   * Messages sent meanwhile wait in the ring.
   * @throws {RingbridgeError} `ERR_RINGBRIDGE_CLOSED`; `ERR_RINGBRIDGE_TIMEOUT` if the kernel does not answer.
   */
  async deactivate(): Promise<void> {
    this.#checkOpen('deactivate')
    this.#host.setActive(false)
    await this.#host.until(() => this.state === 'terminated' || this.#host.cbs.every((cb) => this.#host.stageState(cb) === 'paused'), 'deactivate')
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

  /**
   * `await using`: terminates the kernel with the default mode (`drain`) and resolves when it
   * has stopped. Idempotent; on a kernel already terminated (or disposed) it does nothing and
   * never throws. If the terminate fails, the kernel is stopped at once ({@link RingKernel.dispose})
   * and the error is thrown.
   * @example
   * ```ts
   * async function sum(rt: Runtime, xs: number[]) {
   *   await using k = await rt.launch({ input: u32, output: u32, cpu: (x: number) => x * 2 })
   *   return (await Promise.all(xs.map((x) => k.request(x)))).reduce((a, b) => a + b, 0)
   * } // k is terminated (drained) here, also when a request threw
   * ```
   */
  async [Symbol.asyncDispose](): Promise<void> {
    if (this.#host.closed) return
    try {
      await this.terminate()
    } catch (e) {
      this.dispose()
      throw e
    }
  }

  /** Stops the kernel at once (abandon) and releases it; synchronous. Prefer {@link RingKernel.terminate}. */
  dispose(): void {
    if (this.#host.closed) return
    this.#host.terminating = true
    this.#host.abandonAll()
    this.#finish()
  }

  /** Counters and depths (cheap: reads a few words). */
  stats(): KernelStats {
    const { cb, outCb, cbs } = this.#host
    const inbox = this.#inbox
    const firstError = cb.load32('error_code')
    // Under shared producers the host publishes nothing itself: the tail and the producers'
    // counters say what was sent (skip frames are not messages).
    const inputTail = this.#shared ? cb.load64('input_tail') : this.#in.published
    const producers = this.#shared ? sharedInputStats(this.#shared.claim, inputTail) : undefined
    return {
      backend: this.backend,
      state: this.state,
      sent: this.#shared && producers ? inputTail - this.#shared.start - producers.skipped : this.#outbox.sent,
      processed: cb.load64('messages_processed'),
      replied: inbox.replied,
      errors: { replies: inbox.errorReplies, kernel: cb.load32('error_count'), firstKernelError: ERROR_NAMES[firstError] ?? `code-${firstError}` },
      dropped: { send: this.#outbox.queue.dropped, reply: inbox.droppedReplies },
      lateReplies: inbox.late,
      depth: {
        sendQueue: this.#outbox.queued,
        inputRing: inputTail - cb.load64('input_head'),
        outputRing: outCb.load64('output_tail') - this.#out.next,
        replyQueue: inbox.replies.length,
      },
      pendingRequests: inbox.pending.size,
      ...this.#hostStats(),
      requestLatency: inbox.latency.percentiles(),
      stages: cbs.map((c, i) => {
        const code = c.load32('error_code')
        // The first stage's tail is the host's (what it published); a later stage's is only in
        // its kernel's view (a device word on dma), so its input depth is taken from the stage
        // before: what that one processed, minus what this one did.
        const tail = i === 0 ? inputTail : cbs[i - 1]!.load64('messages_processed')
        return {
          state: this.#host.stageState(c),
          processed: c.load64('messages_processed'),
          errors: c.load32('error_count'),
          firstKernelError: ERROR_NAMES[code] ?? `code-${code}`,
          inputRing: Math.max(0, tail - c.load64('input_head')),
        }
      }),
      ...(producers ? { producers } : {}),
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
    if (this.closed) throw closedError('producer')
    const s = this.#shared
    if (s === undefined) throw new RingbridgeError('ERR_RINGBRIDGE_INVALID_ARGUMENT', "producer(): launch with producers: 'shared' to share the input ring")
    const { port1, port2 } = new MessageChannel()
    // A producer that publishes to a parked cpu kernel asks its owner to wake it (D2).
    port1.on('message', () => this.#host.runner.wake())
    port1.unref()
    return producerHandle(s.buffer, s.claim, s.base, s.inputOffset, this.capacity, this.#in.slotSize, this.#typeId, this.#input, port2)
  }

  /** The fault that ended the kernel (a trapping GPU handler), if one did. */
  get fault(): Error | undefined {
    return this.#fault
  }

  /** A JS handler's HANDLER_FAULT error with the handler's own exception added ({@link WorkerRunner.explain}). */
  #explain(e: Error): Error {
    return this.#worker === undefined ? e : this.#worker.explain(e)
  }

  /** Polls the output ring for request `id`'s reply for at most `#spinMs`. */
  #spinFor(id: number): void {
    const end = performance.now() + this.#spinMs
    while (this.#inbox.pending.has(id) && performance.now() < end) {
      if (this.#out.available(1) > 0) this.#host.pump()
    }
  }

  #checkOpen(what: string): void {
    if (this.closed) throw closedError(what)
    if (this.#shared !== undefined && what !== 'activate' && what !== 'deactivate') {
      throw new RingbridgeError('ERR_RINGBRIDGE_INVALID_ARGUMENT', `${what}: this kernel's input is shared by producers (producers: 'shared'): send through a RingProducer from kernel.producer()`)
    }
  }

  async #terminate(mode: TerminateMode): Promise<TerminateReport<TIn>> {
    const host = this.#host
    // Already stopped by dispose(): its report says what it abandoned.
    if (host.closed) return this.#undelivered
    host.terminating = true
    // `abandon` refuses the messages still waiting for room behind a full send queue (their
    // send()/request() never resolved); `drain` delivers them, like the queue itself.
    if (mode === 'abandon') this.#outbox.rejectBlocked(closedError)
    // A nextReserve() cannot reserve any more (reserve() throws CLOSED from now on).
    this.#outbox.rejectRoomWaiter(closedError)
    try {
      if (mode === 'drain') {
        // A paused kernel takes nothing, so the send queue would never flush: drain overrides
        // pause, as the kernel does for the ring (dispatch.rs).
        host.setActive(true)
        await host.until(() => !this.#outbox.ahead || this.state === 'terminated' || this.#hostStuck(), 'terminate (flushing the send queue)')
      }
      await host.terminateStages(mode, () => this.#hostStuck())
    } catch (e) {
      // The kernel did not stop in time: abandon it (join stops it for certain) and report.
      host.abandonAll()
      if ((e as RingbridgeError).code !== 'ERR_RINGBRIDGE_TIMEOUT') throw e
    }
    let joinError: unknown
    try {
      await host.runner.joinAsync()
    } catch (e) {
      joinError = e
    }
    // dispose() may have finished it meanwhile.
    if (host.closed) return this.#undelivered
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
    const host = this.#host
    let fault: Error | undefined
    try {
      if (joined === undefined) host.runner.join()
      else if (joined.error !== undefined) throw joined.error
    } catch (e) {
      fault = fromNative(e)
    } finally {
      this.#fault = fault
      const ended = (what: string) => fault ?? closedError(what)
      this.#inbox.drain()
      const head = host.cb.load64('input_head')
      const end = this.#shared ? host.cb.load64('input_tail') : this.#in.published
      const undelivered = this.#outbox.undelivered(head, end, this.#shared !== undefined)
      host.closed = true
      host.announce(0)
      this.#onClosed?.()
      this.#outbox.rejectBlocked(ended)
      this.#inbox.failAll(ended)
      host.rejectStateWaiters(ended)
      this.#undelivered = { mode, processed: host.cb.load64('messages_processed'), undelivered, ...(fault ? { fault } : {}) }
    }
    return this.#undelivered
  }

  #undelivered!: TerminateReport<TIn>
  #fault: Error | undefined
}
