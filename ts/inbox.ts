/**
 * The receiving side of a kernel: drains the output ring (C1–C4, released by the host's H6),
 * decodes each frame — a reply, an error frame (`FLAG_ERROR`), several replies in one frame
 * (`FLAG_MULTI`), a corrupt frame, a skip frame of shared producers (dropped) — and delivers it:
 * to the request that carries its correlation id, else to a waiting receiver, else to the reply
 * queue (whose policy applies when it is full). A turn of the event loop delivers at most
 * {@link DRAIN_BUDGET} replies.
 * @internal
 * @module
 */
import { performance } from 'node:perf_hooks'

import type { ChunkReader } from './chunk'
import type { Schema } from './codec'
import { RingbridgeError } from './errors'
import { LatencyHistogram } from './histogram'
import type { Host } from './host'
import { ERROR_NAMES, FLAG, MULTI_HEADER_BYTES, isSkipFrame, readErrorRecord, readMultiHeader } from './protocol'
import type { MessageQueue } from './queue'
import type { FrameRef, OutputRing } from './ring'
import { settleWaiter, type Entry, type Waiter } from './wait'

/**
 * Replies delivered per turn of the event loop before the rest wait for the next turn: large
 * enough that the yield costs streaming little (1024 cost the demo's sendBatch/receiveBatch
 * stream about a third of its throughput on the cpu backend: the kernel waited for room while
 * the host yielded), small enough that a timer waits at most a few milliseconds (about 11 ms
 * for 4096 replies whose continuations each send the next request, item 8's test).
 */
export const DRAIN_BUDGET = 4096

/** The error an error frame carries (`receive()` throws it): `code`/`detail` from its record, for message `id`. */
export function kernelErrorOf(id: number, code: number, detail: number): RingbridgeError {
  const name = ERROR_NAMES[code] ?? `handler-${code}`
  return new RingbridgeError('ERR_RINGBRIDGE_KERNEL_ERROR', `kernel rejected message ${id}: ${name} (code ${code}, detail ${detail})`, {
    details: { kernelCode: code, kernelError: name, detail, correlationId: id },
  })
}

/** The output ring's consumer, with the requests and receivers its replies go to. */
export class Inbox<TOut> {
  readonly replies: MessageQueue<Entry<TOut>>
  /** Requests awaiting their reply, by correlation id. */
  readonly pending = new Map<number, Waiter<TOut>>()
  /** Requests that timed out or were aborted after reaching the ring: their replies are late. */
  readonly expired = new Set<number>()
  /** `receive()` calls waiting for a reply, oldest first. */
  readonly receivers: Waiter<TOut>[] = []
  readonly latency = new LatencyHistogram()
  readonly #host: Host
  readonly #out: OutputRing
  readonly #output: Schema<TOut>
  /** Shared producers: skip frames may come (PROTOCOL.md §15). */
  readonly #skipFrames: boolean
  replied = 0
  errorReplies = 0
  droppedReplies = 0
  late = 0
  #overflowed = 0
  /** An overflow error was raised and the receiver has not caught up since. */
  #overflowReported = false
  /** Replies this turn of the event loop may still deliver (see `#budgetSpent`). */
  #budget = DRAIN_BUDGET
  #resumeScheduled = false
  #packedReader = false
  /** `#packedReader` is only implied by a `reserve()` (see {@link Inbox.keepForChunkSender}). */
  #keepImplied = false
  /** A call other than the chunk calls (a send, a request, a receive) has been made. */
  #otherCallSeen = false
  /**
   * The receive-chunk reader (`chunk.ts`), once a chunk was asked for: while it holds a chunk
   * or a `nextChunk()` waits, replies stay in the ring even when terminating.
   */
  chunks: ChunkReader | undefined

  constructor(host: Host, output: OutputRing, schema: Schema<TOut>, replies: MessageQueue<Entry<TOut>>, skipFrames: boolean) {
    this.#host = host
    this.#out = output
    this.#output = schema
    this.replies = replies
    this.#skipFrames = skipFrames
  }

