/**
 * Chunks: zero-copy batches (docs/PROTOCOL.md §5.3) on the JavaScript side. A {@link SendChunk}
 * is a run of free input slots the caller fills in place and publishes with one `tail` store
 * (W1–W4); a {@link ReceiveChunk} is a run of replies read in place and handed back with one
 * `head` store (R1–R3). After the first lap of equal headers neither costs any per-message work
 * in JavaScript: the caller's payload writes and reads are the only ones.
 *
 * `ChunkWriter` and `ChunkReader` hold the state (the stamping run lives in `InputRing`, since
 * every other write into the input ring must end it); `RingKernel.reserve`, `receiveChunk` and
 * `nextChunk` are the facade's doors to them.
 * @module
 */
import { RingbridgeError, RingbridgeRangeError, badOption, describe } from './errors'
import type { Host } from './host'
import { kernelErrorOf } from './inbox'
import { FLAG, FRAME_HEADER_BYTES, FRAME_WORD, readErrorRecord } from './protocol'
import type { InputRing, OutputRing } from './ring'
import type { CommitOptions, WaitOptions } from './types'
import { abortedError, bound, settleWaiter, waitLimit, type WaitLimit, type Waiter } from './wait'

/** Largest `max` a reservation or receive chunk takes (more than any ring has: 2^24 slots). */
const MAX_WANTED = 2 ** 32

/** Checks the `max` of a reservation or receive chunk. */
function checkMax(what: string, max: number): void {
  if (!Number.isInteger(max) || max < 0 || max > MAX_WANTED) badOption(`${what} max`, `an integer from 0 to 2^32 (how many slots at most)`, max)
}

/** Checks a count given to commit/release against the chunk's `count`. */
function checkCount(what: string, count: number, held: number): void {
  if (!Number.isInteger(count) || count < 0 || count > held) {
    throw new RingbridgeRangeError('ERR_RINGBRIDGE_INVALID_ARGUMENT', `${what}: expected an integer count from 0 to the chunk's ${held} slots, got ${describe(count)}`)
  }
}

/**
 * The slots of a chunk, as views into a ring's own memory: what a {@link SendChunk} and a
 * {@link ReceiveChunk} share. Message `i` of the chunk is slot `i`: in {@link first} for
 * `i < firstCount`, else slot `i - firstCount` of {@link second}.
 * @example
 * ```ts
 * // The byte offset of message i's payload, and the view it lies in, for either kind of chunk.
 * function payloadOf(chunk: ChunkSlots, i: number): [Uint8Array, number] {
 *   return i < chunk.firstCount
 *     ? [chunk.first, i * chunk.slotSize + chunk.payloadOffset]
 *     : [chunk.second, (i - chunk.firstCount) * chunk.slotSize + chunk.payloadOffset]
 * }
 * const [view, at] = payloadOf(kernel.reserve(16), 0)
 * view[at] = 42
 * ```
 */
export abstract class ChunkSlots {
  /** Slots in the chunk: one message each. */
  readonly count: number
  /** Slots in {@link first}; `count - firstCount` are in {@link second}. */
  readonly firstCount: number
  /** Bytes per slot, header included. */
  readonly slotSize: number
  /** Where a payload starts in its slot: after the 16-byte frame header. */
  readonly payloadOffset: number = FRAME_HEADER_BYTES
  /** Most payload bytes a message may have (`slotSize - 16`). */
  readonly maxPayload: number
  /** Slots `[0, firstCount)` of the chunk, whole (`firstCount * slotSize` bytes), in the ring's memory. */
  readonly first: Uint8Array
  /** Slots `[firstCount, count)`, whole, from the ring's start: the part that wrapped (empty if none did). */
  readonly second: Uint8Array

  /** @internal */
  constructor(ring: InputRing | OutputRing, count: number) {
    this.count = count
    this.slotSize = ring.slotSize
    this.maxPayload = ring.maxPayload
    const start = ring.next
    this.firstCount = Math.min(count, ring.capacity - (start % ring.capacity))
    const buffer = ring.bytes.buffer
    this.first = new Uint8Array(buffer, ring.slotAt(start), this.firstCount * this.slotSize)
    this.second = new Uint8Array(buffer, ring.slotsOffset, (count - this.firstCount) * this.slotSize)
  }
}

