/**
 * `RingProducer`: one of several producers sharing a kernel's input ring — typically one per
 * worker thread — with no lock on the hot path (spec §6, I7; §15 for what follows).
 *
 * The input ring stays single-consumer and its `tail` keeps one meaning (everything below it is
 * written), so the kernel side is unchanged on every backend. The producers share one more word,
 * `claim`, in a SharedArrayBuffer of their own, and a small block of shared state beside it
 * (claim records, a rescue lock, counters):
 * 1. **claim** — `compareExchange(claim, c, c + k)` where `k` is at most the room seen
 *    (`capacity - (c - input_head)`): a producer owns positions `[c, c + k)` and only claims slots
 *    that are free, so it never waits for room while holding a claim. Right after the claim it
 *    registers `[c, c + k)` in a claim record of the shared state;
 * 2. **write** its frames into those slots (plain stores: nobody else writes them), then mark its
 *    record written;
 * 3. **publish in claim order** — wait until `input_tail == c` (every earlier claimant has
 *    published), then `compareExchange(input_tail, c, c + k)` (seq_cst, P4).
 *
 * A producer that dies between 1 and 3 (a Worker terminated mid-claim) must not wedge the ring:
 * a producer that finds `input_tail` stuck for `recoverAfterMs` while claims wait behind it
 * **rescues** the stuck claim under the rescue lock. If its frames were all written, it
 * publishes them; otherwise it marks the record lost and fills the claim's slots with *skip
 * frames* (`FLAG_ERROR`, error record `SKIPPED`), which every kernel forwards unchanged (§3.4)
 * and the kernel's owner drops, and publishes past them. The counters say how many claims were
 * rescued and how many positions were skipped ({@link sharedInputStats}).
 * @module
 */
import type { MessagePort } from 'node:worker_threads'

import { BatchPath, describeSchema, schemaFrom, type Schema, type SchemaDescriptor } from './codec'
import { RingbridgeError, badOption } from './errors'
import { FLAG, FRAME_HEADER_BYTES, KERNEL_ERROR, STATE, TERMINATE, writeErrorRecord, writeFrameHeader } from './protocol'
import { ControlBlockView } from './ring'

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
  /** The producers' shared state: claim records, the rescue lock, counters (spec §15). */
  readonly state?: SharedArrayBuffer
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
/** Without shared state (a handle built by hand): how long a publish waits before it reports a stuck producer. */
const PUBLISH_LIMIT_MS = 10_000
/** Default stall of `input_tail` after which a waiting producer rescues the claim in front. */
const RECOVER_AFTER_MS = 1000
/**
 * Most of one wait that counts towards a stall: a process that was stopped (SIGSTOP, a debugger)
 * or starved of CPU does not count its pause as the claimant's, so a live claimant that was
 * merely descheduled is not taken for dead when everyone resumes.
 */
const STALL_STEP_MS = 20
/**
 * How long `sendBatch` polls a full ring (yielding to the event loop between tries) before it
 * sleeps. Eight producers that only polled a ring of capacity 2 or 8 got 0.9–3 k msg/s against
 * one producer's 10–80 k (the kernel and its owner starved of CPU on two cores, issue #7).
 */
const POLL_ROOM_MS = 0.25

/**
 * Kernel error code of a skip frame (spec §15, §12): the error record of a frame that stands
 * in for a position a producer claimed and never wrote. Kernels forward it unchanged (§3.4).
 */
export const SKIPPED = KERNEL_ERROR.skipped

