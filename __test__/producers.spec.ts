// Several producers share one kernel's input ring (producers: 'shared'), each in its own worker
// thread, with no lock on the hot path (runs in CI): no message lost, duplicated or reordered
// per producer; the claim protocol's edges (a full ring, bad input, terminate) hold.
import { join } from 'node:path'
import { Worker } from 'node:worker_threads'

import test from 'ava'

import { RingProducer, struct, u32 } from '../index'
import { codeOf, launchOn, within } from './helpers'

const Tagged = struct({ producer: u32, seq: u32 })
const PER_PRODUCER = Number(process.env.RINGBRIDGE_PRODUCER_MESSAGES ?? 1_000_000)

function startProducer(handle: ReturnType<Awaited<ReturnType<typeof launchOn>>['producer']>, producer: number, count: number) {
  const worker = new Worker(join(__dirname, 'producer-worker.js'), { workerData: { handle, producer, count, batch: 512 }, transferList: [handle.wake] })
  return new Promise<number>((resolve, reject) => {
    worker.once('message', (m: { sent?: number; error?: string }) => (m.error ? reject(new Error(m.error)) : resolve(m.sent!)))
    worker.once('error', reject)
  })
}

test(`4 worker threads × ${PER_PRODUCER} messages share one input ring: none lost, duplicated or reordered per producer`, async (t) => {
  const k = await launchOn(t, { handler: 'echo', input: Tagged, output: Tagged, capacity: 4096, producers: 'shared' })
  const P = 4
  const senders = Array.from({ length: P }, (_, i) => startProducer(k.producer(), i, PER_PRODUCER))
  const next = new Array<number>(P).fill(0)
  let got = 0
  let bad = ''
  while (got < P * PER_PRODUCER) {
    for (const r of await within(k.receiveBatch(16_384), 30_000, `replies after ${got}`)) {
      if (r.producer >= P || r.seq !== next[r.producer]) bad ||= `reply ${got}: producer ${r.producer} seq ${r.seq}, expected ${next[r.producer]}`
      else next[r.producer]!++
      got++
    }
  }
  t.is(bad, '')
  t.deepEqual(await Promise.all(senders), new Array(P).fill(PER_PRODUCER))
  t.deepEqual(next, new Array(P).fill(PER_PRODUCER))
  const report = await k.terminate()
  t.deepEqual(report.undelivered, [])
  t.is(k.stats().processed, P * PER_PRODUCER)
})

test('a shared input refuses the kernel object\'s own sends, and a producer refuses bad input before claiming', async (t) => {
  const k = await launchOn(t, { handler: 'echo', input: Tagged, output: Tagged, capacity: 8, producers: 'shared' })
  const own = await t.throwsAsync(k.send({ producer: 0, seq: 0 }))
  t.is(codeOf(own), 'ERR_RINGBRIDGE_INVALID_ARGUMENT')
  t.regex(own!.message, /shared by producers/)
  const handle = k.producer()
  const p = new RingProducer<{ producer: number; seq: number }>(handle)
  t.is(p.trySendBatch([{ producer: 1, seq: 0 }, { producer: 1, seq: 1 }]), 2)
  const bad = t.throws(() => p.trySendBatch([{ producer: 1, seq: 2 }, { producer: 1, seq: -1 }]))
  t.is(codeOf(bad), 'ERR_RINGBRIDGE_INVALID_MESSAGE')
  // Nothing of the bad step was claimed: the next message follows on.
  t.is(p.trySendBatch([{ producer: 1, seq: 2 }]), 1)
  const replies = [await k.receive(), await k.receive(), await k.receive()]
  t.deepEqual(replies.map((r) => r.seq), [0, 1, 2])
  handle.wake.close()
})

test('a producer sends only what fits, and stops at terminate', async (t) => {
  const k = await launchOn(t, { handler: 'echo', input: Tagged, output: Tagged, capacity: 4, producers: 'shared' })
  await k.deactivate()
  const handle = k.producer()
  const p = new RingProducer<{ producer: number; seq: number }>(handle)
  const msgs = Array.from({ length: 10 }, (_, i) => ({ producer: 0, seq: i }))
  t.is(p.trySendBatch(msgs), 4, 'the ring holds 4')
  t.is(p.trySendBatch(msgs, 4), 0, 'full: nothing claimed')
  const report = await k.terminate({ mode: 'abandon' })
  t.deepEqual(report.undelivered.map((m) => m.seq), [0, 1, 2, 3])
  t.is(codeOf(t.throws(() => p.trySendBatch(msgs, 4))), 'ERR_RINGBRIDGE_CLOSED')
  t.regex(t.throws(() => k.producer())!.message, /terminated/)
  handle.wake.close()
})
