// Backpressure: every send-queue and reply-queue policy against the CPU backend, and property
// tests of MessageQueue against a plain array model.
import assert from 'node:assert/strict'

import test, { type ExecutionContext } from 'ava'
import fc from 'fast-check'

import { BACKPRESSURE_POLICIES, MessageQueue, Runtime, bytes, u32, type Backpressure, type LaunchOptions, type RingKernel, type Schema } from '../index'
import { codeOf, pendingAfter, sleep, until, within, launchOn , receiveAll } from './helpers'

function launch(t: ExecutionContext, options: Partial<LaunchOptions<number, number>>): Promise<RingKernel<number, number>> {
  return launchOn(t, { handler: 'echo', input: u32, output: u32, ...options })
}

async function assertNoMoreReplies(t: ExecutionContext, k: RingKernel<number, number>): Promise<void> {
  const e = await t.throwsAsync(k.receive({ timeoutMs: 100 }))
  t.is(codeOf(e), 'ERR_RINGBRIDGE_TIMEOUT', 'no reply beyond the expected ones')
}

const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i)

/** A paused kernel whose input ring (4 slots) and send queue (4 items, `policy`) hold 0..7. */
async function pausedAndFull(t: ExecutionContext, policy: Backpressure, queued = range(4, 8)): Promise<RingKernel<number, number>> {
  const k = await launch(t, { capacity: 4, sendQueue: { capacity: 4, policy } })
  await within(k.deactivate(), 5000, 'deactivate')
  t.is(k.state, 'paused')
  for (let i = 0; i < 4; i++) t.true(k.trySend(i), `trySend ${i}`)
  for (const v of queued) await within(k.send(v), 1000, `send ${v} into the send queue`)
  const s = k.stats()
  t.is(s.sent, 4)
  t.is(s.depth.inputRing, 4)
  t.is(s.depth.sendQueue, queued.length)
  return k
}

// ---- send queue -----------------------------------------------------------------------------

test("send queue 'block': send waits for room, nothing is lost", async (t) => {
  const k = await pausedAndFull(t, 'block')
  const blocked = range(8, 20).map((v) => k.send(v))
  const blockedRequest = k.request(20, { timeoutMs: 10_000 })
  t.true(await pendingAfter(blocked[0]!, 50), 'send waits while ring and queue are full')
  t.true(await pendingAfter(Promise.race(blocked), 10))
  t.is(k.stats().sent, 4)
  t.is(k.stats().depth.sendQueue, 4)
  await within(k.activate(), 5000, 'activate')
  await within(Promise.all(blocked), 5000, 'blocked sends resolve after activate')
  t.is(await within(blockedRequest, 5000, 'blocked request'), 20)
  t.deepEqual(await receiveAll(k, 20), range(0, 20))
  await assertNoMoreReplies(t, k)
  t.is(k.stats().dropped.send, 0)
  t.is(k.stats().sent, 21)
})

// Regression: a send blocked under 'block' was woken together with every other waiter, and a
// send made before its wake-up ran took the room first, so unawaited sends arrived out of order.
test("send queue 'block': thousands of unawaited sends arrive in the order they were made", async (t) => {
  const k = await launch(t, { capacity: 4, sendQueue: { capacity: 4, policy: 'block' } })
  const n = 5000
  const sends = range(0, n).map((v) => k.send(v))
  const got = await receiveAll(k, n)
  const firstWrong = got.findIndex((v, i) => v !== i)
  t.is(firstWrong, -1, `reply ${firstWrong} is ${got[firstWrong]}`)
  await within(Promise.all(sends), 5000, 'every send resolves')
  await assertNoMoreReplies(t, k)
})