// ---- shared state: layout ------------------------------------------------------------------
// Int32 words of the header (byte offset = 4 × index), the busy ones on lines of their own.
const LOCK = 0 // rescue lock: the rescuer's token, 0 when free (byte 0)
const TOKENS = 1 // token counter (each producer takes one) (byte 4)
const PUBLISHES = 16 // bumped after every publish: the futex publish waiters sleep on (byte 64)
const PUBLISH_SLEEPERS = 17 // producers asleep on PUBLISHES (byte 68)
const ROOM_WAITERS = 32 // producers in sendBatch waiting for room, polling or asleep (byte 128)
// BigUint64 counters of the header.
const RESCUES = 32 // claims rescued (byte 256)
const SKIPPED_POSITIONS = 33 // positions filled with skip frames (byte 264)
const RESCUED_FRAMES = 34 // positions published by a rescuer for a stalled writer (byte 272)
const HEADER_BYTES = 320
const RECORD_BYTES = 64
/** Claim records: at most this many claims in flight at once (one per producer at a time). */
const RECORDS = 128
/** Bytes of the producers' shared state. */
export const SHARED_STATE_BYTES = HEADER_BYTES + RECORDS * RECORD_BYTES
// A record: state (Int32 at +0: generation << 3 | phase), start and end (Float64 at +8, +16).
// Positions stay below 2^53, so a Float64 holds them exactly; start and end are written before
// the state word's seq_cst store and read after its load, so they need no atomics of their own.
const FREE = 0
const OWNED = 1 // taken for a claim; start/end not valid yet
const CLAIMED = 2 // [start, end) claimed, frames being written
const WRITTEN = 3 // every frame written; publish pending
const LOST = 4 // rescued before it was written: its slots hold skip frames
const phase = (s: number) => s & 7
const withPhase = (s: number, p: number) => (s & ~7) | p

const states = new WeakMap<SharedArrayBuffer, SharedArrayBuffer>()

/** @internal The producers' shared state of the claim word `claim` (made once, in the kernel's thread). */
export function sharedStateOf(claim: SharedArrayBuffer): SharedArrayBuffer {
  let s = states.get(claim)
  if (s === undefined) {
    s = new SharedArrayBuffer(SHARED_STATE_BYTES)
    states.set(claim, s)
  }
  return s
}

/**
 * What the producers of one shared input ring did (`kernel.stats().producers`, PROTOCOL.md §15).
 * @example
 * ```ts
 * const p: SharedInputStats | undefined = kernel.stats().producers
 * if (p && p.skipped > 0) console.warn(`${p.skipped} messages were lost with a producer that died mid-claim`)
 * ```
 */
export interface SharedInputStats {
  /** Positions claimed so far (the claim word). */
  claimed: number
  /** Positions claimed and not yet published (`claimed - input_tail`): claims in flight, or held by a producer that died and nobody has rescued yet. */
  unpublished: number
  /** Claims rescued because their producer stalled past `recoverAfterMs` (died, most likely). */
  rescuedClaims: number
  /** Positions of rescued claims filled with skip frames (messages that were lost with their producer). */
  skipped: number
  /** Positions of rescued claims whose frames were complete: published for their producer, delivered. */
  rescuedFrames: number
}

/**
 * @internal Counters of a shared input ring: `claim` is the handle's claim buffer, `inputTail`
 * the control block's `input_tail` now; `state` the handle's shared state (found from `claim` in
 * the kernel's thread, given by a producer's thread).
 */
export function sharedInputStats(claim: SharedArrayBuffer, inputTail: number, state?: SharedArrayBuffer): SharedInputStats {
  const claimed = Number(Atomics.load(new BigUint64Array(claim, 0, 1), 0))
  const s = state ?? states.get(claim)
  const c = s === undefined ? undefined : new BigUint64Array(s, 0, HEADER_BYTES / 8)
  const count = (i: number) => (c === undefined ? 0 : Number(Atomics.load(c, i)))
  return {
    claimed,
    unpublished: Math.max(0, claimed - inputTail),
    rescuedClaims: count(RESCUES),
    skipped: count(SKIPPED_POSITIONS),
    rescuedFrames: count(RESCUED_FRAMES),
  }
}

