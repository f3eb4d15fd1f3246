// End-to-end streaming through the `echo` handler on the CPU backend: volume, order, wraparound
// at tiny capacities, and all-or-nothing batches.
import test, { type ExecutionContext } from 'ava'

import { Runtime, bytes, struct, u32, type LaunchOptions, type RingKernel } from '../index'
import { within, launchOn as launch } from './helpers'

const Msg = struct({ seq: u32, check: u32 })
type Msg = { seq: number; check: number }

/** A cheap integer hash, so a corrupted, misrouted or duplicated reply cannot pass by accident. */
const hash = (seq: number) => Math.imul(seq ^ 0x9e3779b9, 0x85ebca6b) >>> 0
const msg = (seq: number): Msg => ({ seq, check: hash(seq) })

/**
 * Streams `total` messages through `kernel` with sendBatch/receiveBatch and checks each reply in
 * order; returns the first mismatch (with its index) or undefined.
 */
async function stream(kernel: RingKernel<Msg, Msg>, total: number, batch: number): Promise<string | undefined> {
  let sendError: unknown
  const sender = (async () => {
    for (let s = 0; s < total; s += batch) {
      const messages: Msg[] = []
      for (let i = s; i < Math.min(total, s + batch); i++) messages.push(msg(i))
      await within(kernel.sendBatch(messages), 10_000, `sendBatch of messages ${s}..`)
    }
  })().catch((e: unknown) => {
    sendError = e
  })
  let expected = 0
  while (expected < total) {
    if (sendError !== undefined) throw sendError
    let replies: Msg[]
    try {
      replies = await kernel.receiveBatch(4096, { timeoutMs: 10_000 })
    } catch (e) {
      throw new Error(`waiting for reply ${expected}: ${(e as Error).message}`, { cause: e })
    }
    for (const r of replies) {
      if (expected >= total) return `extra reply after ${total}: seq ${r.seq}`
      if (r.seq !== expected || r.check !== hash(expected)) {
        return `reply ${expected}: got seq ${r.seq} check ${r.check}, expected check ${hash(expected)}`
      }
      expected++
    }
  }
  await sender
  if (sendError !== undefined) throw sendError
  return undefined
}

test('echo streams 1 000 000 checksummed messages in order, none lost or duplicated', async (t) => {
  const total = 1_000_000
  const k = await launch(t, { handler: 'echo', input: Msg, output: Msg, capacity: 1024 })
  t.is(k.backend, 'cpu')
  const mismatch = await stream(k, total, 1024)
  t.is(mismatch, undefined)
  const s = k.stats()
  t.is(s.sent, total)
  t.is(s.processed, total)
  t.is(s.replied, total)
  t.deepEqual(s.dropped, { send: 0, reply: 0 })
  t.deepEqual(s.errors, { replies: 0, kernel: 0, firstKernelError: 'none' })
  // No duplicate trails behind the last reply.
  const extra = await t.throwsAsync(k.receive({ timeoutMs: 50 }))
  t.is((extra as { code?: string }).code, 'ERR_RINGBRIDGE_TIMEOUT')
  const report = await within(k.terminate(), 10_000, 'terminate')
  t.is(report.processed, total)
  t.deepEqual(report.undelivered, [])
})

for (const capacity of [2, 4]) {
  test(`positions wrap around a ring of capacity ${capacity} and keep order`, async (t) => {
    const total = 30_000
    const k = await launch(t, { handler: 'echo', input: Msg, output: Msg, capacity })
    t.is(k.capacity, capacity)
    t.is(await stream(k, total, 64), undefined)
    const s = k.stats()
    t.is(s.processed, total)
    t.is(s.replied, total)
    t.deepEqual(s.depth, { sendQueue: 0, inputRing: 0, outputRing: 0, replyQueue: 0 })
  })

  test(`single send/receive round trips wrap a ring of capacity ${capacity}`, async (t) => {
    const k = await launch(t, { handler: 'echo', input: Msg, output: Msg, capacity })
    for (let i = 0; i < 2000; i++) {
      await within(k.send(msg(i)), 5000, `send ${i}`)
      const r = await within(k.receive({ timeoutMs: 5000 }), 6000, `receive ${i}`)
      if (r.seq !== i || r.check !== hash(i)) return t.fail(`reply ${i}: got ${JSON.stringify(r)}`)
    }
    t.is(k.stats().processed, 2000)
  })
}

