/**
 * The sending side of a kernel: messages into the input ring (H2: encoded straight into their
 * slots), or — when the ring is full — into the send queue, whose backpressure policy applies
 * when it is full too; messages that wait for room behind a full queue under `block`; withdrawal
 * of a message that has not reached the ring (a timeout, an abort); and the flush that moves
 * queued messages into the ring as it frees. Publication (H3, H4) is the host's.
 * @internal
 * @module
 */
import type { Schema } from './codec'
import { RingbridgeError } from './errors'
import type { Host } from './host'
import { isSkipFrame } from './protocol'
import { Fifo, MessageQueue } from './queue'
import type { InputRing } from './ring'
import type { SendOutcome } from './types'
import type { Waiter } from './wait'

/** A message that did not fit the ring, encoded. */
export interface Queued {
  id: number
  bytes: Uint8Array
  /** Under a dropping policy: settles its sender's promise once the outcome is final. */
  outcome?: (o: SendOutcome) => void
}

/** A message waiting for room in a full send queue under `block`; `what` names its caller. */
type Blocked = Waiter<SendOutcome> & { item: Queued; what: string }

/**
 * `messages[i]` in a batch's error texts, made into a string only when an error needs it (the
 * codecs take any value whose `toString` is the path): no string per message.
 */
class BatchPath {
  #i = 0
  /** This object, standing for `messages[i]`. */
  at(i: number): string {
    this.#i = i
    return this as unknown as string
  }
  toString(): string {
    return `messages[${this.#i}]`
  }
}

/** The input ring's producer, with the send queue in front of it. */
export class Outbox<TIn> {
  readonly queue: MessageQueue<Queued>
  readonly #blocked = new Fifo<Blocked>()
  readonly #host: Host
  readonly #in: InputRing
  readonly #bytes: Uint8Array
  readonly #input: Schema<TIn>
  readonly #typeId: number
  /** Throws `ERR_RINGBRIDGE_CLOSED` (and the like) for `what` once sends are refused. */
  readonly #checkOpen: (what: string) => void
  /** A request's message the queue's policy dropped: its request fails with `error`. */
  readonly #onDropped: (id: number, error: Error) => void
  /** The next correlation id. */
  nextId = 1
  /** Messages published into the ring. */
  sent = 0

  constructor(host: Host, input: InputRing, bytes: Uint8Array, schema: Schema<TIn>, typeId: number, queue: MessageQueue<Queued>, checkOpen: (what: string) => void, onDropped: (id: number, error: Error) => void) {
    this.#host = host
    this.#in = input
    this.#bytes = bytes
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

  /** Encodes `message` into bytes of its own, for the send queue. */
  encode(message: TIn, path = 'message'): Uint8Array {
    const scratch = new Uint8Array(this.#in.maxPayload)
    const n = this.#input.encode(new DataView(scratch.buffer), 0, message, scratch.length, path)
    return scratch.subarray(0, n)
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
      for (let i = 0; i < staged; i++) this.stage(messages[i] as TIn, firstId + i, path.at(i))
      rest = this.#encodeMany(messages, staged, firstId)
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
    const waiting: Promise<SendOutcome>[] = []
    for (const q of rest) {
      const o = this.#offer(q, 'sendBatch')
      if (typeof o === 'string') counts[o]++
      else waiting.push(o)
    }
    this.#host.pump()
    if (waiting.length === 0) return Promise.resolve(counts)
    return Promise.all(waiting).then((outcomes) => {
      for (const o of outcomes) counts[o]++
      return counts
    })
  }

  /**
   * Encodes `messages[from..]` for the send queue into one buffer (a view of it each): one
   * allocation per batch, not one per message.
   */
  #encodeMany(messages: readonly TIn[], from: number, firstId: number): Queued[] {
    const n = messages.length - from
    if (n <= 0) return []
    const max = this.#in.maxPayload
    const buffer = new Uint8Array(n * max)
    const view = new DataView(buffer.buffer)
    const out: Queued[] = new Array(n)
    const path = new BatchPath()
    for (let i = 0; i < n; i++) {
      const at = i * max
      const length = this.#input.encode(view, at, messages[from + i] as TIn, max, path.at(from + i))
      out[i] = { id: firstId + from + i, bytes: buffer.subarray(at, at + length) }
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
      const r = this.queue.offer(item)
      if (r.status === 'dropped-oldest' || r.status === 'dropped-newest') this.#dropped(r.dropped)
      if (r.status === 'dropped-newest') return 'dropped'
      if (r.status !== 'full') return decided ?? 'queued'
      if (this.queue.policy === 'reject') {
        return Promise.reject(
          new RingbridgeError('ERR_RINGBRIDGE_FULL', `${what}: the input ring and the send queue are full (${this.queue.capacity} queued, policy 'reject'); not sent`, {
            details: { capacity: this.queue.capacity },
          }),
        )
      }
    }
    return new Promise<SendOutcome>((resolve, reject) => this.#blocked.push({ item, what, resolve, reject }))
  }

  /** Takes a message that has not reached the ring out of the send queue or the blocked line. */
  withdraw(id: number): boolean {
    const blocked = this.#blocked.remove((b) => b.item.id === id)
    if (blocked) {
      blocked.resolve('queued') // its send() promise is settled by the caller's rejection instead
      return true
    }
    return this.queue.remove((q) => q.id === id) !== undefined
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
      while (this.queue.length > 0 && this.#in.free(1) > 0) {
        const q = this.queue.shift() as Queued
        this.#in.stage(this.#typeId, q.id, (view, offset) => {
          this.#bytes.set(q.bytes, view.byteOffset + offset)
          return q.bytes.length
        })
        q.outcome?.('sent')
        n++
      }
      if (this.#blocked.length === 0 || this.queue.full) break
      // Blocked messages take the room in the order they were sent.
      while (this.#blocked.length > 0 && !this.queue.full) {
        const b = this.#blocked.shift() as Blocked
        this.queue.offer(b.item)
        b.resolve('queued')
      }
    }
    if (n > 0) this.publish()
    return n
  }

  /** Rejects every send blocked behind a full queue with `errorFor(its caller)`. */
  rejectBlocked(errorFor: (what: string) => Error): void {
    for (const w of this.#blocked.drain()) w.reject(errorFor(w.what))
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
      undelivered.push(this.#input.decode(new DataView(q.bytes.buffer, q.bytes.byteOffset, q.bytes.length), 0, q.bytes.length))
      q.outcome?.('undelivered')
    }
    return undelivered
  }
}