/**
 * Free input slots reserved by {@link RingKernel.reserve}, to fill in place and send with one
 * {@link SendChunk.commit}. The slots are views into the ring's own memory: `first` holds slots
 * `[0, firstCount)` of the chunk, `second` the rest where the range wraps around the ring's end
 * (empty otherwise). Message `i` is slot `i`; its payload starts at byte {@link payloadOffset}
 * of its slot and may take up to {@link maxPayload} bytes. Write payloads only: `commit` writes
 * the headers.
 *
 * A chunk never committed sends nothing (the next reservation hands out the same slots). It
 * becomes stale when another reservation or any other send on the same kernel comes after it;
 * committing it then throws.
 * @hideconstructor
 * @example
 * ```ts
 * const chunk = kernel.reserve(1024) // a kernel launched with input: bytes(48), slotSize: 64
 * for (let i = 0; i < chunk.count; i++) {
 *   const [slots, j] = i < chunk.firstCount ? [chunk.first, i] : [chunk.second, i - chunk.firstCount]
 *   slots[j * chunk.slotSize + chunk.payloadOffset] = i & 0xff // the payload's first byte
 * }
 * chunk.commit(chunk.count, { size: 48 }) // one publish for all of them
 * ```
 */
export class SendChunk extends ChunkSlots {
  readonly #writer: ChunkWriter
  readonly #generation: number
  #done = false
  /** The size {@link set} wrote payloads with: commit's default. */
  #size: number

  /** @internal */
  constructor(writer: ChunkWriter, ring: InputRing, count: number, generation: number) {
    super(ring, count)
    this.#writer = writer
    this.#generation = generation
    this.#size = ring.maxPayload
  }

  /**
   * Sends the first `count` messages of the chunk with one publish (W3): their headers are made
   * `{ length: size, typeId, flags: 0, correlationId: 0 }` — written only where a slot does not
   * hold that header yet (W4: after a lap of equal headers, none) — then the ring's tail moves
   * past them once and a sleeping kernel is woken. Slots after `count` stay unsent; the next
   * reservation hands them out again. A chunk commits once.
   * @param count how many messages, from the chunk's first slot (default: all of them).
   * @param options `size`: payload bytes of every message (default: the size last given to
   *   {@link set}, else {@link maxPayload}); `typeId` (default: the kernel's `typeId`).
   * @returns `count`.
   * @throws {RingbridgeRangeError} `ERR_RINGBRIDGE_INVALID_ARGUMENT` for a count that is not an integer from 0 to {@link SendChunk.count}, a bad `typeId`, or a chunk already committed or stale; `ERR_RINGBRIDGE_MESSAGE_TOO_LARGE` for a `size` over {@link maxPayload}.
   * @throws {RingbridgeError} `ERR_RINGBRIDGE_CLOSED` after terminate.
   */
  commit(count: number = this.count, options?: CommitOptions): number {
    return this.#writer.commit(this, this.#generation, count, options, this.#size)
  }

  /**
   * Copies payloads packed back to back in `packed` (`size` bytes each) into the chunk's slots,
   * as many as fit both (`min(count, packed.length / size)`), and makes `size` the default of
   * {@link commit}. A convenience: writing straight into {@link first} and {@link second}
   * copies nothing.
   * @returns how many payloads it copied.
   * @throws {RingbridgeRangeError} `ERR_RINGBRIDGE_MESSAGE_TOO_LARGE` when `size` exceeds {@link maxPayload}; `ERR_RINGBRIDGE_INVALID_ARGUMENT` for a bad argument or a chunk already committed or stale.
   */
  set(packed: Uint8Array, size: number): number {
    if (!(packed instanceof Uint8Array)) badOption('set packed', 'a Uint8Array', packed)
    if (!Number.isInteger(size) || size < 1) badOption('set size', 'a positive integer (payload bytes per message)', size)
    this.#writer.check(this, this.#generation, 'set')
    if (size > this.maxPayload) throw tooLarge(size, this.maxPayload)
    const n = Math.min(this.count, Math.floor(packed.length / size))
    for (let i = 0; i < n; i++) {
      const slots = i < this.firstCount ? this.first : this.second
      const at = (i < this.firstCount ? i : i - this.firstCount) * this.slotSize + this.payloadOffset
      slots.set(packed.subarray(i * size, i * size + size), at)
    }
    this.#size = size
    return n
  }