// A batch's overflow waits in the send queue as runs of frames (send-queue.ts), one entry per
// buffer: the queue's depth and capacity still count messages, a run longer than the room is
// split (what fits is queued, the rest waits or is dropped), and what terminate hands back as
// undelivered comes out of the runs message by message, in order.
test('a batch overflow queued as runs: depth counts messages; split by the room under block and drop-newest; undelivered in order', async (t) => {
  const block = await launch(t, { capacity: 4, sendQueue: { capacity: 10, policy: 'block' } })
  await within(block.deactivate(), 5000, 'deactivate')
  const batch = block.sendBatch(range(0, 30))
  t.true(await pendingAfter(batch, 50), '16 messages wait behind the full queue')
  t.is(block.stats().depth.sendQueue, 10)
  t.is(block.stats().depth.inputRing, 4)
  const after = block.send(30) // behind the batch's waiting rest
  await within(block.activate(), 5000, 'activate')
  t.deepEqual(await within(batch, 5000, 'batch'), { sent: 4, queued: 26, dropped: 0, undelivered: 0 })
  t.is(await within(after, 5000, 'send after the batch'), 'queued')
  t.deepEqual(await receiveAll(block, 31), range(0, 31))

  const drop = await launch(t, { capacity: 4, sendQueue: { capacity: 10, policy: 'drop-newest' } })
  await within(drop.deactivate(), 5000, 'deactivate')
  t.deepEqual(await drop.sendBatch(range(0, 30)), { sent: 4, queued: 10, dropped: 16, undelivered: 0 })
  t.is(drop.stats().dropped.send, 16)
  t.deepEqual(await drop.sendBatch(range(30, 33)), { sent: 0, queued: 0, dropped: 3, undelivered: 0 })
  t.is(drop.stats().depth.sendQueue, 10)
  await within(drop.activate(), 5000, 'activate')
  t.deepEqual(await receiveAll(drop, 14), range(0, 14))
  await assertNoMoreReplies(t, drop)

  const abandon = await launch(t, { capacity: 4, sendQueue: { capacity: 1000, policy: 'block' } })
  await within(abandon.deactivate(), 5000, 'deactivate')
  t.deepEqual(await abandon.sendBatch(range(0, 600)), { sent: 4, queued: 596, dropped: 0, undelivered: 0 })
  t.is(await abandon.send(600), 'queued')
  const report = await within(abandon.terminate({ mode: 'abandon' }), 10_000, 'terminate abandon')
  t.deepEqual(report.undelivered, range(0, 601))
})

// Runs that span several queue buffers (8192 frames of 32 B fill the first), through a queue
// smaller than one run: a request that times out while blocked behind a split batch is withdrawn;
// terminate drains every message in order, or under abandon hands back the ring and the queue and
// rejects what still waits. Under reject, a batch that fits the queue exactly is queued whole.
test('runs across buffers through a small queue: a withdrawn request between them, terminate drain and abandon, reject at the exact fit', async (t) => {
  const N = 20_000
  for (const mode of ['drain', 'abandon'] as const) {
    const k = await launch(t, { capacity: 4, slotSize: 32, sendQueue: { capacity: 7, policy: 'block' } })
    await within(k.deactivate(), 5000, 'deactivate')
    const batch = k.sendBatch(range(0, N))
    const timedOut = t.throwsAsync(k.request(999_999, { timeoutMs: 30 }))
    const after = k.send(N)
    t.is(codeOf(await within(timedOut, 5000, 'request timeout')), 'ERR_RINGBRIDGE_TIMEOUT')
    t.is(k.stats().depth.sendQueue, 7)
    if (mode === 'drain') {
      const report = within(k.terminate({ mode }), 20_000, 'terminate drain (of a paused kernel: it resumes it)')
      t.deepEqual(await within(batch, 20_000, 'batch'), { sent: 4, queued: N - 4, dropped: 0, undelivered: 0 })
      t.is(await within(after, 5000, 'send after the batch'), 'queued')
      t.deepEqual((await report).undelivered, [])
      const got = await receiveAll(k, N + 1)
      const wrong = got.findIndex((v, i) => v !== i)
      t.is(wrong, -1, `reply ${wrong} is ${got[wrong]}`)
    } else {
      const report = await within(k.terminate({ mode }), 10_000, 'terminate abandon')
      t.deepEqual(report.undelivered, range(0, 11), 'the ring (4) and the queue (7), in order')
      t.is(codeOf(await t.throwsAsync(within(batch, 5000, 'blocked batch'))), 'ERR_RINGBRIDGE_CLOSED')
      t.is(codeOf(await t.throwsAsync(within(after, 5000, 'blocked send'))), 'ERR_RINGBRIDGE_CLOSED')
    }
  }
  const reject = await launch(t, { capacity: 4, slotSize: 32, sendQueue: { capacity: 10, policy: 'reject' } })
  await within(reject.deactivate(), 5000, 'deactivate')
  t.deepEqual(await reject.sendBatch(range(0, 14)), { sent: 4, queued: 10, dropped: 0, undelivered: 0 })
  t.is(codeOf(await t.throwsAsync(reject.sendBatch([14]))), 'ERR_RINGBRIDGE_FULL')
  await within(reject.activate(), 5000, 'activate')
  t.deepEqual(await receiveAll(reject, 14), range(0, 14))
})

