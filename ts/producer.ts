/**
 * `RingProducer`: one of several producers sharing a kernel's input ring — typically one per
 * worker thread — with no lock on the hot path (spec §6, I7).
 *
 * The input ring stays single-consumer and its `tail` keeps one meaning (everything below it is
 * written), so the kernel side is unchanged on every backend. The producers share one more word,
 * `claim`, in a SharedArrayBuffer of their own:
 * 1. **claim** — `compareExchange(claim, c, c + k)` where `k` is at most the room seen
 *    (`capacity - (c - input_head)`): a producer owns positions `[c, c + k)` and only claims slots
 *    that are free, so it never waits for room while holding a claim;
 * 2. **write** its frames into those slots (plain stores: nobody else writes them);
 * 3. **publish in claim order** — wait until `input_tail == c` (every earlier claimant has
 *    published), then store `input_tail = c + k` (release: seq_cst `Atomics.store`, P4).
 * A producer waits only in step 3, for earlier claimants that are between their claim and their
 * publish (a few frame writes): no mutex is held, and a producer that is slow to publish delays
 * later ones but never corrupts or loses their frames.
 * @module
 */
import type { MessagePort } from 'node:worker_threads'

import { describeSchema, schemaFrom, type Schema, type SchemaDescriptor } from './codec'
import { RingbridgeError, badOption } from './errors'
import { ControlBlockView, FRAME_HEADER_BYTES, writeFrameHeader } from './ring'

/**
 * What a producer needs to attach: plain data plus SharedArrayBuffers and a port, so it can be posted to a worker.
 * @example
 * ```ts
 * const handle: ProducerHandle = kernel.producer()
 * new Worker('./producer.js', { workerData: handle, transferList: [handle.wake] })
 * ```
 */
export interface ProducerHandle {
  /** The kernel's shared memory. */
  readonly buffer: SharedArrayBuffer
  /** The shared `claim` word (8 bytes). */
  readonly claim: SharedArrayBuffer
  /** Region offset inside `buffer`. */
  readonly base: number
  /** Offset of the input slot array from the region's start. */
  readonly inputOffset: number
  /** Input ring capacity. */
  readonly capacity: number
  /** Input slot bytes. */
  readonly slotSize: number
  /** Type id written in every frame. */
  readonly typeId: number
  /** The input schema, as data. */
  readonly input: SchemaDescriptor
  /** Where to ask the kernel's owner to wake a parked kernel (cpu backend). */
  readonly wake: MessagePort
}

/** Messages encoded (and claimed) per step of a batch. */
const STAGE_MESSAGES = 256
/** How long a publish waits for earlier claimants before it reports a stuck producer. */
const PUBLISH_LIMIT_MS = 10_000

/**
 * A producer of a kernel's shared input ring: attach one in each worker thread from the handle
 * that {@link RingKernel.producer} gives (post it to the worker, with `handle.wake` in the
 * transfer list).
 * @example
 * ```ts
 * // main thread
 * const k = await rt.launch({ handler: 'echo', input: Sample, output: Sample, producers: 'shared' })
 * const handle = k.producer()
 * new Worker('./producer.js', { workerData: handle, transferList: [handle.wake] })
 * // producer.js (worker)
 * const p = new RingProducer(workerData)
 * await p.sendBatch(samples)
 * ```
 */
export class RingProducer<TIn = unknown> {
  readonly #cb: ControlBlockView
  readonly #claim: BigUint64Array
  readonly #view: DataView
  readonly #slots: number
  readonly #capacity: number
  readonly #slotSize: number
  readonly #typeId: number
  readonly #input: Schema<TIn>
  readonly #wake: MessagePort
  readonly #head: number
  readonly #tail: number
  readonly #tick = new Int32Array(new SharedArrayBuffer(4))
  readonly #bytes: Uint8Array
  readonly #lengths = new Uint32Array(STAGE_MESSAGES)
  #staging = new Uint8Array(0)
  #stagingView = new DataView(this.#staging.buffer)
  #sent = 0

  constructor(handle: ProducerHandle) {
    if (handle === null || typeof handle !== 'object' || !(handle.buffer instanceof SharedArrayBuffer) || !(handle.claim instanceof SharedArrayBuffer)) {
      badOption('RingProducer handle', 'the object RingKernel.producer() returned', handle)
    }
    this.#cb = new ControlBlockView(handle.buffer, handle.base)
    this.#claim = new BigUint64Array(handle.claim, 0, 1)
    this.#view = new DataView(handle.buffer)
    this.#bytes = new Uint8Array(handle.buffer)
    this.#slots = handle.base + handle.inputOffset
    this.#capacity = handle.capacity
    this.#slotSize = handle.slotSize
    this.#typeId = handle.typeId
    this.#input = schemaFrom(handle.input) as Schema<TIn>
    this.#wake = handle.wake
    this.#head = this.#cb.index64('input_head')
    this.#tail = this.#cb.index64('input_tail')
  }

  /** Messages this producer has published. */
  get sent(): number {
    return this.#sent
  }