  /**
   * Message `i`'s payload area (all {@link maxPayload} bytes of it) as a view into its slot.
   * Allocates a view per call: hot loops index {@link first} and {@link second} instead.
   * @throws {RingbridgeRangeError} `ERR_RINGBRIDGE_INVALID_ARGUMENT` for an index outside the chunk.
   */
  payload(i: number): Uint8Array {
    if (!(Number.isInteger(i) && i >= 0 && i < this.count)) throw badIndex(i, this.count)
    const slots = i < this.firstCount ? this.first : this.second
    const at = (i < this.firstCount ? i : i - this.firstCount) * this.slotSize + this.payloadOffset
    return slots.subarray(at, at + this.maxPayload)
  }

  /** @internal Marks the chunk committed; false if it was already. */
  markDone(): boolean {
    if (this.#done) return false
    this.#done = true
    return true
  }

  /** @internal Whether the chunk was committed. */
  get done(): boolean {
    return this.#done
  }
}

const tooLarge = (size: number, max: number) => new RingbridgeRangeError('ERR_RINGBRIDGE_MESSAGE_TOO_LARGE', `chunk message size ${size} exceeds the slot payload of ${max} bytes (expected 0 to ${max})`)
const badIndex = (i: number, count: number) => new RingbridgeRangeError('ERR_RINGBRIDGE_INVALID_ARGUMENT', `chunk index: expected an integer from 0 to ${count - 1}, got ${describe(i)}`)

/** @internal The input ring's chunk producer: W1–W4 over the host's ring, publishing as sends do. */
export class ChunkWriter {
  readonly #in: InputRing
  /** H3 + H4 through the outbox (counted as sent), as every send publishes. */
  readonly #publish: () => void
  /** Whether messages wait in the send queue ahead of a new one. */
  readonly #ahead: () => boolean
  readonly #checkOpen: (what: string) => void
  /** Resolves once a slot is free and nothing waits ahead (the outbox's, through the pump). */
  readonly #waitForRoom: (limit: WaitLimit, what: string) => Promise<void>
  readonly #typeId: number

  constructor(input: InputRing, typeId: number, ahead: () => boolean, publish: () => void, checkOpen: (what: string) => void, waitForRoom: (limit: WaitLimit, what: string) => Promise<void>) {
    this.#in = input
    this.#typeId = typeId
    this.#ahead = ahead
    this.#publish = publish
    this.#checkOpen = checkOpen
    this.#waitForRoom = waitForRoom
  }

  /** W1/W2: up to `max` free slots, none when messages are queued ahead (they must not be overtaken). */
  reserve(max: number, what = 'reserve'): SendChunk {
    this.#checkOpen(what)
    checkMax(what, max)
    const ring = this.#in
    const count = this.#ahead() || max === 0 ? 0 : Math.min(max, ring.free(max))
    ring.reserved('a later reserve()')
    return new SendChunk(this, ring, count, ring.generation)
  }

  /** `nextReserve`: a chunk now if a slot is free, else once one is (bounded by `options`). */
  async next(max: number, options: WaitOptions | undefined): Promise<SendChunk> {
    const limit = waitLimit(options)
    if (limit.signal?.aborted) throw abortedError('nextReserve', limit.signal)
    const deadline = limit.timeoutMs === undefined ? undefined : performance.now() + limit.timeoutMs
    for (;;) {
      const now = this.reserve(max, 'nextReserve')
      if (now.count > 0 || max === 0) return now
      // Another send may take the room first: wait again, within what is left of the limit.
      const timeoutMs = deadline === undefined ? undefined : Math.max(0, Math.ceil(deadline - performance.now()))
      await this.#waitForRoom({ timeoutMs, signal: limit.signal }, 'nextReserve')
    }
  }