test('trySend fills the ring, then reports full without queueing', async (t) => {
  const k = await launch(t, { handler: 'echo', input: Msg, output: Msg, capacity: 4 })
  await within(k.deactivate(), 5000, 'deactivate')
  for (let i = 0; i < 4; i++) t.true(k.trySend(msg(i)), `trySend ${i}`)
  t.false(k.trySend(msg(4)))
  t.is(k.stats().sent, 4)
  t.is(k.stats().depth.inputRing, 4)
  t.is(k.stats().depth.sendQueue, 0)
  await within(k.activate(), 5000, 'activate')
  const got: number[] = []
  while (got.length < 4) got.push((await k.receive({ timeoutMs: 5000 })).seq)
  t.deepEqual(got, [0, 1, 2, 3])
})

test('sendBatch with one invalid message sends nothing', async (t) => {
  const k = await launch(t, { handler: 'echo', input: Msg, output: Msg, capacity: 8 })
  // Bad message inside the part that would go straight into the ring. (Regression: the error named
  // it `message.check` rather than its place in the batch.)
  const bad = { seq: 2, check: -1 } as Msg
  const e1 = await t.throwsAsync(within(k.sendBatch([msg(0), msg(1), bad, msg(3)]), 2000, 'k.sendBatch([msg(0), msg(1), bad, msg(3)])'))
  t.is((e1 as { code?: string }).code, 'ERR_RINGBRIDGE_INVALID_MESSAGE')
  t.regex(e1!.message, /messages\[2\]\.check/)
  t.is(k.stats().sent, 0)
  // Bad message inside the part that would go to the send queue (ring paused and full).
  await within(k.deactivate(), 5000, 'deactivate')
  const batch: Msg[] = []
  for (let i = 0; i < 12; i++) batch.push(msg(i))
  batch[10] = { seq: 10 } as Msg
  const e2 = await t.throwsAsync(within(k.sendBatch(batch), 2000, 'k.sendBatch(batch)'))
  t.is((e2 as { code?: string }).code, 'ERR_RINGBRIDGE_INVALID_MESSAGE')
  t.regex(e2!.message, /messages\[10\]\.check/)
  const s = k.stats()
  t.is(s.sent, 0)
  t.is(s.depth.inputRing, 0)
  t.is(s.depth.sendQueue, 0)
  await within(k.activate(), 5000, 'activate')
  const none = await t.throwsAsync(k.receive({ timeoutMs: 100 }))
  t.is((none as { code?: string }).code, 'ERR_RINGBRIDGE_TIMEOUT')
  t.is(k.stats().processed, 0)
  // The kernel still works, and the next message is the first reply.
  await within(k.sendBatch([msg(100), msg(101)]), 5000, 'good batch')
  const got: Msg[] = []
  while (got.length < 2) got.push(...(await within(k.receiveBatch(2, { timeoutMs: 5000 }), 6000, `receive reply ${got.length}`)))
  t.deepEqual(got, [msg(100), msg(101)])
  t.is(k.stats().sent, 2)
})

// Regression (found measuring 4 KiB chunks on an H100): a variable-size output schema got
// 256-byte output slots even with `slotSize: 4096`, so every echo over 240 bytes came back as a
// REPLY_TOO_LARGE error frame. The output slot now follows `slotSize` for such schemas.
test('a bytes() echo with slotSize 4096 answers 4 KiB requests with 4 KiB replies', async (t) => {
  const k = await launch(t, { handler: 'echo', input: bytes(4080), output: bytes(4080), capacity: 8, slotSize: 4096 })
  const big = new Uint8Array(4080).map((_, i) => (i * 7) & 0xff)
  const reply = await within(k.request(big, { timeoutMs: 5000 }), 6000, '4 KiB request')
  t.deepEqual(reply, big)
  const small = await launch(t, { handler: 'echo', input: bytes(4080), output: bytes(4080), capacity: 8, slotSize: 4096, outputSlotSize: 256 })
  const e = await t.throwsAsync(small.request(big, { timeoutMs: 5000 }))
  t.is((e as { code?: string }).code, 'ERR_RINGBRIDGE_KERNEL_ERROR', 'an explicit smaller output slot still refuses what does not fit')
})