// Regression: sendBatch queued its overflow one message per microtask, so a send() made right
// after it landed in the middle of the batch.
test('a send made right after a sendBatch that overflows the ring arrives after the whole batch', async (t) => {
  const k = await launch(t, { capacity: 4, sendQueue: { capacity: 64, policy: 'block' } })
  await within(k.deactivate(), 5000, 'deactivate')
  const batch = k.sendBatch(range(0, 40))
  const after = k.send(1000)
  const request = k.request(2000, { timeoutMs: 10_000 })
  await within(k.activate(), 5000, 'activate')
  await within(Promise.all([batch, after]), 5000, 'sends resolve')
  t.is(await within(request, 5000, 'request'), 2000)
  t.deepEqual(await receiveAll(k, 41), [...range(0, 40), 1000])
})

// The send queue holds a batch's overflow as frames a slot apart in one buffer and flushes runs
// of them with one copy per contiguous span of the ring (one queue entry per run: send-queue.ts):
// random interleavings of batches, single sends and requests over tiny rings (every run wraps),
// a small queue, and pauses that let the ring fill. Every reply arrives once, in send order;
// under the dropping policies what is missing is exactly what the outcomes counted as dropped,
// and the rest keeps its order.
test('random batches, sends and requests through a small send queue: nothing lost, duplicated or reordered', async (t) => {
  const op = fc.oneof(
    fc.record({ kind: fc.constant('batch' as const), n: fc.integer({ min: 1, max: 24 }) }),
    fc.record({ kind: fc.constant('send' as const) }),
    fc.record({ kind: fc.constant('request' as const) }),
    fc.record({ kind: fc.constant('pause' as const) }),
    fc.record({ kind: fc.constant('tick' as const) }),
  )
  await fc.assert(
    // Slots of 64 B are queued whole (runs); slots of 1 KiB only as their frames' bytes.
    fc.asyncProperty(fc.constantFrom(2, 4, 8), fc.constantFrom(64, 1024), fc.constantFrom(1, 5, 64), fc.constantFrom<Backpressure>('block', 'drop-newest', 'drop-oldest'), fc.array(op, { minLength: 1, maxLength: 40 }), async (capacity, slotSize, queue, policy, ops) => {
      const rt = await Runtime.open({ backend: 'cpu' })
      try {
        const k = await rt.launch({ handler: 'echo', input: u32, output: u32, capacity, slotSize, sendQueue: { capacity: queue, policy } })
        let seq = 0
        let dropped = 0
        const sends: Promise<unknown>[] = []
        const requests: Promise<void>[] = []
        let paused = false
        for (const o of ops) {
          if (o.kind === 'batch') {
            const from = seq
            seq += o.n
            sends.push(k.sendBatch(range(from, seq)).then((c) => void (dropped += c.dropped)))
          } else if (o.kind === 'send') {
            sends.push(k.send(seq++).then((outcome) => void (outcome === 'dropped' && dropped++)))
          } else if (o.kind === 'request') {
            const v = 1_000_000 + requests.length
            requests.push(k.request(v, { timeoutMs: 10_000 }).then(
              (r) => assert.equal(r, v),
              (e) => assert.equal(codeOf(e), 'ERR_RINGBRIDGE_FULL'), // dropped by drop-newest
            ))
          } else if (o.kind === 'pause') {
            await (paused ? k.activate() : k.deactivate())
            paused = !paused
          } else await sleep(0)
        }
        if (paused) await k.activate()
        await within(Promise.all([...sends, ...requests]), 10_000, 'every send and request settles')
        if (policy === 'block') t.is(dropped, 0)
        const got = await receiveAll(k, seq - dropped)
        const wrong = got.findIndex((v, i) => (policy === 'block' ? v !== i : i > 0 && v <= got[i - 1]!) || v >= seq)
        assert.equal(wrong, -1, `reply ${wrong} is ${got[wrong]} (capacity ${capacity}, slot ${slotSize}, queue ${queue}, ${policy})`)
        const report = await within(k.terminate(), 10_000, 'terminate')
        assert.deepEqual(report.undelivered, [])
      } finally {
        await rt.close()
      }
    }),
    { numRuns: 40 },
  )
  t.pass()
})