  /**
   * Sends as many of `messages[from..]` as the ring has room for now, in order, with one claim
   * and one publish. All are encoded straight into their slots.
   * @returns how many were sent (0 when the ring is full).
   * @throws {RingbridgeError} `ERR_RINGBRIDGE_CLOSED` once the kernel is told to stop; `ERR_RINGBRIDGE_TIMEOUT` when an earlier claimant never publishes.
   * @throws {RingbridgeTypeError} `ERR_RINGBRIDGE_INVALID_MESSAGE` for a message that does not fit the schema — checked before anything is claimed, so nothing of this step is sent (earlier steps of a `sendBatch` were).
   */
  trySendBatch(messages: readonly TIn[], from = 0): number {
    if (this.#cb.load32('terminate') !== 0 || this.#cb.load32('state') === 3) {
      throw new RingbridgeError('ERR_RINGBRIDGE_CLOSED', 'RingProducer: the kernel is terminated or terminating')
    }
    const chunk = Math.min(messages.length - from, STAGE_MESSAGES)
    if (chunk <= 0) return 0
    // Encode first, into private staging: a claimed position must be published with a valid
    // frame, so a message that does not fit its schema must fail before anything is claimed.
    const max = this.#slotSize - FRAME_HEADER_BYTES
    if (this.#staging.length < chunk * max) {
      this.#staging = new Uint8Array(STAGE_MESSAGES * max)
      this.#stagingView = new DataView(this.#staging.buffer)
    }
    for (let i = 0; i < chunk; i++) {
      this.#lengths[i] = this.#input.encode(this.#stagingView, i * max, messages[from + i] as TIn, max, `messages[${from + i}]`)
    }
    const u64 = this.#cb.u64
    let pos = 0
    let n = 0
    for (;;) {
      const c = Atomics.load(this.#claim, 0)
      const room = this.#capacity - (Number(c) - Number(Atomics.load(u64, this.#head)))
      n = Math.min(chunk, room)
      if (n <= 0) return 0
      if (Atomics.compareExchange(this.#claim, 0, c, c + BigInt(n)) === c) {
        pos = Number(c)
        break
      }
    }
    const v = this.#view
    for (let i = 0; i < n; i++) {
      const p = pos + i
      const at = this.#slots + (p % this.#capacity) * this.#slotSize
      const length = this.#lengths[i]!
      this.#bytes.set(this.#staging.subarray(i * max, i * max + length), at + FRAME_HEADER_BYTES)
      // The claimed position is the correlation id: unique across every producer of the ring.
      writeFrameHeader(v, at, length, this.#typeId, 0, p)
    }
    this.#publish(pos, n)
    this.#sent += n
    return n
  }

  /** Step 3: publish `[pos, pos + n)` after every earlier claimant, then D2. */
  #publish(pos: number, n: number): void {
    const u64 = this.#cb.u64
    const deadline = Date.now() + PUBLISH_LIMIT_MS
    let spins = 0
    while (Number(Atomics.load(u64, this.#tail)) !== pos) {
      if (++spins > 1000) {
        if (Date.now() > deadline) throw new RingbridgeError('ERR_RINGBRIDGE_TIMEOUT', `RingProducer: an earlier producer has not published position ${pos} for ${PUBLISH_LIMIT_MS} ms`)
        Atomics.wait(this.#tick, 0, 0, 0.05)
      }
    }
    Atomics.store(u64, this.#tail, BigInt(pos + n))
    // D2: our seq_cst store of tail precedes this load; a parked cpu kernel is woken by its owner.
    if (this.#cb.load32('kernel_sleeping') !== 0) this.#wake.postMessage(0)
  }

  /**
   * Sends every message, in order, waiting (without blocking the thread's event loop) while the
   * ring is full.
   * @throws as {@link RingProducer.trySendBatch}; `ERR_RINGBRIDGE_TIMEOUT` after `timeoutMs`
   * without room (default 30000).
   */
  async sendBatch(messages: readonly TIn[], options?: { timeoutMs?: number }): Promise<void> {
    const limit = options?.timeoutMs ?? 30_000
    let done = 0
    let idleSince = Date.now()
    while (done < messages.length) {
      const n = this.trySendBatch(messages, done)
      done += n
      if (n > 0) {
        idleSince = Date.now()
      } else {
        if (Date.now() - idleSince > limit) throw new RingbridgeError('ERR_RINGBRIDGE_TIMEOUT', `RingProducer.sendBatch: no room in the input ring for ${limit} ms`)
        await new Promise((r) => setImmediate(r))
      }
    }
  }
}

/** @internal Builds a handle for a kernel's shared input. */
export function producerHandle(buffer: SharedArrayBuffer, claim: SharedArrayBuffer, base: number, inputOffset: number, capacity: number, slotSize: number, typeId: number, input: Schema<unknown>, wake: MessagePort): ProducerHandle {
  return { buffer, claim, base, inputOffset, capacity, slotSize, typeId, input: describeSchema(input), wake }
}

