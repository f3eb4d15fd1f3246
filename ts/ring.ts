/**
 * The host's ends of a region's two rings, in JavaScript, over the kernel's shared memory (a
 * SharedArrayBuffer, or the kernel host's mapping) (spec §5). `InputRing` is the producer of the input ring (owns `input.tail`), `OutputRing` the
 * consumer of the output ring (owns `output.head`). Both cache the opposite index and re-read it
 * only when the ring looks full or empty; both publish once per batch.
 *
 * `Atomics.load` / `Atomics.store` are sequentially consistent, which covers the release and
 * acquire orderings the spec asks of the host (P2, P4, C2, C4) and the fences of the doorbell
 * handshakes (D2, H7).
 * @internal
 * @module
 */
import type { Schema } from './codec'
import { RingbridgeError } from './errors'
import { CONTROL_BLOCK_BYTES, FLAG, FRAME_HEADER_BYTES, TERMINATE, FRAME_WORD, fieldOffset, frameFlagsOfWords, readFrameHeader, writeFrameHeader, writeFrameHeaderWords, type FrameHeader } from './protocol'

/** Positions stay exact as JS numbers up to 2^53. */
const POSITION_LIMIT = Number.MAX_SAFE_INTEGER

function positionLimit(): never {
  throw new RingbridgeError('ERR_RINGBRIDGE_PROTOCOL', 'input ring position reached 2^53; relaunch the kernel')
}

/** What made chunks reserved before a per-message write stale (the stale-chunk error names it). */
const STAGED = 'a message sent on this kernel (send, trySend, request, sendBatch or the send queue)'

/** What stages a message: a schema's encoder. */
type Encoder<T> = Pick<Schema<T>, 'encode'>

/** What reads a reply: a schema's decoder. */
type Decoder<T> = Pick<Schema<T>, 'decode'>

/** 32-bit and 64-bit atomic views of one control block. */
export class ControlBlockView {
  readonly #u32: Int32Array
  readonly #u64: BigUint64Array

  constructor(buffer: ArrayBufferLike, regionOffset: number) {
    this.#u32 = new Int32Array(buffer, regionOffset, CONTROL_BLOCK_BYTES / 4)
    this.#u64 = new BigUint64Array(buffer, regionOffset, CONTROL_BLOCK_BYTES / 8)
  }