// A batch's overflow is held in buffers of at most 16 MiB, and with large slots only as its
// frames' bytes: 70 000 four-byte messages for 64 KiB slots took one 4.6 GB typed array (past
// Node's 4 GiB limit: a RangeError, nothing sent); they now take about 2 MB.
test('sendBatch of 70 000 small messages over 64 KiB slots: queued compactly, all delivered in order', async (t) => {
  const k = (await launchOn(t, { handler: 'echo', input: bytes(), output: bytes(), capacity: 2, slotSize: 65_536, sendQueue: { capacity: 100_000, policy: 'block' } })) as RingKernel<Uint8Array, Uint8Array>
  await within(k.deactivate(), 5000, 'deactivate')
  const n = 70_000
  const messages = Array.from({ length: n }, (_, i) => new Uint8Array(new Uint32Array([i]).buffer))
  const counts = await within(k.sendBatch(messages), 10_000, 'sendBatch')
  t.deepEqual(counts, { sent: 2, queued: n - 2, dropped: 0, undelivered: 0 })
  await within(k.activate(), 5000, 'activate')
  let next = 0
  while (next < n) {
    for (const r of await k.receiveBatch(8192, { timeoutMs: 10_000 })) {
      if (new DataView(r.buffer, r.byteOffset).getUint32(0, true) !== next) return t.fail(`reply ${next} is wrong`)
      next++
    }
  }
  t.is(next, n)
  await within(k.terminate(), 10_000, 'terminate')
})

// The send queue sizes its buffers from a schema's maxSize, which is only a hint: a custom
// schema may understate it or leave it out. Queued messages then threw a bare RangeError (the
// buffer was too small) although the same message went through whenever the ring had room.
test('a custom schema whose maxSize understates its messages, or has none, queues them like any other', async (t) => {
  const enc = new TextEncoder()
  const dec = new TextDecoder()
  const text = (maxSize: number | undefined) =>
    ({
      kind: 'text',
      size: undefined,
      align: 1,
      maxSize,
      encode(view: DataView, offset: number, value: string, capacity: number) {
        const b = enc.encode(value)
        if (b.length > capacity) throw new RangeError('too large')
        new Uint8Array(view.buffer, view.byteOffset + offset, b.length).set(b)
        return b.length
      },
      decode: (view: DataView, offset: number, length: number) => dec.decode(new Uint8Array(view.buffer, view.byteOffset + offset, length)),
    }) as unknown as Schema<string>
  for (const maxSize of [64, undefined]) {
    const k = (await launchOn(t, { handler: 'echo', input: text(maxSize), output: text(maxSize), capacity: 1, slotSize: 4096 })) as RingKernel<string, string>
    await within(k.deactivate(), 5000, 'deactivate')
    const sent = ['x'.repeat(200), 'y'.repeat(1000), 'a', 'b'.repeat(4000)]
    t.is(await k.send(sent[0]!), 'sent')
    t.is(await k.send(sent[1]!), 'queued', `maxSize ${maxSize}`)
    t.deepEqual(await k.sendBatch(sent.slice(2)), { sent: 0, queued: 2, dropped: 0, undelivered: 0 })
    await within(k.activate(), 5000, 'activate')
    t.deepEqual(await receiveAll(k, 4), sent)
    await within(k.terminate(), 10_000, 'terminate')
  }
})

test("send queue 'reject': a send that finds ring and queue full throws ERR_RINGBRIDGE_FULL and is not sent", async (t) => {
  const k = await pausedAndFull(t, 'reject')
  const e = await t.throwsAsync(within(k.send(8), 2000, 'k.send(8)'))
  t.is(codeOf(e), 'ERR_RINGBRIDGE_FULL')
  t.is((e as { details?: Record<string, unknown> }).details?.capacity, 4)
  t.is(codeOf(await t.throwsAsync(k.request(9, { timeoutMs: 5000 }))), 'ERR_RINGBRIDGE_FULL')
  t.is(codeOf(await t.throwsAsync(within(k.sendBatch([10, 11]), 2000, 'k.sendBatch([10, 11])'))), 'ERR_RINGBRIDGE_FULL')
  t.false(k.trySend(12))
  const s = k.stats()
  t.is(s.sent, 4)
  t.is(s.depth.sendQueue, 4)
  t.is(s.pendingRequests, 0)
  t.is(s.dropped.send, 0, "'reject' refuses; it does not drop")
  await within(k.activate(), 5000, 'activate')
  t.deepEqual(await receiveAll(k, 8), range(0, 8))
  await assertNoMoreReplies(t, k)
  // Room again: sends go through.
  await within(k.send(13), 1000, 'send after the queue emptied')
  t.deepEqual(await receiveAll(k, 1), [13])
})