  /** Throws unless `chunk` (of `generation`) may still be committed. */
  check(chunk: SendChunk, generation: number, what: string): void {
    this.#checkOpen(what)
    if (chunk.done) throw new RingbridgeRangeError('ERR_RINGBRIDGE_INVALID_ARGUMENT', `${what}: this chunk was already committed; reserve() a new one`)
    if (generation !== this.#in.generation) {
      throw new RingbridgeRangeError('ERR_RINGBRIDGE_INVALID_ARGUMENT', `${what}: this chunk is stale: ${this.#in.staleBy} came after it on the same kernel and may use its slots; reserve() again after other sends`)
    }
  }

  /** W3/W4 then H3/H4. */
  commit(chunk: SendChunk, generation: number, count: number, options: CommitOptions | undefined, defaultSize: number): number {
    this.check(chunk, generation, 'commit')
    checkCount('commit count', count, chunk.count)
    let size = defaultSize
    let typeId = this.#typeId
    if (options !== undefined) {
      if (options === null || typeof options !== 'object') badOption('commit options', 'an object { size?, typeId? }', options)
      if (options.size !== undefined) {
        size = options.size
        if (!Number.isInteger(size) || size < 0) badOption('commit size', `an integer from 0 to ${chunk.maxPayload} (payload bytes per message)`, size)
        if (size > chunk.maxPayload) throw tooLarge(size, chunk.maxPayload)
      }
      if (options.typeId !== undefined) {
        typeId = options.typeId
        if (!Number.isInteger(typeId) || typeId < 0 || typeId > 0xffff) badOption('commit typeId', 'an integer from 0 to 65535', typeId)
      }
    }
    chunk.markDone()
    if (count === 0) return 0
    this.#in.commitChunk(count, size, typeId)
    this.#publish()
    return count
  }
}

/**
 * Replies read in place by {@link RingKernel.receiveChunk} or {@link RingKernel.nextChunk}: up
 * to `max` frames as views of whole output slots (`first` holds `[0, firstCount)`, `second` the
 * rest where the range wraps; empty otherwise). Reply `i` is slot `i`: its frame header at the
 * slot's start, its payload at {@link payloadOffset}. The per-reply accessors read the header
 * without allocating. The slots stay the chunk's — the kernel cannot reuse them — until
 * {@link ReceiveChunk.release}; at most one chunk is held at a time.
 *
 * Every frame is there as the kernel wrote it: error frames (`isErrorAt`), multi-reply frames
 * (`flagsAt(i) & 2`), and under `producers: 'shared'` skip frames (error frames whose code is
 * `SKIPPED`) included.
 * @hideconstructor
 * @example
 * ```ts
 * const chunk = kernel.receiveChunk(4096)
 * let sum = 0
 * for (let i = 0; i < chunk.count; i++) {
 *   if (chunk.isErrorAt(i)) throw chunk.errorAt(i)
 *   const [slots, j] = i < chunk.firstCount ? [chunk.first, i] : [chunk.second, i - chunk.firstCount]
 *   sum += slots[j * chunk.slotSize + chunk.payloadOffset]! // the reply's first byte
 * }
 * chunk.release() // hands every slot back with one store
 * ```
 */
export class ReceiveChunk extends ChunkSlots {
  readonly #reader: ChunkReader
  readonly #ring: OutputRing
  readonly #u32: Uint32Array
  /** First word of slot 0 of `first`, and of `second`, in `#u32`. */
  readonly #w1: number
  readonly #w2: number
  readonly #slotWords: number
  #held: boolean

  /** @internal */
  constructor(reader: ChunkReader, ring: OutputRing, count: number) {
    super(ring, count)
    this.#reader = reader
    this.#ring = ring
    this.#u32 = ring.u32
    this.#w1 = this.first.byteOffset / 4
    this.#w2 = ring.slotsOffset / 4
    this.#slotWords = this.slotSize / 4
    this.#held = count > 0
  }

  /** First header word of reply `i`. */
  #word(i: number): number {
    if (!this.#held || !(i >= 0 && i < this.count && Number.isInteger(i))) this.#badIndex(i)
    return i < this.firstCount ? this.#w1 + i * this.#slotWords : this.#w2 + (i - this.firstCount) * this.#slotWords
  }

