/**
 * The sending side of a kernel: messages into the input ring (H2: encoded straight into their
 * slots), or — when the ring is full — into the send queue, whose backpressure policy applies
 * when it is full too; messages that wait for room behind a full queue under `block`; withdrawal
 * of a message that has not reached the ring (a timeout, an abort); and the flush that moves
 * queued messages into the ring as it frees. Publication (H3, H4) is the host's.
 * @internal
 * @module
 */
import { BatchPath, type Schema } from './codec'
import { RingbridgeError, RingbridgeRangeError } from './errors'
import type { Host } from './host'
import { FRAME_HEADER_BYTES, isSkipFrame, writeFrameHeaderWords } from './protocol'
import { Fifo } from './queue'
import type { InputRing } from './ring'
import { messagesIn, run, type Queued, type SendQueue } from './send-queue'
import type { SendOutcome } from './types'
import { abortedError, bound, type WaitLimit, type Waiter } from './wait'

/** Slots up to this size are queued whole (runs copy at once); larger ones only their frame's bytes, which may be far fewer. */
const SLOTTED_MAX = 512

/**
 * Bytes of one send-queue buffer at most: a batch's overflow takes as many buffers as it needs,
 * so no typed array nears Node's 4 GiB limit and no single allocation is huge.
 */
const QUEUE_BUFFER_BYTES = 16 << 20

/** `n` rounded up to a multiple of 16 (frames start 16-aligned in a queue buffer, as slots do in the ring). */
function roundUp16(n: number): number {
  return (n + 15) & ~15
}

/**
 * Messages waiting for room in a full send queue under `block`, in send order: one (a send, a
 * request) or the rest of a batch as runs, with one promise for all of them (a batch of thousands
 * makes no promise per message). `items[next..]` still wait; `what` names the caller.
 */
type Blocked = Waiter<SendOutcome> & { items: Queued[]; next: number; what: string }

/** The input ring's producer, with the send queue in front of it. */
export class Outbox<TIn> {
  readonly queue: SendQueue
  readonly #blocked = new Fifo<Blocked>()
  readonly #host: Host
  readonly #in: InputRing
  readonly #input: Schema<TIn>
  readonly #typeId: number
  /** Throws `ERR_RINGBRIDGE_CLOSED` (and the like) for `what` once sends are refused. */
  readonly #checkOpen: (what: string) => void
  /** A request's message the queue's policy dropped: its request fails with `error`. */
  readonly #onDropped: (id: number, error: Error) => void
  /** A `nextReserve()` waiting for a free input slot (`chunk.ts`); one at a time. */
  #roomWaiter: (Waiter<void> & { what: string }) | undefined
  /** The next correlation id. */
  nextId = 1
  /** Messages published into the ring. */
  sent = 0

  constructor(host: Host, input: InputRing, schema: Schema<TIn>, typeId: number, queue: SendQueue, checkOpen: (what: string) => void, onDropped: (id: number, error: Error) => void) {
    this.#host = host
    this.#in = input
    this.#input = schema
    this.#typeId = typeId
    this.queue = queue
    this.#checkOpen = checkOpen
    this.#onDropped = onDropped
  }

  /** Messages in the send queue. */
  get queued(): number {
    return this.queue.length
  }

  /** Something waits for room in the input ring: queued messages, or a `nextReserve()`. The pump announces it (H7) so the kernel's release of input slots rings the doorbell. */
  get wantsRoom(): boolean {
    return this.queue.length > 0 || this.#roomWaiter !== undefined
  }