test("send queue 'drop-newest': the new message is dropped and counted; a dropped request rejects ERR_RINGBRIDGE_FULL", async (t) => {
  const k = await pausedAndFull(t, 'drop-newest')
  // The caller learns of the drop from the outcome (issue #10, item 4).
  for (const v of [8, 9, 10]) t.is(await within(k.send(v), 1000, `send ${v}`), 'dropped', `send ${v}`)
  t.is(k.stats().dropped.send, 3)
  const e = await t.throwsAsync(within(k.request(11, { timeoutMs: 5000 }), 6000, 'dropped request'))
  t.is(codeOf(e), 'ERR_RINGBRIDGE_FULL')
  t.is(k.stats().dropped.send, 4)
  t.is(k.stats().pendingRequests, 0)
  t.is(k.stats().depth.sendQueue, 4)
  await within(k.activate(), 5000, 'activate')
  t.deepEqual(await receiveAll(k, 8), range(0, 8))
  await assertNoMoreReplies(t, k)
  t.is(k.stats().processed, 8)
})

test("send queue 'drop-oldest': the oldest queued message is dropped and counted; a dropped request rejects ERR_RINGBRIDGE_FULL", async (t) => {
  // Queue holds [request 100, 4, 5, 6] behind the full ring [0, 1, 2, 3].
  const k = await pausedAndFull(t, 'drop-oldest', [])
  const request = k.request(100, { timeoutMs: 10_000 })
  // A queued message may still be displaced, so each send() settles when its fate is decided:
  // these are not awaited until then (issue #10, item 4: a dropped send resolved like a sent one).
  const sends = new Map<number, Promise<string>>()
  for (const v of [4, 5, 6]) sends.set(v, k.send(v))
  t.is(k.stats().depth.sendQueue, 4)
  t.is(k.stats().dropped.send, 0)
  sends.set(7, k.send(7))
  t.is(codeOf(await t.throwsAsync(within(request, 1000, 'dropped request'))), 'ERR_RINGBRIDGE_FULL')
  for (const v of [8, 9]) sends.set(v, k.send(v))
  t.is(await within(sends.get(4)!, 1000, 'send 4 settles'), 'dropped')
  t.is(await within(sends.get(5)!, 1000, 'send 5 settles'), 'dropped')
  const s = k.stats()
  t.is(s.dropped.send, 3)
  t.is(s.depth.sendQueue, 4)
  t.is(s.pendingRequests, 0)
  await within(k.activate(), 5000, 'activate')
  t.deepEqual(await receiveAll(k, 8), [0, 1, 2, 3, 6, 7, 8, 9])
  for (const v of [6, 7, 8, 9]) t.is(await within(sends.get(v)!, 1000, `send ${v} settles`), 'sent', `send ${v}`)
  await assertNoMoreReplies(t, k)
})

// ---- reply queue ----------------------------------------------------------------------------

test("reply queue 'block': nobody receiving stalls the kernel; receiving resumes it with every reply in order", async (t) => {
  const n = 40
  const k = await launch(t, { capacity: 4, replyQueue: { capacity: 2, policy: 'block' } })
  await within(k.sendBatch(range(0, n)), 5000, 'sendBatch')
  // Stalled: the reply queue is full, so the host stops draining; the output ring fills up.
  await until(() => k.stats().depth.replyQueue === 2 && k.stats().depth.outputRing === 4, 5000, 'reply queue and output ring full')
  const stalled = k.stats().processed
  for (let i = 0; i < 10; i++) {
    await sleep(10)
    t.is(k.stats().processed, stalled, 'the kernel stays stalled')
  }
  const s = k.stats()
  t.true(stalled < n, `processed ${stalled} of ${n}`)
  // Every handled message's reply sits in the output ring or the reply queue: at most 4 + 2.
  t.true(stalled <= 6, `processed ${stalled}`)
  t.is(s.depth.replyQueue, 2)
  t.is(s.dropped.reply, 0)
  t.deepEqual(await receiveAll(k, n), range(0, n))
  await assertNoMoreReplies(t, k)
  t.is(k.stats().processed, n)
  t.is(k.stats().dropped.reply, 0)
})