  /** Someone waits for a reply: a receiver or a request. */
  get awaited(): boolean {
    return this.receivers.length > 0 || this.pending.size > 0 || this.chunks?.waiter !== undefined
  }

  /** Replies are in the ring and this turn may deliver them. */
  drainable(): boolean {
    const chunks = this.chunks
    if (chunks?.claims) return chunks.servable()
    // A packed reader takes replies itself: the pump has nothing to deliver (it would spin).
    if (this.#packedReader && !this.#host.terminating) return false
    return this.#out.available(1) > 0 && (this.#host.terminating || this.#budget > 0)
  }

  /** The reply queue may take more (or someone takes them directly). */
  canDrain(): boolean {
    return this.#host.terminating || this.receivers.length > 0 || this.chunks?.waiter !== undefined || !this.replies.full || this.replies.policy !== 'block'
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
        this.#host.pump()
      })
    }
    return true
  }

  /** C1–C3 for replies, then H6: route each to its request, a waiting receiver or the reply queue. */
  drain(): number {
    if (this.#packedReader && !this.#host.terminating) return 0
    // A held receive chunk owns the frames from `next` on; a waiting nextChunk() gets them.
    if (this.chunks?.claims) return 0
    const out = this.#out
    let n = 0
    let available = out.available(1)
    while (available > 0) {
      if (!this.#host.terminating && this.#budgetSpent()) break
      const f = out.peek()
      if (this.#skipFrames && !f.corrupt && isSkipFrame(out.view, f.offset, f.length, f.flags)) {
        // A skip frame (PROTOCOL.md §15) stands for a position whose producer died before
        // writing it: no message, no reply. stats().producers counts them.
        out.advance()
        n++
        this.#budget--
        if (--available === 0) available = out.available(1)
        continue
      }
      if (!this.pending.has(f.correlationId) && !this.canDrain()) break
      if (!f.corrupt && f.flags & FLAG.multi) {
        // Several replies (or none) to one message in one frame: count, 4 reserved bytes, records.
        const size = this.#output.size ?? 0
        const { count, fits } = readMultiHeader(out.view, f.offset, f.length, size)
        out.advance()
        n++
        this.#budget--
        if (!fits) {
          this.errorReplies++
          this.#route(f.correlationId, { ok: false, error: new RingbridgeError('ERR_RINGBRIDGE_PROTOCOL', `multi-reply frame ${f.correlationId}: ${count} replies of ${size} bytes do not make ${f.length} bytes`) })
        }
        for (let i = 0; fits && i < count; i++) {
          this.replied++
          let entry: Entry<TOut>
          try {
            entry = { ok: true, value: this.#output.decode(out.view, f.offset + MULTI_HEADER_BYTES + i * size, size) }
          } catch (e) {
            entry = { ok: false, error: e as Error }
          }
          this.#route(f.correlationId, entry)
        }
        if (--available === 0) available = out.available(1)
        continue
      }
      const entry = this.decode(f)
      out.advance()
      n++
      this.#budget--
      this.replied++
      this.#route(f.correlationId, entry)
      if (--available === 0) available = out.available(1)
    }
    this.#host.release()
    return n
  }

  /** One frame's reply: its value, or the error it carries (an error frame, a corrupt frame, a payload the schema refuses). */
  decode(f: FrameRef): Entry<TOut> {
    if (f.corrupt) {
      this.errorReplies++
      return {
        ok: false,
        error: new RingbridgeError('ERR_RINGBRIDGE_PROTOCOL', `reply frame ${f.correlationId} has length ${f.corrupt}, over the slot payload of ${this.#out.maxPayload}; skipped`, {
          details: { length: f.corrupt, max: this.#out.maxPayload },
        }),
      }
    }
    if (f.flags & FLAG.error) {
      this.errorReplies++
      const { code, detail } = readErrorRecord(this.#out.view, f.offset, f.length)
      return { ok: false, error: kernelErrorOf(f.correlationId, code, detail) }
    }
    try {
      return { ok: true, value: this.#output.decode(this.#out.view, f.offset, f.length) }
    } catch (e) {
      return { ok: false, error: e as Error }
    }
  }

  #route(id: number, entry: Entry<TOut>): void {
    if (this.settle(id, entry)) return
    if (this.expired.delete(id)) {
      this.late++
      return
    }
    const r = this.receivers.shift()
    if (r) {
      settleWaiter(r, entry)
      return
    }
    if (this.#host.terminating) {
      this.replies.force(entry)
      return
    }
    const res = this.replies.offer(entry)
    if (res.status === 'full') {
      this.droppedReplies++
      this.#overflowed++
    } else if (res.status !== 'queued') {
      this.droppedReplies++
    }
  }

  /** Settles request `id` with `entry`; false if no request waits for it. */
  settle(id: number, entry: Entry<TOut>): boolean {
    const p = this.pending.get(id)
    if (!p) return false
    this.pending.delete(id)
    if (p.started !== undefined && entry.ok) this.latency.record(performance.now() - p.started)
    settleWaiter(p, entry)
    return true
  }

  /** Hands queued replies (and overflow errors) to waiting receivers, oldest first. */
  deliver(): void {
    this.chunks?.serve()
    while (this.receivers.length > 0 && this.replies.length + this.#overflowed > 0) {
      settleWaiter(this.receivers.shift() as Waiter<TOut>, this.takeReply() as Entry<TOut>)
    }
  }

  /**
   * Whether the next reply taken is the `ERR_RINGBRIDGE_OVERFLOW` error: raised once per
   * episode of drops (the first drop after the receiver last caught up), and once more for
   * the drops that came after it when the receiver catches up (the reply queue empties). So a
   * receiver that stays behind gets one error, not one between every two replies, and every
   * drop is reported by some error and in `stats().dropped.reply`.
   */
  overflowDue(): boolean {
    return this.#overflowed > 0 && (!this.#overflowReported || this.replies.length === 0)
  }

  /** The next reply for a receiver: an overflow error when one is due, else the queue's front. */
  takeReply(): Entry<TOut> | undefined {
    if (this.overflowDue()) {
      const n = this.#overflowed
      this.#overflowed = 0
      this.#overflowReported = true
      const capacity = this.replies.capacity
      return {
        ok: false,
        error: new RingbridgeError(
          'ERR_RINGBRIDGE_OVERFLOW',
          `${n} replies were dropped: the reply queue (capacity ${capacity}) was full under policy 'reject'. Replies dropped before you catch up (the queue empties) are counted in stats().dropped.reply and reported by one more such error then`,
          { details: { dropped: n, capacity } },
        ),
      }
    }
    const entry = this.replies.shift()
    if (this.replies.length === 0) this.#overflowReported = false
    return entry
  }

  /**
   * Decodes ordinary replies straight from the ring into `out` (up to `max` in all) when none is
   * queued ahead of them and the reply queue's policy is `block`: the streaming fast path of `tryReceiveMany`, with no reply entry, queue
   * node or frame object per reply. Stops at the first frame the general path must see (an error,
   * multi-reply or skip frame, a corrupt one, the reply to a pending request, one the schema
   * refuses) and leaves it in the ring; releases what it took (C4, D2).
   */
  pullDirect(out: TOut[], max: number): void {
    if (out.length >= max || this.#packedReader || this.chunks?.claims || this.#skipFrames) return
    // Under a dropping or rejecting reply queue, replies pass through the queue's policy (the
    // pump applies it); under `block` the pump would only queue them for this reader.
    if (this.replies.policy !== 'block') return
    if (this.replies.length > 0 || this.#overflowed > 0 || this.receivers.length > 0 || this.expired.size > 0) return
    const ring = this.#out
    const pending = this.pending
    const claimed = pending.size === 0 ? undefined : (id: number) => pending.has(id)
    let n = 0
    for (;;) {
      const want = Math.min(ring.available(max - out.length), max - out.length)
      if (want <= 0) break
      const took = ring.takePlain(this.#output, out, want, claimed)
      n += took
      if (took < want) break // a frame for the general path
    }
    if (n > 0) {
      this.replied += n
      this.#host.release()
    }
  }

  /**
   * Up to `max` replies ready now, appended to `out`; throws the first error reply if it comes
   * before any value (in `out` too).
   */
  takeMany(max: number, out: TOut[] = []): TOut[] {
    while (out.length < max) {
      if (this.overflowDue()) {
        // The overflow error comes before the replies that survived it, as in receive().
        if (out.length > 0) break
        throw (this.takeReply() as { ok: false; error: Error }).error
      }
      const front = this.replies.peek()
      if (!front) break
      if (!front.ok) {
        if (out.length > 0) break
        this.takeReply()
        throw front.error
      }
      out.push((this.takeReply() as { value: TOut }).value)
    }
    return out
  }

  /**
   * From now on replies stay in the ring for a packed reader ({@link copyPacked}): the
   * event-loop pump must not move them into the reply queue behind its back.
   */
  keepForPackedReader(): void {
    this.#packedReader = true
    this.#keepImplied = false
  }

  /**
   * A `reserve()` while the program has used only chunk calls: replies stay in the ring, as
   * after `receiveChunk(0)`, so that a chunk-only program finds them all in its first
   * `receiveChunk()` however the event loop's turns fall (without this, whether the pump had
   * already moved some into the reply queue depended on timing). The first other call
   * ({@link Inbox.notChunkOnly}) ends it: a program that also sends or receives otherwise gets
   * its replies through the reply queue, and a send waiting for room is never stuck behind
   * replies nobody will take from the ring.
   */
  keepForChunkSender(): void {
    if (this.#otherCallSeen || this.#packedReader || this.replies.length > 0 || this.pending.size > 0) return
    this.#packedReader = true
    this.#keepImplied = true
  }

  /** A send, request or receive other than by chunk: an implied keep ({@link Inbox.keepForChunkSender}) ends. */
  notChunkOnly(): void {
    if (this.#otherCallSeen) return
    this.#otherCallSeen = true
    if (this.#keepImplied) {
      this.#keepImplied = false
      this.#packedReader = false
    }
  }

  /**
   * Copies the replies ready now as raw payloads, `size` bytes apart, into `into`, bypassing the
   * schema and the reply queue, then H6.
   */
  copyPacked(into: Uint8Array, size: number): number {
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
      // (shared producers, PROTOCOL.md §15) carries no reply: pass over it.
      const f = out.peek()
      if (this.#skipFrames && !f.corrupt && isSkipFrame(out.view, f.offset, f.length, f.flags)) {
        out.advance()
        continue
      }
      const entry = this.decode(f)
      failure = entry.ok ? new RingbridgeError('ERR_RINGBRIDGE_PROTOCOL', `reply of ${f.length} bytes is longer than the packed size ${size}`) : entry.error
      out.advance()
      break
    }
    this.replied += n
    this.#host.release()
    if (failure) throw failure
    return n
  }

  /** The kernel ended: every request fails with `ended(…)`, and every receiver too once no reply is left. */
  failAll(ended: (what: string) => Error): void {
    this.chunks?.fail(ended('nextChunk'))
    for (const [id] of this.pending) this.settle(id, { ok: false, error: ended(`request ${id}`) })
    // Every waiter settles now and leaves no timer behind (a pending timer would keep the
    // process alive after close()).
    if (this.replies.length === 0) {
      for (const r of this.receivers.splice(0)) settleWaiter(r, { ok: false, error: ended('receive') })
    }
  }
}