  #badIndex(i: number): never {
    if (!this.#held) throw new RingbridgeRangeError('ERR_RINGBRIDGE_INVALID_ARGUMENT', 'receive chunk: it was released (its slots may hold new replies); take a new chunk')
    throw badIndex(i, this.count)
  }

  /** Reply `i`'s payload length, as its header says (over {@link maxPayload}: a corrupt frame, see {@link isErrorAt}). */
  lengthAt(i: number): number {
    return this.#u32[this.#word(i) + FRAME_WORD.length]!
  }

  /** Reply `i`'s message type id. */
  typeIdAt(i: number): number {
    return this.#u32[this.#word(i) + FRAME_WORD.typeIdAndFlags]! & 0xffff
  }

  /** Reply `i`'s header flags (`1`: error frame, `2`: multi-reply frame). */
  flagsAt(i: number): number {
    return this.#u32[this.#word(i) + FRAME_WORD.typeIdAndFlags]! >>> 16
  }

  /** Reply `i`'s correlation id: 0 for messages sent by a chunk, the request's id otherwise (exact below 2^53). */
  correlationIdAt(i: number): number {
    const w = this.#word(i)
    return this.#u32[w + FRAME_WORD.correlationLow]! + this.#u32[w + FRAME_WORD.correlationHigh]! * 0x100000000
  }