/** Sends 0..19 with nobody receiving and waits until every reply is out of the kernel. */
async function twentyReplies(t: ExecutionContext, policy: Backpressure): Promise<RingKernel<number, number>> {
  const k = await launch(t, { capacity: 64, replyQueue: { capacity: 4, policy } })
  await within(k.sendBatch(range(0, 20)), 5000, 'sendBatch')
  await until(() => {
    const s = k.stats()
    return s.processed === 20 && s.replied + s.depth.outputRing === 20
  }, 5000, 'all 20 replies produced')
  return k
}

test("reply queue 'drop-oldest': the newest replies survive and the drops are counted", async (t) => {
  const k = await twentyReplies(t, 'drop-oldest')
  t.deepEqual(k.tryReceiveMany(), [16, 17, 18, 19])
  t.is(k.stats().dropped.reply, 16)
  t.is(k.stats().replied, 20)
  await assertNoMoreReplies(t, k)
})

test("reply queue 'drop-newest': the oldest replies survive and the drops are counted", async (t) => {
  const k = await twentyReplies(t, 'drop-newest')
  t.deepEqual(await receiveAll(k, 4), [0, 1, 2, 3])
  t.is(k.stats().dropped.reply, 16)
  await assertNoMoreReplies(t, k)
})

test("reply queue 'reject': the next receive rejects once with ERR_RINGBRIDGE_OVERFLOW, then the queued replies follow", async (t) => {
  const k = await twentyReplies(t, 'reject')
  const e = await t.throwsAsync(k.receive({ timeoutMs: 1000 }))
  t.is(codeOf(e), 'ERR_RINGBRIDGE_OVERFLOW')
  t.is((e as { details?: Record<string, unknown> }).details?.dropped, 16)
  t.is(k.stats().dropped.reply, 16)
  for (const v of [0, 1, 2, 3]) t.is(await within(k.receive({ timeoutMs: 1000 }), 2000, `receive ${v}`), v)
  await assertNoMoreReplies(t, k)
})

// Regression: tryReceiveMany (and receiveBatch) took the overflow marker as a value and returned
// `undefined` in place of the error.
test("reply queue 'reject': tryReceiveMany and receiveBatch report the overflow before the replies", async (t) => {
  const k = await twentyReplies(t, 'reject')
  t.is(codeOf(t.throws(() => k.tryReceiveMany())), 'ERR_RINGBRIDGE_OVERFLOW')
  t.deepEqual(k.tryReceiveMany(), [0, 1, 2, 3])
  const k2 = await twentyReplies(t, 'reject')
  t.is(codeOf(await t.throwsAsync(k2.receiveBatch(100, { timeoutMs: 1000 }))), 'ERR_RINGBRIDGE_OVERFLOW')
  t.deepEqual(await within(k2.receiveBatch(100, { timeoutMs: 1000 }), 2000, 'receiveBatch'), [0, 1, 2, 3])
})

test('queue options are validated at launch', async (t) => {
  const rt = await Runtime.open({ backend: 'cpu' })
  t.teardown(() => within(rt.close(), 15_000, 'runtime close'))
  const bad = [
    { sendQueue: { capacity: 0 } },
    { sendQueue: { capacity: 1.5 } },
    { replyQueue: { capacity: (1 << 24) + 1 } },
    { sendQueue: { policy: 'drop-all' as Backpressure } },
    { replyQueue: { policy: 'Block' as Backpressure } },
  ]
  for (const options of bad) {
    const e = await t.throwsAsync(rt.launch({ handler: 'echo', input: u32, output: u32, ...options }), undefined, JSON.stringify(options))
    t.is(codeOf(e), 'ERR_RINGBRIDGE_INVALID_ARGUMENT', JSON.stringify(options))
  }
  t.is(rt.kernels.length, 0)
})

// ---- MessageQueue properties ----------------------------------------------------------------

type Op = { kind: 'offer'; value: number } | { kind: 'push'; value: number } | { kind: 'shift' } | { kind: 'peek' } | { kind: 'drain' }

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.integer().map((value) => ({ kind: 'offer' as const, value })) },
  { weight: 1, arbitrary: fc.integer().map((value) => ({ kind: 'push' as const, value })) },
  { weight: 4, arbitrary: fc.constant({ kind: 'shift' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'peek' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'drain' as const }) },
)