  /**
   * Resolves once the input ring has a free slot and no message waits ahead of a new one
   * (checked by every flush, so on every pump); rejects with `ERR_RINGBRIDGE_TIMEOUT` /
   * `ERR_RINGBRIDGE_ABORTED` when `limit` ends first, or when the kernel ends. `what` names the
   * caller in errors.
   */
  waitForRoom(limit: WaitLimit, what: string): Promise<void> {
    if (this.#roomWaiter !== undefined) {
      return Promise.reject(new RingbridgeRangeError('ERR_RINGBRIDGE_INVALID_ARGUMENT', `${what}: another ${this.#roomWaiter.what}() is waiting for room already; await it first`))
    }
    return new Promise<void>((resolve, reject) => {
      const w: Waiter<void> & { what: string } = { resolve, reject, what }
      if (limit.timeoutMs !== undefined || limit.signal !== undefined) {
        w.disarm = bound(limit, (why) => {
          if (this.#roomWaiter !== w) return
          this.#roomWaiter = undefined
          reject(why === 'abort' ? abortedError(what, limit.signal!) : new RingbridgeError('ERR_RINGBRIDGE_TIMEOUT', `${what}: no free input slot within ${limit.timeoutMs} ms`))
          this.#host.pump()
        })
      }
      this.#roomWaiter = w
      this.#host.pump()
    })
  }

  /** Messages wait ahead of a new one (queued, or blocked behind a full queue): it must not overtake them. */
  get ahead(): boolean {
    return this.queue.length > 0 || this.#blocked.length > 0
  }

  /** Sends `message` if it fits in the ring now and nothing waits ahead of it. */
  trySend(message: TIn): boolean {
    if (this.ahead || this.#in.free(1) === 0) return false
    this.stage(message, this.nextId++)
    this.publish()
    return true
  }

  /** H2: encodes `message` straight into the next input slot (not yet published). */
  stage(message: TIn, id: number, path?: string): void {
    this.#in.stageMessage(this.#typeId, id, this.#input, message, path)
  }

  /** Encodes `message` as frame `id` in a slot of its own, for the send queue. */
  encode(message: TIn, id: number, path = 'message'): Queued {
    return this.#encodeFrames([message], 0, id, path)[0]!
  }

  /** H3 + H4 of what is staged (the host's), counted as sent. */
  publish(): void {
    this.sent += this.#host.publish()
  }

  /**
   * Sends many messages with one publish: as many as the ring has room for, the rest offered to
   * the send queue in order. All are encoded before any is published: one bad message sends
   * nothing.
   */
  sendBatch(messages: readonly TIn[]): Promise<Record<SendOutcome, number>> {
    const staged = this.ahead ? 0 : Math.min(messages.length, this.#in.free(messages.length))
    const room = this.queue.capacity - this.queue.length
    if (this.queue.policy === 'reject' && messages.length - staged > (this.#blocked.length > 0 ? 0 : room)) {
      throw new RingbridgeError('ERR_RINGBRIDGE_FULL', `sendBatch: ${messages.length} messages do not fit the input ring (${staged} free) and the send queue (${room} free of ${this.queue.capacity}, policy 'reject'): nothing was sent`, {
        details: { capacity: this.queue.capacity, messages: messages.length },
      })
    }
    let rest: Queued[] = []
    const firstId = this.nextId
    try {
      const path = new BatchPath()
      this.#in.stageMany(this.#typeId, firstId, this.#input, messages, staged, path)
      // The rest, for the send queue: encoded now, so one bad message sends nothing.
      if (messages.length > staged) rest = this.#encodeFrames(messages, staged, firstId + staged, new BatchPath())
    } catch (e) {
      this.#in.next = this.#in.published // unstage: nothing of the batch was published
      throw e
    }
    this.nextId += messages.length
    this.publish()
    const counts: Record<SendOutcome, number> = { sent: staged, queued: 0, dropped: 0, undelivered: 0 }
    if (rest.length === 0) return Promise.resolve(counts)
    // Offer every message now, in order: awaiting each before offering the next let a send()
    // made meanwhile slip into the middle of the batch. Outcomes decided now are counted now;
    // only messages that wait (blocked, or displaceable under drop-oldest) get a promise.
    const waiting: Promise<unknown>[] = []
    // The rest (`rest[i..]`) waits for room behind a full queue, in order, as one.
    const waitFrom = (i: number) => {
      const left = messagesIn(rest, i)
      waiting.push(this.#block(rest, i, 'sendBatch').then(() => (counts.queued += left)))
    }
    for (let i = 0; i < rest.length; i++) {
      if (this.#blocked.length > 0 || (this.queue.full && this.queue.policy === 'block')) {
        waitFrom(i)
        break
      }
      const run = rest[i]!
      if (run.count > 1 && run.count > this.queue.room && this.queue.policy !== 'reject') {
        // A run (runs are never made under drop-oldest; under reject the batch was refused
        // above unless all of it fits) longer than the room: what fits is queued, and the rest
        // is dropped (drop-newest) or waits behind the now full queue (block).
        const before = run.count
        this.queue.pushFitting(run)
        counts.queued += before - run.count
        if (this.queue.policy === 'drop-newest') {
          this.queue.countDropped(run.count)
          counts.dropped += run.count
          continue
        }
        waitFrom(i)
        break
      }
      const count = run.count // the flush may split a queued run later
      const o = this.#offer(run, 'sendBatch')
      if (typeof o === 'string') counts[o] += count
      else waiting.push(o.then((outcome) => (counts[outcome] += count)))
    }
    this.#host.pump()
    if (waiting.length === 0) return Promise.resolve(counts)
    return Promise.all(waiting).then(() => counts)
  }

  /** The frames of `messages[from..]`, ids from `firstId`; `path` names a message in errors (a batch's names each). */
  #encodeFrames(messages: readonly TIn[], from: number, firstId: number, path: string | BatchPath): Queued[] {
    const n = messages.length - from
    const slot = this.#in.slotSize
    const max = this.#in.maxPayload
    const codec = this.#input
    const typeId = this.#typeId
    const names = typeof path === 'string' ? { at: () => path } : path
    const slotted = slot <= SLOTTED_MAX
    // What a frame is expected to take: a whole slot, or its header and the schema's largest
    // payload (a hint only: a custom schema may understate it or leave it out). Room for a
    // whole slot is kept before each encode, so any payload the slot allows fits.
    const hint = codec.maxSize
    const expected = slotted ? slot : roundUp16(FRAME_HEADER_BYTES + (Number.isFinite(hint) && hint >= 0 ? Math.min(max, hint) : max))
    // The slotted frames of one buffer are one run, unless each needs its own outcome (drop-oldest).
    const runs = slotted && this.queue.policy !== 'drop-oldest'
    const out: Queued[] = []
    // Buffers grow from 256 KiB to QUEUE_BUFFER_BYTES: a variable-size schema's frames may be far
    // smaller than expected, and a small overflow should not hold a large buffer.
    let grow = 256 << 10
    let i = 0
    while (i < n) {
      const frame = new Uint8Array(Math.max(slot, Math.min(grow, (n - i - 1) * expected + slot)))
      grow = Math.min(grow * 2, QUEUE_BUFFER_BYTES)
      const view = new DataView(frame.buffer)
      const words = new Uint32Array(frame.buffer)
      const first = i
      let at = 0
      for (; i < n && at + slot <= frame.length; i++) {
        const length = codec.encode(view, at + FRAME_HEADER_BYTES, messages[from + i] as TIn, max, names.at(from + i))
        writeFrameHeaderWords(words, at >> 2, length, typeId, firstId + i) // a buffer is at most 16 MiB: `>>` is exact
        const size = slotted ? slot : roundUp16(FRAME_HEADER_BYTES + length)
        if (!runs) out.push(run(firstId + i, frame, at, size, 1))
        at += size
      }
      if (runs) out.push(run(firstId + first, frame, 0, slot, i - first))
    }
    return out
  }

  /** Stages up to `count` raw payloads of `size` bytes from `packed` (checked by the caller) with one publish; never queues. */
  sendPacked(packed: Uint8Array, size: number, count: number): number {
    if (this.queue.length > 0) return 0
    const n = Math.min(count, this.#in.free(count))
    this.#in.stageRaw(this.#typeId, this.nextId, packed, size, n)
    this.nextId += n
    this.publish()
    return n
  }

  /**
   * Offers a message that did not fit the ring to the send queue (or the line of messages
   * blocked behind a full queue) and resolves with its {@link SendOutcome}; `what` names the
   * caller in errors.
   */
  enqueue(item: Queued, what: string): Promise<SendOutcome> {
    this.#checkOpen(what)
    const o = this.#offer(item, what)
    this.#host.pump()
    return typeof o === 'string' ? Promise.resolve(o) : o
  }

  /**
   * {@link enqueue} without the pump: the outcome when it is decided now, else a promise of it
   * (a message that waits behind a full queue, or one a later offer may displace).
   */
  #offer(item: Queued, what: string): SendOutcome | Promise<SendOutcome> {
    // Under `block`, a message waiting for room stays ahead of every later one: later messages
    // wait in line behind it instead of taking the room it waits for.
    if (this.#blocked.length === 0) {
      // Under `drop-oldest` a queued message may be displaced later, so its outcome waits
      // until it is decided; under `drop-newest` only a new message is ever dropped, so the
      // offer decides it now.
      let decided: Promise<SendOutcome> | undefined
      if (this.queue.policy === 'drop-oldest') decided = new Promise<SendOutcome>((resolve) => (item.outcome = resolve))
      // `item` fits whole here unless it is one message (a longer run was split by sendBatch).
      if (item.count <= this.queue.room) {
        this.queue.push(item)
        return decided ?? 'queued'
      }
      if (this.queue.policy === 'drop-newest') {
        this.queue.countDropped(item.count)
        this.#dropped(item)
        return 'dropped'
      }
      if (this.queue.policy === 'drop-oldest') {
        const oldest = this.queue.take(1) as Queued
        this.queue.countDropped(1)
        this.#dropped(oldest)
        this.queue.push(item)
        return decided as Promise<SendOutcome>
      }
      if (this.queue.policy === 'reject') {
        return Promise.reject(
          new RingbridgeError('ERR_RINGBRIDGE_FULL', `${what}: the input ring and the send queue are full (${this.queue.capacity} queued, policy 'reject'); not sent`, {
            details: { capacity: this.queue.capacity },
          }),
        )
      }
    }
    return this.#block([item], 0, what)
  }

  /** Puts `items[from..]` in line behind a full queue; resolves `'queued'` once the last of them is queued. */
  #block(items: Queued[], from: number, what: string): Promise<SendOutcome> {
    return new Promise<SendOutcome>((resolve, reject) => this.#blocked.push({ items, next: from, what, resolve, reject }))
  }

  /** Takes a message that has not reached the ring out of the send queue or the blocked line. */
  withdraw(id: number): boolean {
    // Only a single message can be withdrawn (a batch has no time limit).
    const blocked = this.#blocked.remove((b) => b.items.length === 1 && b.items[0]!.count === 1 && b.items[0]!.id === id)
    if (blocked) {
      blocked.resolve('queued') // its send() promise is settled by the caller's rejection instead
      return true
    }
    return this.queue.remove((q) => q.count === 1 && q.id === id) !== undefined
  }

  /** A message the send queue's dropping policy discarded: its sender learns it, and a request fails. */
  #dropped(q: Queued): void {
    q.outcome?.('dropped')
    this.#onDropped(q.id, new RingbridgeError('ERR_RINGBRIDGE_FULL', `request ${q.id}: dropped by the send queue's '${this.queue.policy}' policy (capacity ${this.queue.capacity}); not sent`, { details: { capacity: this.queue.capacity } }))
  }

  /** Moves queued messages into the ring while it has room, and blocked sends into the queue; returns how many reached the ring. */
  flush(): number {
    let n = 0
    for (;;) {
      const queue = this.queue
      const slot = this.#in.slotSize
      let room = queue.length > 0 ? this.#in.free(queue.length) : 0
      while (room > 0 && queue.length > 0) {
        // The next messages of one batch, whole slots a slot apart in its buffer, copied at
        // once: the front run (as much of it as fits), and the runs or single messages after it
        // that continue it in the same buffer (a batch's messages under drop-oldest are singles).
        const first = queue.take(room) as Queued
        first.outcome?.('sent')
        let count = first.count
        if (first.size === slot) {
          for (let q = queue.peek(); q !== undefined && count < room && q.frame === first.frame && q.at === first.at + count * slot && q.size === slot; q = queue.peek()) {
            const next = queue.take(room - count) as Queued
            next.outcome?.('sent')
            count += next.count
          }
        }
        this.#in.stageFrames(first.frame, first.at, count, count === 1 ? first.size : slot)
        n += count
        room -= count
      }
      if (this.#blocked.length === 0 || this.queue.full) break
      // Blocked messages take the room in the order they were sent (only under `block`: the
      // other policies never block). A run longer than the room leaves its rest in line.
      while (this.#blocked.length > 0 && !this.queue.full) {
        const b = this.#blocked.peek() as Blocked
        while (b.next < b.items.length && !this.queue.full) if (this.queue.pushFitting(b.items[b.next]!)) b.next++
        if (b.next < b.items.length) break
        this.#blocked.shift()
        b.resolve('queued')
      }
    }
    if (n > 0) this.publish()
    const w = this.#roomWaiter
    if (w !== undefined && !this.ahead && this.#in.free(1) > 0) {
      this.#roomWaiter = undefined
      w.disarm?.()
      w.resolve()
    }
    return n
  }

  /** Rejects a `nextReserve()` waiting for room with `errorFor(its caller)`: the kernel is ending. */
  rejectRoomWaiter(errorFor: (what: string) => Error): void {
    const w = this.#roomWaiter
    this.#roomWaiter = undefined
    w?.disarm?.()
    w?.reject(errorFor(w.what))
  }

  /** Rejects every send blocked behind a full queue, and a waiting `nextReserve()`, with `errorFor(its caller)`. */
  rejectBlocked(errorFor: (what: string) => Error): void {
    for (const w of this.#blocked.drain()) w.reject(errorFor(w.what))
    this.rejectRoomWaiter(errorFor)
  }

  /**
   * What the ended kernel never took, oldest first: the ring's frames from `head` to `end`
   * (skip frames of shared producers, PROTOCOL.md §15, are no message), then the send queue,
   * emptied.
   */
  undelivered(head: number, end: number, skipFrames: boolean): TIn[] {
    const undelivered: TIn[] = []
    for (let p = head; p < end; p++) {
      const f = this.#in.frameAt(p)
      if (skipFrames && isSkipFrame(this.#in.view, f.offset, f.length, f.flags)) continue
      undelivered.push(this.#input.decode(this.#in.view, f.offset, f.length))
    }
    for (const q of this.queue.drain()) {
      for (let i = 0; i < q.count; i++) {
        const view = new DataView(q.frame.buffer, q.frame.byteOffset + q.at + i * q.size)
        undelivered.push(this.#input.decode(view, FRAME_HEADER_BYTES, view.getUint32(0, true)))
      }
      q.outcome?.('undelivered')
    }
    return undelivered
  }
}
