/**
 * The send queue of a kernel: {@link MessageQueue}'s capacity and policy, counted in messages,
 * over entries that each hold a run of encoded frames. A batch's overflow of thousands of
 * messages is a few entries, not one entry (and one queue operation) per message: in a stream
 * whose sender outruns its receiver, per-message entries were a fifth of the time.
 * @internal
 * @module
 */
import { Fifo, type Backpressure } from './queue'
import type { SendOutcome } from './types'

/**
 * Messages that did not fit the ring, encoded as the frames they will be: `count` frames with
 * correlation ids `id`, `id + 1`, …, the `i`th at byte `at + i * size` of `frame` (header and
 * payload). With slots of up to `SLOTTED_MAX` bytes (outbox.ts) each frame takes a whole slot and
 * `size` is the slot size, so a run is laid out as in the ring and the flush copies it with one
 * copy per contiguous span of the ring; with larger slots `size` is the one frame's bytes
 * (rounded up to 16) and `count` is 1. Under `drop-oldest` every entry is one message: each has
 * its own outcome.
 */
export interface Queued {
  id: number
  frame: Uint8Array
  at: number
  size: number
  count: number
  /** Under a dropping policy: settles its sender's promise once the outcome is final. */
  outcome: ((o: SendOutcome) => void) | undefined
}

/** A run of `count` frames (1: a send, a request, or a message of a batch under drop-oldest). */
export function run(id: number, frame: Uint8Array, at: number, size: number, count: number): Queued {
  return { id, frame, at, size, count, outcome: undefined }
}

/** Splits the first `n` messages (0 < n < run.count) off `whole`: returns them; `whole` keeps the rest. */
export function splitRun(whole: Queued, n: number): Queued {
  const head = run(whole.id, whole.frame, whole.at, whole.size, n)
  whole.id += n
  whole.at += n * whole.size
  whole.count -= n
  return head
}

/** Messages in `runs[from..]`. */
export function messagesIn(runs: readonly Queued[], from = 0): number {
  let n = 0
  for (let i = from; i < runs.length; i++) n += runs[i]!.count
  return n
}

/** A bounded FIFO of runs, its length and capacity in messages. */
export class SendQueue {
  /** Most messages held. */
  readonly capacity: number
  /** The policy the outbox applies when full. */
  readonly policy: Backpressure
  readonly #runs = new Fifo<Queued>()
  #length = 0
  #dropped = 0

  constructor(options: { capacity: number; policy: Backpressure }) {
    this.capacity = options.capacity
    this.policy = options.policy
  }

  /** Messages queued. */
  get length(): number {
    return this.#length
  }

  /** Messages that fit before the queue is full. */
  get room(): number {
    return Math.max(0, this.capacity - this.#length)
  }

  /** Whether the queue is at capacity. */
  get full(): boolean {
    return this.#length >= this.capacity
  }

  /** Messages dropped by the dropping policies so far. */
  get dropped(): number {
    return this.#dropped
  }

  /** Counts `n` messages the policy dropped. */
  countDropped(n: number): void {
    this.#dropped += n
  }

  /** Appends `run` whole; the caller checked the room (the outbox applies the policy). */
  push(run: Queued): void {
    this.#runs.push(run)
    this.#length += run.count
  }

  /**
   * Queues as much of `run` as the room takes: all of it (true), or its first `room` messages
   * split off (false; `run` keeps the rest, and nothing is queued when the queue is full).
   */
  pushFitting(run: Queued): boolean {
    const room = this.room
    if (run.count <= room) {
      this.push(run)
      return true
    }
    if (room > 0) this.push(splitRun(run, room))
    return false
  }

  /** The oldest run, left in place. */
  peek(): Queued | undefined {
    return this.#runs.peek()
  }

  /** Takes up to `n` (≥ 1) of the oldest messages: the front run, or its first `n` split off. */
  take(n: number): Queued | undefined {
    const front = this.#runs.peek()
    if (front === undefined) return undefined
    const run = front.count <= n ? (this.#runs.shift() as Queued) : splitRun(front, n)
    this.#length -= run.count
    return run
  }

  /** Removes the first run matching `pred` (O(n): for withdrawn sends). */
  remove(pred: (run: Queued) => boolean): Queued | undefined {
    const run = this.#runs.remove(pred)
    if (run !== undefined) this.#length -= run.count
    return run
  }

  /** Removes and returns every run, oldest first. */
  drain(): Queued[] {
    this.#length = 0
    return this.#runs.drain()
  }
}