test('MessageQueue behaves like a bounded array under every policy', (t) => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 8 }), fc.constantFrom(...BACKPRESSURE_POLICIES), fc.array(opArb, { maxLength: 200 }), (capacity, policy, ops) => {
      const q = new MessageQueue<number>({ capacity, policy })
      const model: number[] = []
      let dropped = 0
      for (const op of ops) {
        switch (op.kind) {
          case 'offer':
          case 'push': {
            let expected: unknown
            if (model.length < capacity) {
              model.push(op.value)
              expected = { status: 'queued' }
            } else if (policy === 'drop-newest') {
              dropped++
              expected = { status: 'dropped-newest', dropped: op.value }
            } else if (policy === 'drop-oldest') {
              dropped++
              expected = { status: 'dropped-oldest', dropped: model.shift() }
              model.push(op.value)
            } else {
              expected = { status: 'full' }
            }
            if (op.kind === 'offer') {
              assert.deepEqual(q.offer(op.value), expected)
            } else if ((expected as { status: string }).status === 'full') {
              assert.throws(() => q.push(op.value), { code: 'ERR_RINGBRIDGE_FULL' })
            } else {
              assert.deepEqual(q.push(op.value), expected)
            }
            break
          }
          case 'shift':
            assert.equal(q.shift(), model.shift())
            break
          case 'peek':
            assert.equal(q.peek(), model[0])
            break
          case 'drain':
            assert.deepEqual(q.drain(), model.splice(0))
            break
        }
        assert.equal(q.length, model.length, `length after ${JSON.stringify(op)}`)
        assert.equal(q.dropped, dropped, `dropped after ${JSON.stringify(op)}`)
        assert.equal(q.full, model.length >= capacity, `full after ${JSON.stringify(op)}`)
        assert.equal(q.peek(), model[0], `peek after ${JSON.stringify(op)}`)
      }
      assert.deepEqual(q.drain(), model)
      assert.equal(q.length, 0)
    }),
    { numRuns: 300 },
  )
  t.pass()
})

test('MessageQueue keeps FIFO order across its internal compaction', (t) => {
  // Long runs go past the 1024-item compaction threshold of shift().
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 3000 }), fc.array(fc.integer({ min: 1, max: 700 }), { minLength: 1, maxLength: 20 }), (capacity, chunks) => {
      const q = new MessageQueue<number>({ capacity, policy: 'drop-oldest' })
      let next = 0
      let expectedHead = 0
      let taken = 0
      for (const [i, size] of chunks.entries()) {
        for (let j = 0; j < size; j++) q.offer(next++)
        expectedHead = Math.max(expectedHead, next - capacity)
        const take = i % 2 === 0 ? Math.floor(q.length / 2) : q.length
        for (let j = 0; j < take; j++) {
          const v = q.shift()
          assert.equal(v, expectedHead)
          expectedHead++
          taken++
        }
      }
      // Every item offered was taken, dropped, or is still queued.
      assert.equal(q.length, next - expectedHead)
      assert.equal(q.dropped, next - taken - q.length)
    }),
    { numRuns: 100 },
  )
  t.pass()
})

test('MessageQueue.force ignores the capacity; options are validated', (t) => {
  const q = new MessageQueue<number>({ capacity: 1, policy: 'reject' })
  t.deepEqual(q.offer(1), { status: 'queued' })
  t.deepEqual(q.offer(2), { status: 'full' })
  q.force(3)
  t.is(q.length, 2)
  t.deepEqual(q.drain(), [1, 3])
  const d = new MessageQueue<number>()
  t.is(d.capacity, 4096)
  t.is(d.policy, 'block')
  for (const capacity of [0, -1, 1.5, (1 << 24) + 1, Number.NaN]) {
    const e = t.throws(() => new MessageQueue({ capacity }))
    t.true(e instanceof RangeError, String(capacity))
    t.is(codeOf(e), 'ERR_RINGBRIDGE_INVALID_ARGUMENT')
  }
  const e = t.throws(() => new MessageQueue({ policy: 'fifo' as Backpressure }))
  t.true(e instanceof TypeError)
  t.is(codeOf(e), 'ERR_RINGBRIDGE_INVALID_ARGUMENT')
})