/** Options of a {@link RingProducer}. */
interface RingProducerOptions {
  /**
   * How long `input_tail` must stay stuck, while this producer waits behind a claim that is
   * not published, before it rescues that claim (its producer has died, most likely). Default 1000.
   */
  recoverAfterMs?: number
  /**
   * @internal Tests: on the first claim, stall after claiming (`claimed`) or after writing
   * (`written`), having called `then`: for good (a thread that dies there), or for `ms`, or
   * until `until()` holds (polled each millisecond; `ms` then caps the stall).
   */
  testHold?: { at: 'claimed' | 'written'; then: () => void; ms?: number; until?: () => boolean }
}

/** A claim in hand: positions `[pos, pos + n)` under record `rec` with state word `state`. */
interface Claim {
  pos: number
  n: number
  rec: number
  state: number
}

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
  readonly #sleeping: number
  readonly #bytes: Uint8Array
  /** A word nobody changes: timed sleeps without shared state. */
  readonly #tick = new Int32Array(new SharedArrayBuffer(4))
  readonly #lengths = new Uint32Array(STAGE_MESSAGES)
  // Shared state (absent for a handle built without it: no records, no rescue).
  readonly #i32: Int32Array | undefined
  readonly #f64: Float64Array | undefined
  readonly #counters: BigUint64Array | undefined
  readonly #token: number
  readonly #recoverAfterMs: number
  #hold: RingProducerOptions['testHold']
  #rec = 0
  #staging = new Uint8Array(0)
  #stagingView = new DataView(this.#staging.buffer)
  /** What the staging holds: `#stagedCount` messages from `#stagedFrom` of `#stagedFor`. */
  #stagedFor: readonly TIn[] | undefined
  #stagedFrom = 0
  #stagedCount = 0
  #sent = 0
  // A stall being watched: the tail seen, the stall time counted, when last counted.
  #stallTail = -1
  #stalled = 0
  #stallAt = 0
  // The rescue lock seen held by another producer, and the stall counted since.
  #lockSeen = 0
  #lockStalled = 0

  /**
   * @param handle what {@link RingKernel.producer} gave.
   * @param options `recoverAfterMs`: how long the input tail must stay stuck behind a claim that is never published before this producer rescues it (default 1000).
   */
  constructor(handle: ProducerHandle, options?: { recoverAfterMs?: number }) {
    if (handle === null || typeof handle !== 'object' || !(handle.buffer instanceof SharedArrayBuffer) || !(handle.claim instanceof SharedArrayBuffer)) {
      badOption('RingProducer handle', 'the object RingKernel.producer() returned', handle)
    }
    const o = (options ?? {}) as RingProducerOptions
    const recover = o.recoverAfterMs ?? RECOVER_AFTER_MS
    if (typeof recover !== 'number' || !(recover > 0) || !Number.isFinite(recover)) badOption('recoverAfterMs', 'a positive number of milliseconds', recover)
    this.#recoverAfterMs = recover
    this.#hold = o.testHold
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
    this.#sleeping = this.#cb.index32('kernel_sleeping')
    const state = handle.state
    if (state instanceof SharedArrayBuffer && state.byteLength >= SHARED_STATE_BYTES) {
      this.#i32 = new Int32Array(state)
      this.#f64 = new Float64Array(state)
      this.#counters = new BigUint64Array(state, 0, HEADER_BYTES / 8)
      this.#token = (Atomics.add(this.#i32, TOKENS, 1) + 1) | 0 || 1
      this.#rec = (this.#token >>> 0) % RECORDS
    } else {
      this.#token = 1
    }
  }

  /** Messages this producer has published. */
  get sent(): number {
    return this.#sent
  }

  /**
   * Sends as many of `messages[from..]` as the ring has room for now, in order, with one claim
   * and one publish. All are encoded straight into their slots.
   * @returns how many were sent (0 when the ring is full).
   * @throws {RingbridgeError} `ERR_RINGBRIDGE_CLOSED` once the kernel is told to stop; `ERR_RINGBRIDGE_TIMEOUT` when an earlier claimant never publishes (only for a handle without shared state: otherwise its claim is rescued).
   * @throws {RingbridgeTypeError} `ERR_RINGBRIDGE_INVALID_MESSAGE` for a message that does not fit the schema — checked before anything is claimed, so nothing of this step is sent (earlier steps of a `sendBatch` were).
   */
  trySendBatch(messages: readonly TIn[], from = 0): number {
    this.#stagedFor = undefined
    return this.#trySend(messages, from, false)
  }

  /** `keep`: keep the step's encoding for the next call (sendBatch), else encode only what fits now. */
  #trySend(messages: readonly TIn[], from: number, keep: boolean): number {
    if (this.#cb.terminateCommand() !== TERMINATE.none || this.#cb.load32('state') === STATE.terminated) {
      throw new RingbridgeError('ERR_RINGBRIDGE_CLOSED', 'RingProducer: the kernel is terminated or terminating')
    }
    let chunk = Math.min(messages.length - from, STAGE_MESSAGES)
    if (chunk <= 0) return 0
    // No room seen: nothing to encode (a full ring is retried often; encoding a whole step each
    // time cost more than the sending, issue #7).
    const room = this.#room()
    if (room <= 0) {
      this.#watchRoomStall()
      return 0
    }
    if (!keep) chunk = Math.min(chunk, room)
    // Encode first, into private staging: a claimed position must be published with a valid
    // frame, so a message that does not fit its schema must fail before anything is claimed.
    // `sendBatch` keeps a step's encoding across the claims that send it.
    const max = this.#slotSize - FRAME_HEADER_BYTES
    let at: number
    if (this.#stagedFor === messages && from >= this.#stagedFrom && from < this.#stagedFrom + this.#stagedCount) {
      at = from - this.#stagedFrom
    } else {
      this.#stagedFor = undefined
      if (this.#staging.length < chunk * max) {
        // As much as this step needs (at most STAGE_MESSAGES payloads): a producer of a few
        // messages over 1 MiB slots should not hold 256 MiB.
        this.#staging = new Uint8Array(chunk * max)
        this.#stagingView = new DataView(this.#staging.buffer)
      }
      const path = new BatchPath()
      for (let i = 0; i < chunk; i++) {
        this.#lengths[i] = this.#input.encode(this.#stagingView, i * max, messages[from + i] as TIn, max, path.at(from + i))
      }
      this.#stagedFor = messages
      this.#stagedFrom = from
      this.#stagedCount = chunk
      at = 0
    }
    const want = Math.min(chunk, this.#stagedCount - at)
    const claim = this.#claimSlots(want)
    if (claim === undefined) {
      this.#watchRoomStall()
      return 0
    }
    const { pos, n } = claim
    if (this.#hold?.at === 'claimed') this.#holdOnce()
    const v = this.#view
    const i32 = this.#i32
    const si = claim.rec * (RECORD_BYTES / 4) + HEADER_BYTES / 4
    for (let i = 0; i < n; i++) {
      // A claim rescued while we were stalled here: its slots hold skip frames; stop writing.
      if (i32 !== undefined && Atomics.load(i32, si) !== claim.state) break
      const p = pos + i
      const slot = this.#slots + (p % this.#capacity) * this.#slotSize
      const k = at + i
      const length = this.#lengths[k]!
      this.#bytes.set(this.#staging.subarray(k * max, k * max + length), slot + FRAME_HEADER_BYTES)
      // The claimed position is the correlation id: unique across every producer of the ring.
      writeFrameHeader(v, slot, length, this.#typeId, 0, p)
    }
    if (i32 !== undefined) {
      const written = withPhase(claim.state, WRITTEN)
      if (Atomics.compareExchange(i32, si, claim.state, written) !== claim.state) {
        // Rescued before we finished (we stalled past recoverAfterMs): skip frames stand in
        // for these positions, so nothing of this step was sent; it is sent again.
        this.#drop(claim.rec, claim.state)
        return 0
      }
      claim.state = written
    }
    if (this.#hold?.at === 'written') this.#holdOnce()
    this.#publish(pos, n)
    if (i32 !== undefined) this.#release(claim.rec, claim.state)
    this.#sent += n
    return n
  }

  /** Free input slots as seen now (claims in flight count as taken). */
  #room(): number {
    return this.#free(Number(Atomics.load(this.#claim, 0)))
  }

  /**
   * Free slots above claim position `c`. An impossible head (more than a lap behind `c`, or
   * ahead of it: a corrupt peer, PROTOCOL.md §7) reads as a full ring, so nothing is claimed.
   */
  #free(c: number): number {
    const used = c - Number(Atomics.load(this.#cb.u64, this.#head))
    return used < 0 || used > this.#capacity ? 0 : this.#capacity - used
  }

  /**
   * Step 1: takes a claim record, claims up to `want` free positions and registers them.
   * Undefined when there is no room (or no free record).
   */
  #claimSlots(want: number): Claim | undefined {
    const i32 = this.#i32
    let rec = -1
    let state = 0
    if (i32 !== undefined) {
      ;[rec, state] = this.#takeRecord()
      if (rec < 0) return undefined
    }
    const u64 = this.#cb.u64
    for (;;) {
      const c = Atomics.load(this.#claim, 0)
      const n = Math.min(want, this.#free(Number(c)))
      if (n <= 0) {
        if (i32 !== undefined) this.#release(rec, state)
        return undefined
      }
      if (Atomics.compareExchange(this.#claim, 0, c, c + BigInt(n)) !== c) continue
      const pos = Number(c)
      if (i32 === undefined) return { pos, n, rec, state }
      // Register [pos, pos + n): start and end first, then the state word (seq_cst).
      const f = (HEADER_BYTES + rec * RECORD_BYTES) / 8
      this.#f64![f + 1] = pos
      this.#f64![f + 2] = pos + n
      state = withPhase(state, CLAIMED)
      Atomics.store(i32, (HEADER_BYTES + rec * RECORD_BYTES) / 4, state)
      // A rescue that scanned the records before this registration may have covered our
      // positions with skip frames. It holds the lock until it has published; a tail past
      // `pos` afterwards says it did. (A rescue that scans after it sees our record.)
      if (Atomics.load(i32, LOCK) !== 0 || Number(Atomics.load(u64, this.#tail)) > pos) {
        if (!this.#claimSurvived(pos)) {
          this.#drop(rec, state)
          return undefined
        }
      }
      return { pos, n, rec, state }
    }
  }

  /** Waits out a rescue in progress; whether our fresh claim at `pos` is still ours. */
  #claimSurvived(pos: number): boolean {
    const i32 = this.#i32!
    const u64 = this.#cb.u64
    this.#lockSeen = 0
    for (;;) {
      if (Number(Atomics.load(u64, this.#tail)) > pos) return false
      const lock = Atomics.load(i32, LOCK)
      if (lock === 0) return Number(Atomics.load(u64, this.#tail)) <= pos
      // A rescuer that died holding the lock: cleared after a stall, as a stuck claim is.
      this.#countStall(Number(Atomics.load(u64, this.#tail)))
      if (this.#lockStale(lock)) Atomics.compareExchange(i32, LOCK, lock, 0)
      Atomics.wait(i32, PUBLISHES, Atomics.load(i32, PUBLISHES), 0.2)
    }
  }

  /** Takes a free claim record: [index, state word] ([-1, 0] when every record is in use). */
  #takeRecord(): [number, number] {
    const i32 = this.#i32!
    let r = this.#rec
    for (let pass = 0; pass < 2; pass++) {
      for (let tries = 0; tries < RECORDS; tries++, r = (r + 1) % RECORDS) {
        const si = (HEADER_BYTES + r * RECORD_BYTES) / 4
        const s = Atomics.load(i32, si)
        const p = phase(s)
        // The second pass also takes records their dead owners left behind: lost ones, and
        // written ones already published (their owner died before freeing them).
        const reusable = p === FREE || (pass === 1 && (p === LOST || (p === WRITTEN && this.#f64![si / 2 + 2]! <= Number(Atomics.load(this.#cb.u64, this.#tail)))))
        if (!reusable) continue
        const taken = (((s >>> 3) + 1) << 3) | OWNED
        if (Atomics.compareExchange(i32, si, s, taken) === s) {
          this.#rec = r
          return [r, taken]
        }
      }
    }
    return [-1, 0]
  }

  /** Frees our record `rec` if it is still in state `state` (it may have been reused since). */
  #release(rec: number, state: number): void {
    const si = (HEADER_BYTES + rec * RECORD_BYTES) / 4
    Atomics.compareExchange(this.#i32!, si, state, withPhase(state, FREE))
  }

  /** Frees the record of our claimed state `state` that a rescue may have marked lost. */
  #drop(rec: number, state: number): void {
    this.#release(rec, state)
    this.#release(rec, withPhase(state, LOST))
  }

  /** Step 3: publish `[pos, pos + n)` after every earlier claimant, then D2. */
  #publish(pos: number, n: number): void {
    const u64 = this.#cb.u64
    const i32 = this.#i32
    const deadline = Date.now() + PUBLISH_LIMIT_MS
    let spins = 0
    this.#lockSeen = 0
    for (;;) {
      const tail = Number(Atomics.load(u64, this.#tail))
      // Past us: a rescuer published our written frames while we were stalled.
      if (tail >= pos + n) return
      if (tail === pos) break
      if (++spins < 64) continue
      if (i32 === undefined) {
        if (Date.now() > deadline) throw new RingbridgeError('ERR_RINGBRIDGE_TIMEOUT', `RingProducer: an earlier producer has not published position ${tail} for ${PUBLISH_LIMIT_MS} ms`)
        Atomics.wait(this.#tick, 0, 0, 0.05)
        continue
      }
      if (this.#countStall(tail) >= this.#recoverAfterMs) this.#rescue(tail)
      // Sleep until the next publish (publishers wake us), bounded.
      const seq = Atomics.load(i32, PUBLISHES)
      if (Number(Atomics.load(u64, this.#tail)) !== tail) continue
      Atomics.add(i32, PUBLISH_SLEEPERS, 1)
      Atomics.wait(i32, PUBLISHES, seq, 1)
      Atomics.sub(i32, PUBLISH_SLEEPERS, 1)
    }
    Atomics.compareExchange(u64, this.#tail, BigInt(pos), BigInt(pos + n))
    this.#published()
  }

  /** After a publish: wake producers waiting for it, and D2 (a parked kernel is woken). */
  #published(): void {
    const i32 = this.#i32
    if (i32 !== undefined) {
      Atomics.add(i32, PUBLISHES, 1)
      if (Atomics.load(i32, PUBLISH_SLEEPERS) > 0) Atomics.notify(i32, PUBLISHES)
    }
    // D2: our seq_cst update of the tail precedes this load. A JS kernel (worker) sleeps on the
    // word itself; a native cpu kernel is woken by its owner.
    if (Atomics.load(this.#cb.u32, this.#sleeping) !== 0) {
      Atomics.notify(this.#cb.u32, this.#sleeping)
      this.#wake.postMessage(0)
    }
  }

  /**
   * Counts stall time while `tail` does not move: each wait adds at most STALL_STEP_MS, so a
   * pause of the whole process is not taken for a dead claimant. Returns the stall so far.
   */
  #countStall(tail: number): number {
    const now = performance.now()
    if (tail !== this.#stallTail) {
      this.#stallTail = tail
      this.#stalled = 0
      this.#lockStalled = 0
    } else {
      const step = Math.min(now - this.#stallAt, STALL_STEP_MS)
      this.#stalled += step
      this.#lockStalled += step
    }
    this.#stallAt = now
    return this.#stalled
  }

  /** Whether the rescue lock, held by `lock`, has been held through a whole stall. */
  #lockStale(lock: number): boolean {
    if (lock !== this.#lockSeen) {
      this.#lockSeen = lock
      this.#lockStalled = 0
      return false
    }
    return this.#lockStalled >= this.#recoverAfterMs
  }

  /**
   * No room: if claims wait unpublished at the tail (a dead claimant can hold the whole ring,
   * and then nobody waits to publish behind it), watch that stall too, and rescue it.
   */
  #watchRoomStall(): void {
    if (this.#i32 === undefined) return
    const tail = Number(Atomics.load(this.#cb.u64, this.#tail))
    if (Number(Atomics.load(this.#claim, 0)) === tail) {
      this.#stallTail = -1
      return
    }
    if (this.#countStall(tail) >= this.#recoverAfterMs) this.#rescue(tail)
  }

  /**
   * Rescues the claim at `tail` (stuck for `recoverAfterMs`), under the rescue lock: publishes
   * its frames if its record says they were all written, else marks it lost and publishes skip
   * frames in place of `[tail, e)`, where `e` is the next registered claim (or the claim word).
   */
  #rescue(tail: number): void {
    const i32 = this.#i32!
    const f64 = this.#f64!
    const u64 = this.#cb.u64
    const held = Atomics.compareExchange(i32, LOCK, 0, this.#token)
    if (held !== 0) {
      // Another rescue runs; if its rescuer died holding the lock, clear it (we take it next time).
      if (this.#lockStale(held)) Atomics.compareExchange(i32, LOCK, held, 0)
      return
    }
    try {
      if (Number(Atomics.load(u64, this.#tail)) !== tail) return
      // Scan the records: the one registered at `tail`, and the nearest claim after it.
      let end = Number(Atomics.load(this.#claim, 0))
      let front = -1
      let frontState = 0
      for (let r = 0; r < RECORDS; r++) {
        const si = (HEADER_BYTES + r * RECORD_BYTES) / 4
        const s = Atomics.load(i32, si)
        const p = phase(s)
        if (p !== CLAIMED && p !== WRITTEN) continue
        const start = f64[si / 2 + 1]!
        if (Atomics.load(i32, si) !== s) continue // reused while we read it
        if (start === tail) {
          front = r
          frontState = s
        } else if (start > tail && start < end) {
          end = start
        }
      }
      if (end <= tail) return
      const fi = (HEADER_BYTES + front * RECORD_BYTES) / 4
      if (front >= 0 && phase(frontState) === WRITTEN) {
        // Every frame is written: publish them for their producer (it would store the same).
        const frontEnd = f64[fi / 2 + 2]!
        if (Atomics.compareExchange(u64, this.#tail, BigInt(tail), BigInt(frontEnd)) === BigInt(tail)) {
          Atomics.add(this.#counters!, RESCUES, 1n)
          Atomics.add(this.#counters!, RESCUED_FRAMES, BigInt(frontEnd - tail))
          this.#published()
        }
        return
      }
      // Not written (or never registered): the claim is lost. Its record first, so a producer
      // that was only stalled learns it and sends those messages again.
      if (front >= 0 && Atomics.compareExchange(i32, fi, frontState, withPhase(frontState, LOST)) !== frontState) return
      const v = this.#view
      const count = end - tail
      for (let p = tail; p < end; p++) {
        if (Atomics.load(i32, LOCK) !== this.#token) return // our lock was taken: we stalled
        const slot = this.#slots + (p % this.#capacity) * this.#slotSize
        // A skip frame (§15): an error frame whose record is SKIPPED, the claim's size as detail.
        const length = writeErrorRecord(v, slot + FRAME_HEADER_BYTES, KERNEL_ERROR.skipped, count)
        writeFrameHeader(v, slot, length, this.#typeId, FLAG.error, p)
      }
      if (Atomics.compareExchange(u64, this.#tail, BigInt(tail), BigInt(end)) === BigInt(tail)) {
        Atomics.add(this.#counters!, RESCUES, 1n)
        Atomics.add(this.#counters!, SKIPPED_POSITIONS, BigInt(count))
        this.#published()
      }
    } finally {
      Atomics.compareExchange(i32, LOCK, this.#token, 0)
      this.#stallTail = -1
    }
  }

  /** Test hook: stall as a producer whose thread dies (or stops for a while) between its steps. */
  #holdOnce(): void {
    const { then, ms, until } = this.#hold!
    this.#hold = undefined
    then()
    const never = new Int32Array(new SharedArrayBuffer(4))
    if (until !== undefined) {
      const end = Date.now() + (ms ?? Infinity)
      while (!until() && Date.now() < end) Atomics.wait(never, 0, 0, 1)
    } else if (ms !== undefined) Atomics.wait(never, 0, 0, ms)
    else for (;;) Atomics.wait(never, 0, 0)
  }

  /**
   * Sends every message, in order, waiting while the ring is full: by yielding to the thread's
   * event loop, and, while other producers wait for room too, in short sleeps (at most 1 ms
   * each, the event loop served between them). Messages are encoded (copied)
   * up to 256 ahead of their claim: leave them unchanged until the promise settles.
   * @throws as {@link RingProducer.trySendBatch}; `ERR_RINGBRIDGE_TIMEOUT` after `timeoutMs`
   * without room (default 30000).
   */
  async sendBatch(messages: readonly TIn[], options?: { timeoutMs?: number }): Promise<void> {
    const limit = options?.timeoutMs ?? 30_000
    let done = 0
    let idleSince = Date.now()
    let misses = 0
    let naps = 0
    let missSince = 0
    this.#stagedFor = undefined
    try {
      while (done < messages.length) {
        const n = this.#trySend(messages, done, true)
        done += n
        if (n > 0) {
          idleSince = Date.now()
          if (misses > 0) this.#waitingForRoom(-1)
          misses = 0
          naps = 0
          continue
        }
        if (Date.now() - idleSince > limit) throw new RingbridgeError('ERR_RINGBRIDGE_TIMEOUT', `RingProducer.sendBatch: no room in the input ring for ${limit} ms`)
        // Room usually comes within microseconds: poll (through the event loop). When other
        // producers wait for room too, poll only for a moment, then sleep, so that they leave
        // the kernel and its owner their CPU.
        const now = performance.now()
        if (misses++ === 0) {
          missSince = now
          this.#waitingForRoom(1)
        } else if (now - missSince > POLL_ROOM_MS && this.#othersWaitForRoom()) {
          this.#napForRoom(Math.min(1, 0.05 * 2 ** Math.min(naps++, 5)))
        }
        await new Promise((r) => setImmediate(r))
      }
    } finally {
      this.#stagedFor = undefined
      if (misses > 0) this.#waitingForRoom(-1)
    }
  }

  /** Counts this producer in (1) or out (-1) of those waiting for room. */
  #waitingForRoom(delta: number): void {
    if (this.#i32 !== undefined) Atomics.add(this.#i32, ROOM_WAITERS, delta)
  }

  /** Whether other producers wait for room as well (a producer that died waiting counts on: it only makes the others sleep sooner). */
  #othersWaitForRoom(): boolean {
    return this.#i32 === undefined || Atomics.load(this.#i32, ROOM_WAITERS) > 1
  }

  /**
   * Sleeps `ms` waiting for room (several producers polling a full ring took the CPU the kernel
   * needed to make room, issue #7). Nothing wakes it early: the kernel cannot, and a wake-up
   * from the kernel's owner after it took replies was measured to cost more than it gained
   * (8 producers, capacity 2: 14 k against 20 k msg/s).
   */
  #napForRoom(ms: number): void {
    Atomics.wait(this.#tick, 0, 0, ms)
  }
}

/** @internal Builds a handle for a kernel's shared input. */
export function producerHandle(buffer: SharedArrayBuffer, claim: SharedArrayBuffer, base: number, inputOffset: number, capacity: number, slotSize: number, typeId: number, input: Schema<unknown>, wake: MessagePort): ProducerHandle {
  return { buffer, claim, state: sharedStateOf(claim), base, inputOffset, capacity, slotSize, typeId, input: describeSchema(input), wake }
}