  /** Whether reply `i` is not a plain reply: an error frame, or a corrupt one (a length over {@link maxPayload}). {@link errorAt} says which. */
  isErrorAt(i: number): boolean {
    const w = this.#word(i)
    return ((this.#u32[w + FRAME_WORD.typeIdAndFlags]! >>> 16) & FLAG.error) !== 0 || this.#u32[w + FRAME_WORD.length]! > this.maxPayload
  }

  /**
   * Reply `i`'s error as `receive()` would throw it: `ERR_RINGBRIDGE_KERNEL_ERROR` for an error
   * frame (its `details` hold the kernel's `kernelCode`, `kernelError` name and `detail`),
   * `ERR_RINGBRIDGE_PROTOCOL` for a corrupt frame; `undefined` for a plain reply.
   */
  errorAt(i: number): RingbridgeError | undefined {
    const w = this.#word(i)
    const length = this.#u32[w + FRAME_WORD.length]!
    const id = this.correlationIdAt(i)
    if (length > this.maxPayload) {
      return new RingbridgeError('ERR_RINGBRIDGE_PROTOCOL', `reply frame ${id} has length ${length}, over the slot payload of ${this.maxPayload}`, { details: { length, max: this.maxPayload } })
    }
    if (!(this.flagsAt(i) & FLAG.error)) return undefined
    const { code, detail } = readErrorRecord(this.#ring.view, w * 4 + FRAME_HEADER_BYTES, length)
    return kernelErrorOf(id, code, detail)
  }

  /**
   * Reply `i`'s payload (`lengthAt(i)` bytes) as a view into its slot, valid until release.
   * Allocates a view per call: hot loops index {@link first} and {@link second} instead.
   */
  payload(i: number): Uint8Array {
    const w = this.#word(i)
    const length = Math.min(this.#u32[w + FRAME_WORD.length]!, this.maxPayload)
    const at = w * 4 + FRAME_HEADER_BYTES
    return this.#ring.bytes.subarray(at, at + length)
  }

  /**
   * Hands the first `count` replies' slots back to the kernel with one store of the ring's head
   * (R3), waking a kernel that waits for room. Replies after `count` stay in the ring for the
   * next chunk. A chunk releases once; its views must not be read afterwards.
   * @param count how many replies, from the first (default: all).
   * @throws {RingbridgeRangeError} `ERR_RINGBRIDGE_INVALID_ARGUMENT` for a count that is not an integer from 0 to {@link ReceiveChunk.count}, or a chunk already released.
   */
  release(count: number = this.count): void {
    if (this.count === 0 && count === 0) return
    if (!this.#held) throw new RingbridgeRangeError('ERR_RINGBRIDGE_INVALID_ARGUMENT', 'release: this receive chunk was already released')
    checkCount('release count', count, this.count)
    this.#held = false
    this.#reader.release(this, count)
  }
}

/** A `nextChunk()` waiting for replies. */
type ChunkWaiter = Waiter<ReceiveChunk> & { max: number }

/** @internal The output ring's chunk consumer: R1–R3, one chunk held at a time. */
export class ChunkReader {
  readonly #out: OutputRing
  readonly #host: Host
  readonly #onRelease: (count: number) => void
  /** The chunk handed out and not yet released. */
  held: ReceiveChunk | undefined
  /** The `nextChunk()` waiting for replies, if one is. */
  waiter: ChunkWaiter | undefined

  constructor(output: OutputRing, host: Host, onRelease: (count: number) => void) {
    this.#out = output
    this.#host = host
    this.#onRelease = onRelease
  }

  /** Whether replies must stay in the ring for a chunk (one is held, or awaited). */
  get claims(): boolean {
    return this.held !== undefined || this.waiter !== undefined
  }

  /** R1/R2: up to `max` replies ready now. */
  take(max: number, what: string): ReceiveChunk {
    checkMax(what, max)
    if (this.held !== undefined) throw heldError(what, this.held.count)
    const out = this.#out
    const count = max === 0 ? 0 : Math.min(max, out.available(max))
    const chunk = new ReceiveChunk(this, out, count)
    if (count > 0) this.held = chunk
    return chunk
  }

  /** R3 then H6's D2. */
  release(chunk: ReceiveChunk, count: number): void {
    if (this.held === chunk) this.held = undefined
    this.#out.next += count
    this.#onRelease(count)
    this.#host.release()
    // A terminate in progress waits for the ring to drain, which waited for this chunk.
    if (this.#host.terminating) this.#host.pump()
  }

  /** `nextChunk`: a chunk now if replies are ready, else once they are (bounded by `options`). */
  next(max: number, options: WaitOptions | undefined, closed: () => boolean): Promise<ReceiveChunk> {
    const limit = waitLimit(options)
    if (limit.signal?.aborted) throw abortedError('nextChunk', limit.signal)
    if (this.waiter !== undefined) throw new RingbridgeRangeError('ERR_RINGBRIDGE_INVALID_ARGUMENT', 'nextChunk: another nextChunk() is waiting already; await it first (one receive chunk at a time)')
    const now = this.take(max, 'nextChunk')
    if (now.count > 0 || max === 0) return Promise.resolve(now)
    if (closed()) throw new RingbridgeError('ERR_RINGBRIDGE_CLOSED', 'nextChunk: the kernel is terminated and no reply is left in the ring')
    return new Promise<ReceiveChunk>((resolve, reject) => {
      const w: ChunkWaiter = { resolve, reject, max }
      if (limit.timeoutMs !== undefined || limit.signal !== undefined) {
        w.disarm = bound(limit, (why) => {
          if (this.waiter !== w) return
          this.waiter = undefined
          reject(why === 'abort' ? abortedError('nextChunk', limit.signal!) : new RingbridgeError('ERR_RINGBRIDGE_TIMEOUT', `nextChunk: no reply within ${limit.timeoutMs} ms`))
          this.#host.pump()
        })
      }
      this.waiter = w
      this.#host.pump()
    })
  }

  /** Hands the waiting `nextChunk()` its chunk once replies are ready (the pump's deliver step). */
  serve(): void {
    const w = this.waiter
    if (w === undefined || this.held !== undefined || this.#out.available(1) === 0) return
    this.waiter = undefined
    settleWaiter(w, { ok: true, value: this.take(w.max, 'nextChunk') })
  }

  /** Whether {@link serve} would hand out a chunk now. */
  servable(): boolean {
    return this.waiter !== undefined && this.held === undefined && this.#out.available(1) > 0
  }

  /** The kernel ended: a waiting `nextChunk()` fails with `error` (when no reply is left for it). */
  fail(error: Error): void {
    this.serve()
    const w = this.waiter
    this.waiter = undefined
    if (w) settleWaiter(w, { ok: false, error })
  }
}

const heldError = (what: string, count: number) =>
  new RingbridgeRangeError('ERR_RINGBRIDGE_INVALID_ARGUMENT', `${what}: a receive chunk of ${count} replies is still held; release() it first (one receive chunk at a time)`)