  /** Atomically reads a 32-bit word. */
  load32(name: string): number {
    return Atomics.load(this.#u32, fieldOffset(name) >> 2) >>> 0
  }

  /**
   * The command the `terminate` word holds (spec §9): DRAIN or ABANDON, else NONE — a value
   * that is no command (a buggy peer's store) stops nothing, as every kernel reads it.
   */
  terminateCommand(): number {
    const t = this.load32('terminate')
    return t === TERMINATE.drain || t === TERMINATE.abandon ? t : TERMINATE.none
  }

  /** Atomically writes a 32-bit word (seq_cst). */
  store32(name: string, value: number): void {
    Atomics.store(this.#u32, fieldOffset(name) >> 2, value | 0)
  }

  /** Atomically reads a 64-bit word as a number (exact below 2^53). */
  load64(name: string): number {
    return Number(Atomics.load(this.#u64, fieldOffset(name) >> 3))
  }

  /** Index of a 32-bit word, for hot loops. */
  index32(name: string): number {
    return fieldOffset(name) >> 2
  }

  /** Index of a 64-bit word, for hot loops. */
  index64(name: string): number {
    return fieldOffset(name) >> 3
  }

  /** The raw 32-bit view. */
  get u32(): Int32Array {
    return this.#u32
  }

  /** The raw 64-bit view. */
  get u64(): BigUint64Array {
    return this.#u64
  }
}

/** Shape and place of one ring inside the shared memory. */
export interface RingPlace {
  /** Byte offset of the slot array from the buffer's start. */
  slotsOffset: number
  capacity: number
  slotSize: number
}

abstract class RingEnd {
  readonly view: DataView
  /** 32-bit words over the whole buffer (word `i` at byte `4 i`). */
  readonly u32: Uint32Array
  /** Bytes over the whole buffer. */
  readonly bytes: Uint8Array
  readonly capacity: number
  readonly slotSize: number
  readonly maxPayload: number
  protected readonly mask: number
  protected readonly slots: number

  constructor(buffer: ArrayBufferLike, place: RingPlace) {
    this.view = new DataView(buffer)
    // Division, not `>> 2`: a region of 2 GiB or more has byte lengths and offsets past int32.
    this.u32 = new Uint32Array(buffer, 0, Math.floor(buffer.byteLength / 4))
    this.bytes = new Uint8Array(buffer)
    this.capacity = place.capacity
    this.slotSize = place.slotSize
    this.maxPayload = place.slotSize - FRAME_HEADER_BYTES
    this.mask = place.capacity - 1
    this.slots = place.slotsOffset
  }

  /** Byte offset of the slot holding `position`. */
  slotAt(position: number): number {
    // `& mask` on a number above 2^31 would go through int32: use modulo (capacity is a power of two).
    return this.slots + (position % this.capacity) * this.slotSize
  }

  /**
   * A batch loop's walk over the slots, in 32-bit words: the word of `position`'s slot, the first
   * slot's, one past the last slot's, and a slot's words. Slots are 16-aligned, so each is an
   * exact integer; a loop steps its index by a slot and wraps it, where a byte offset computed
   * from the position per frame costs a modulo and a float division.
   */
  protected slotWalk(position: number): [at: number, first: number, end: number, step: number] {
    const step = this.slotSize / 4
    const first = this.slots / 4
    return [this.slotAt(position) / 4, first, first + this.capacity * step, step]
  }

  /** Byte offset of the first slot (position 0 mod capacity). */
  get slotsOffset(): number {
    return this.slots
  }
}

/** The input ring's producer end. */
export class InputRing extends RingEnd {
  readonly #cb: ControlBlockView
  readonly #head: number
  readonly #tail: number
  /** Next position to write, staged frames included. */
  next: number
  published: number
  #cachedHead: number
  /**
   * Bumped by every write into the ring ({@link stageMessage}, {@link stageMany}, {@link stageRaw},
   * {@link stageFrames}, {@link commitChunk})
   * and by every chunk reservation: a chunk reserved under an older generation is stale
   * (PROTOCOL.md §5.3); {@link staleBy} names what made it so.
   */
  generation = 0
  /** What bumped {@link generation} last, for the stale-chunk error. */
  staleBy = ''
  // W4 header stamping (PROTOCOL.md §5.3): the header last stamped by a chunk commit and the
  // first position of the unbroken run [stampedFrom, next) stamped with it. `#stampLength` -1:
  // no run (a per-message stage wrote into the ring since).
  #stampLength = -1
  #stampTypeId = -1
  #stampedFrom = 0
  /** Headers written by chunk commits (instrumentation: tests check the elision with it). */
  headersStamped = 0

  constructor(buffer: ArrayBufferLike, place: RingPlace, cb: ControlBlockView) {
    super(buffer, place)
    this.#cb = cb
    this.#head = cb.index64('input_head')
    this.#tail = cb.index64('input_tail')
    this.next = this.published = Number(Atomics.load(cb.u64, this.#tail))
    this.#cachedHead = Number(Atomics.load(cb.u64, this.#head))
  }

  /** Free slots, re-reading `head` (P2) only when the cache shows fewer than `wanted`. */
  free(wanted = 1): number {
    let n = this.capacity - (this.next - this.#cachedHead)
    if (n < wanted) {
      this.#cachedHead = Number(Atomics.load(this.#cb.u64, this.#head))
      n = this.capacity - (this.next - this.#cachedHead)
      // A head behind `next - capacity` or ahead of `next` (a corrupt or hostile kernel host)
      // reads as full: never write slots the consumer may own (I4; as protocol::free).
      if (n < 0 || n > this.capacity) n = 0
    }
    return n
  }

  /**
   * Stages one frame: `codec` encodes `message` straight into the slot's payload, the header
   * written as words (no closure per message). A throw from `encode` stages nothing. The caller
   * checked {@link free}.
   */
  stageMessage<T>(typeId: number, correlationId: number, codec: Encoder<T>, message: T, path?: string): void {
    if (this.next >= POSITION_LIMIT) positionLimit()
    const at = this.slotAt(this.next)
    this.touched(STAGED)
    const length = codec.encode(this.view, at + FRAME_HEADER_BYTES, message, this.maxPayload, path)
    writeFrameHeaderWords(this.u32, at / 4, length, typeId, correlationId)
    this.next++
  }

  /**
   * Stages `messages[0..count)` as frames `firstId…`: {@link stageMessage} for a batch, with
   * the per-batch work done once (the position limit, the stale-chunk bump) and the slot offset
   * stepped instead of computed from the position — half the cost of a message on a 3-field
   * struct. `path.at(i)` names message `i` in errors. A throw from `encode` stages nothing of the
   * batch (`next` moves only at the end; the slots written are past `next`, still the host's).
   * The caller checked {@link free} for `count`.
   */
  stageMany<T>(typeId: number, firstId: number, codec: Encoder<T>, messages: readonly T[], count: number, path: { at(i: number): string }): void {
    if (count <= 0) return
    if (this.next + count > POSITION_LIMIT) positionLimit()
    this.touched(STAGED)
    const view = this.view
    const u32 = this.u32
    const max = this.maxPayload
    const [start, first, end, slotWords] = this.slotWalk(this.next)
    let w = start
    for (let i = 0; i < count; i++) {
      const length = codec.encode(view, w * 4 + FRAME_HEADER_BYTES, messages[i] as T, max, path.at(i))
      writeFrameHeaderWords(u32, w, length, typeId, firstId + i)
      w += slotWords
      if (w === end) w = first
    }
    this.next += count
  }

  /**
   * Something other than a chunk commit is about to write slots (or a chunk was reserved):
   * chunks reserved before are stale, and the stamped run ends (W4: any other write restarts it).
   */
  touched(why: string): void {
    this.reserved(why)
    this.#stampLength = -1
  }

  /** A chunk was reserved: chunks reserved before are stale (the slots are not written, so the stamped run goes on). */
  reserved(why: string): void {
    this.generation++
    this.staleBy = why
  }

  /**
   * W3/W4 of a chunk (PROTOCOL.md §5.3): makes the headers of `[next, next + count)`
   * `{length, typeId, flags 0, correlation id 0}` and stages them (the caller publishes). A slot
   * whose position is a whole lap or more after the start of the current run of this same header
   * holds it already and is not written, so a steady stream of equal headers writes none after
   * its first lap. The caller checked `count` against the reservation and `length` against the
   * slot payload.
   */
  commitChunk(count: number, length: number, typeId: number): void {
    const start = this.next
    const end = start + count
    if (end > POSITION_LIMIT) positionLimit()
    let to = end
    if (length === this.#stampLength && typeId === this.#stampTypeId) {
      // The run [stampedFrom, start) holds this header, so the slot of every position a lap or
      // more after stampedFrom does already: only [start, stampedFrom + capacity) needs it.
      to = Math.min(end, this.#stampedFrom + this.capacity)
    } else {
      this.#stampLength = length
      this.#stampTypeId = typeId
      this.#stampedFrom = start
    }
    if (start < to) {
      const u32 = this.u32
      for (let p = start; p < to; p++) writeFrameHeaderWords(u32, this.slotAt(p) / 4, length, typeId, 0)
      this.headersStamped += to - start
    }
    this.generation++
    this.staleBy = 'its commit'
    this.next = end
  }

  /**
   * Stages `count` raw payloads of `size` bytes from `packed` (checked by the caller: they fit
   * the slots and the ring has room), with ids from `firstId`: the packed streaming path, with
   * no per-message closure or allocation.
   */
  stageRaw(typeId: number, firstId: number, packed: Uint8Array, size: number, count: number): void {
    if (count <= 0) return
    if (this.next + count > POSITION_LIMIT) positionLimit()
    this.touched('trySendPacked')
    const u32 = this.u32
    const bytes = this.bytes
    for (let i = 0; i < count; i++) {
      const at = this.slotAt(this.next)
      const w = at / 4 // slots are 16-aligned in a page-aligned region: exact (and past 2^31, unlike `>> 2`)
      writeFrameHeaderWords(u32, w, size, typeId, firstId + i)
      bytes.set(packed.subarray(i * size, i * size + size), at + FRAME_HEADER_BYTES)
      this.next++
    }
  }

  /**
   * Stages `count` frames (headers written) laid out a slot apart in `frames` from byte `at`,
   * `size` bytes of each copied (the whole slot when `count` > 1): one copy per contiguous span
   * of the ring (two where it wraps). The send queue's flush; the caller checked {@link free}.
   */
  stageFrames(frames: Uint8Array, at: number, count: number, size: number): void {
    if (this.next + count > POSITION_LIMIT) positionLimit()
    this.touched(STAGED)
    const slot = this.slotSize
    let done = 0
    while (done < count) {
      const index = (this.next + done) % this.capacity
      const span = Math.min(count - done, this.capacity - index)
      const from = at + done * slot
      this.bytes.set(frames.subarray(from, from + (span - 1) * slot + size), this.slots + index * slot)
      done += span
    }
    this.next += count
  }

  /** Frames staged and not yet published. */
  get staged(): number {
    return this.next - this.published
  }

  /** P4: makes staged frames visible with one store of `tail`. Returns whether it stored. */
  publish(): boolean {
    if (this.next === this.published) return false
    Atomics.store(this.#cb.u64, this.#tail, BigInt(this.next))
    this.published = this.next
    return true
  }

  /** Reads frame `position` back (for reporting undelivered messages after the kernel ended). */
  frameAt(position: number): FrameHeader & { offset: number } {
    const at = this.slotAt(position)
    return { ...readFrameHeader(this.view, at), offset: at + FRAME_HEADER_BYTES }
  }
}

/** One reply frame, read in place. */
export interface FrameRef {
  length: number
  typeId: number
  flags: number
  correlationId: number
  /** Byte offset of the payload in the shared memory. */
  offset: number
  /** The length field found when it overruns the slot (the frame is unusable), else 0. */
  corrupt: number
}

/** The output ring's consumer end. */
export class OutputRing extends RingEnd {
  readonly #cb: ControlBlockView
  readonly #head: number
  readonly #tail: number
  next: number
  released: number
  #cachedTail: number

  constructor(buffer: ArrayBufferLike, place: RingPlace, cb: ControlBlockView) {
    super(buffer, place)
    this.#cb = cb
    this.#head = cb.index64('output_head')
    this.#tail = cb.index64('output_tail')
    this.next = this.released = Number(Atomics.load(cb.u64, this.#head))
    this.#cachedTail = Number(Atomics.load(cb.u64, this.#tail))
  }

  /** Published frames not yet consumed, re-reading `tail` (C2) only when needed. */
  available(wanted = 1): number {
    let n = this.#cachedTail - this.next
    if (n < wanted) {
      this.#cachedTail = Number(Atomics.load(this.#cb.u64, this.#tail))
      n = this.#cachedTail - this.next
      // More than a ring's worth (a corrupt tail) is no more than the slots there are.
      if (n > this.capacity) n = this.capacity
    }
    return n
  }

  /**
   * The next frame, without consuming it. The caller checked {@link available}. A frame whose
   * length overruns its slot comes back with `corrupt` set (and `length` 0) so the caller can
   * skip it: throwing here would leave it in place and wedge the ring.
   */
  peek(): FrameRef {
    const at = this.slotAt(this.next)
    const h = readFrameHeader(this.view, at)
    const corrupt = h.length > this.maxPayload
    return {
      length: corrupt ? 0 : h.length,
      typeId: h.typeId,
      flags: h.flags,
      correlationId: h.correlationId,
      offset: at + FRAME_HEADER_BYTES,
      corrupt: corrupt ? h.length : 0,
    }
  }

  /**
   * Copies the payloads of the next `count` frames (checked available) into `into`, `size`
   * bytes apart, consuming them; stops before an error frame, a corrupt frame or one longer
   * than `size`. Returns how many it consumed.
   */
  copyPayloads(into: Uint8Array, size: number, count: number): number {
    const u32 = this.u32
    const bytes = this.bytes
    const flagError = FLAG.error
    for (let i = 0; i < count; i++) {
      const at = this.slotAt(this.next)
      const w = at / 4
      const length = u32[w + FRAME_WORD.length]!
      if (length > size || length > this.maxPayload || frameFlagsOfWords(u32, w) & flagError) return i
      into.set(bytes.subarray(at + FRAME_HEADER_BYTES, at + FRAME_HEADER_BYTES + length), i * size)
      this.next++
    }
    return count
  }

  /**
   * The streaming fast path: decodes up to `count` consecutive plain frames with `codec`,
   * appends the values to `out` and consumes them, stepping the slot offset instead of
   * computing it per frame, and building no {@link FrameRef}. A plain frame is an ordinary
   * reply: no error or multi-reply flag, a length that fits the slot, and a correlation id
   * `isClaimed` (when given) does not claim. Stops, leaving the frame in place, at the first
   * frame that is not plain or that `codec.decode` throws on (the general path turns it into the
   * error reply it is). Returns how many it consumed. The caller checked {@link available}.
   */
  takePlain<T>(codec: Decoder<T>, out: T[], count: number, isClaimed: ((correlationId: number) => boolean) | undefined): number {
    const u32 = this.u32
    const view = this.view
    const max = this.maxPayload
    const [start, first, end, slotWords] = this.slotWalk(this.next)
    let w = start
    // `out` given its largest length first, then trimmed to what was taken (V8 marks it holey;
    // no hole is left): a push per reply regrew and copied the array as it filled, which
    // measured 9–12 ns a reply against 5.5 ns (decode included, 8192 replies, 3-field struct).
    const base = out.length
    out.length = base + count
    let n = 0
    for (; n < count; n++) {
      const length = u32[w + FRAME_WORD.length]!
      if (length > max || frameFlagsOfWords(u32, w) !== 0) break
      if (isClaimed !== undefined && isClaimed(u32[w + FRAME_WORD.correlationLow]! + u32[w + FRAME_WORD.correlationHigh]! * 4294967296)) break
      let value: T
      try {
        value = codec.decode(view, w * 4 + FRAME_HEADER_BYTES, length)
      } catch {
        break
      }
      out[base + n] = value
      w += slotWords
      if (w === end) w = first
    }
    if (n < count) out.length = base + n // no holes left behind
    this.next += n
    return n
  }

  /** Consumes the frame returned by the last {@link peek}. */
  advance(): void {
    this.next++
  }

  /** C4: hands consumed slots back with one store of `head`. Returns whether it stored. */
  release(): boolean {
    if (this.next === this.released) return false
    Atomics.store(this.#cb.u64, this.#head, BigInt(this.next))
    this.released = this.next
    return true
  }
}
