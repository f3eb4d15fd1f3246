// Several producers share one kernel's input ring (producers: 'shared'), each in its own worker
// thread, with no lock on the hot path (runs in CI): no message lost, duplicated or reordered
// per producer; the claim protocol's edges (a full ring, bad input, terminate) hold; a producer
// that dies (or only stalls) holding a claim does not wedge the ring (issue #10 item 7,
// PROTOCOL.md §15).
import { join } from 'node:path'
import { Worker } from 'node:worker_threads'

import test from 'ava'

import { KERNEL_ERROR_NAMES, RingProducer, struct, u32, type LaunchOptions, type ProducerHandle, type RingKernel } from '../index'
import { SKIPPED, sharedInputStats } from '../ts/producer'
import { ControlBlockView } from '../ts/ring'
import { codeOf, launchOn, sleep, until, within } from './helpers'

const Tagged = struct({ producer: u32, seq: u32 })
type Msg = { producer: number; seq: number }
const PER_PRODUCER = Number(process.env.RINGBRIDGE_PRODUCER_MESSAGES ?? 1_000_000)

function startProducer(handle: ProducerHandle, producer: number, count: number) {
  return startWorker(handle, { producer, count, batch: 512 }).done
}

interface Job {
  producer: number
  count: number
  batch: number
  recoverAfterMs?: number
  hold?: { at: 'claimed' | 'written'; ms?: number; count: number; untilRescued?: boolean }
}

/** A producer worker (producer-worker.ts): `done` resolves with what it sent, `holding` once it stalls on a claim. */
function startWorker(handle: ProducerHandle, job: Job) {
  const worker = new Worker(join(__dirname, 'producer-worker.js'), { workerData: { handle, ...job }, transferList: [handle.wake] })
  let onHolding: () => void = () => {}
  const holding = new Promise<void>((resolve) => (onHolding = resolve))
  const done = new Promise<number>((resolve, reject) => {
    worker.on('message', (m: { sent?: number; error?: string; holding?: boolean }) => {
      if (m.holding) onHolding()
      else if (m.error) reject(new Error(m.error))
      else resolve(m.sent!)
    })
    worker.once('error', reject)
  })
  done.catch(() => {})
  return { worker, holding, done }
}

/**
 * Receives exactly `n` replies, then checks that no more come: every (producer, seq) once, each
 * producer's in order. Returns the seqs seen per producer.
 */
async function receiveExactly(k: RingKernel<Msg, Msg>, n: number): Promise<{ seen: Map<number, number[]>; bad: string }> {
  const seen = new Map<number, number[]>()
  let bad = ''
  let got = 0
  const take = (r: Msg) => {
    const list = seen.get(r.producer) ?? []
    if (list.length > 0 && r.seq <= list[list.length - 1]!) bad ||= `producer ${r.producer}: seq ${r.seq} after ${list[list.length - 1]} (duplicated or reordered)`
    list.push(r.seq)
    seen.set(r.producer, list)
    got++
  }
  while (got < n) for (const r of await within(k.receiveBatch(n - got, { timeoutMs: 20_000 }), 25_000, `reply ${got} of ${n}`)) take(r)
  await sleep(100)
  for (const r of k.tryReceiveMany()) {
    bad ||= `an extra reply: producer ${r.producer} seq ${r.seq}`
    take(r)
  }
  return { seen, bad }
}

const range = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i)

/** `kernel.stats().producers` (shared inputs only). */
const producersOf = (k: RingKernel<Msg, Msg>) => k.stats().producers

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
  t.regex(bad!.message, /^messages\[1\]\.seq: -1 is out of range for u32/, 'the error names the message and field')
  const later = t.throws(() => p.trySendBatch([{ producer: 1, seq: 2 }, { producer: 1, seq: 3 }, { producer: 1, seq: 0.5 }], 1))
  t.regex(later!.message, /^messages\[2\]\.seq: expected an integer \(u32\)/, 'indices count from the start of the array')
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

// A terminate word holding no command (a buggy peer's store) is NONE to every kernel (spec §9):
// it lifts no pause and stops nothing; the library's own terminate still stops the kernel. The
// JS worker kernel once read any non-zero word as "not paused". (Shared producers only because
// that is how a test reaches the kernel's memory.)
for (const [name, kernel] of [
  ['native echo', { handler: 'echo' }],
  ['JS handler', { cpu: (m: Msg) => m }],
] as [string, Pick<LaunchOptions<Msg, Msg>, 'handler' | 'cpu'>][]) {
  test(`${name}: a terminate word that is no command neither lifts a pause nor stops the kernel`, async (t) => {
    const k = await launchOn(t, { ...kernel, input: Tagged, output: Tagged, capacity: 8, producers: 'shared' })
    await k.deactivate()
    const handle = k.producer()
    new ControlBlockView(handle.buffer, handle.base).store32('terminate', 7)
    const p = new RingProducer<Msg>(handle)
    t.is(p.trySendBatch([{ producer: 0, seq: 0 }, { producer: 0, seq: 1 }]), 2)
    await sleep(300)
    t.is(k.state, 'paused')
    t.deepEqual(k.tryReceiveMany(), [], 'paused: nothing answered')
    await k.activate()
    t.deepEqual((await Promise.all([k.receive(), k.receive()])).map((r) => r.seq), [0, 1])
    t.deepEqual((await within(k.terminate({ mode: 'drain' }), 10_000, 'terminate')).undelivered, [])
    t.is(k.state, 'terminated')
    handle.wake.close()
  })
}

// ---- a producer that dies, or stalls, holding a claim (issue #10 item 7) ---------------------

const kernels: [string, Pick<LaunchOptions<Msg, Msg>, 'handler' | 'cpu'>][] = [
  ['native echo', { handler: 'echo' }],
  ['JS handler', { cpu: (m: Msg) => m }],
]

for (const [name, kernel] of kernels) {
  test(`${name}: a Worker terminated after claiming, before writing, does not wedge the ring: its claim is skipped, later producers lose and duplicate nothing, stats say so`, async (t) => {
    const k = await launchOn(t, { ...kernel, input: Tagged, output: Tagged, capacity: 64, producers: 'shared' })
    const claim = k.producer()
    // Producer 9 sends 100 messages, then claims positions for more and stops there for good.
    const doomed = startWorker(claim, { producer: 9, count: 100, batch: 50, hold: { at: 'claimed', count: 500 } })
    await within(doomed.holding, 20_000, 'the doomed producer holding its claim')
    const held = sharedInputStats(claim.claim, 0).claimed - 100
    t.true(held > 0 && held <= 64, `held ${held}`)
    await doomed.worker.terminate()
    // Three more producers claim behind the dead claim; one rescues it after 100 ms of stall.
    const live = [0, 1, 2].map((i) => startWorker(k.producer(), { producer: i, count: 2000, batch: 128, recoverAfterMs: 100 }))
    const { seen, bad } = await receiveExactly(k, 100 + 3 * 2000)
    t.is(bad, '')
    t.deepEqual(await within(Promise.all(live.map((w) => w.done)), 20_000, 'live producers'), [2000, 2000, 2000])
    t.deepEqual(seen.get(9), range(0, 100), "the dead producer's published messages, once; none of its claim")
    for (const i of [0, 1, 2]) t.deepEqual(seen.get(i), range(0, 2000), `producer ${i}`)
    await until(() => k.stats().processed === 6100 + held, 10_000, 'the kernel took every frame')
    const s = k.stats()
    t.deepEqual(producersOf(k), { claimed: 6100 + held, unpublished: 0, rescuedClaims: 1, skipped: held, rescuedFrames: 0 })
    t.is(s.sent, 6100, 'sent counts messages, not skip frames')
    t.is(s.replied, 6100)
    t.is(s.depth.inputRing, 0)
    t.is(s.errors.kernel, 0, 'a skip frame is no kernel error')
    t.is(KERNEL_ERROR_NAMES[SKIPPED], 'skipped')
    t.is(s.errors.replies, 0)
    t.deepEqual((await k.terminate()).undelivered, [])
  })
}

test('a Worker terminated after writing its claim, before publishing it: another producer publishes its frames, delivered once', async (t) => {
  const k = await launchOn(t, { handler: 'echo', input: Tagged, output: Tagged, capacity: 64, producers: 'shared' })
  const claim = k.producer()
  const doomed = startWorker(claim, { producer: 9, count: 100, batch: 50, hold: { at: 'written', count: 40 } })
  await within(doomed.holding, 20_000, 'the doomed producer holding its written claim')
  const held = sharedInputStats(claim.claim, 0).claimed - 100
  t.true(held > 0 && held <= 40, `held ${held}`)
  await doomed.worker.terminate()
  const live = [0, 1].map((i) => startWorker(k.producer(), { producer: i, count: 1000, batch: 100, recoverAfterMs: 100 }))
  const { seen, bad } = await receiveExactly(k, 100 + held + 2000)
  t.is(bad, '')
  t.deepEqual(seen.get(9), range(0, 100 + held), 'the written claim was published for its dead producer')
  for (const i of [0, 1]) t.deepEqual(seen.get(i), range(0, 1000))
  t.deepEqual(await Promise.all(live.map((w) => w.done)), [1000, 1000])
  t.like(sharedInputStats(claim.claim, 2100 + held), { claimed: 2100 + held, unpublished: 0, rescuedClaims: 1, skipped: 0, rescuedFrames: held })
  t.deepEqual((await k.terminate()).undelivered, [])
})

test('a dead claim that holds the whole ring is rescued by a producer waiting for room', async (t) => {
  const k = await launchOn(t, { handler: 'echo', input: Tagged, output: Tagged, capacity: 4, producers: 'shared' })
  const claim = k.producer()
  const doomed = startWorker(claim, { producer: 9, count: 0, batch: 10, hold: { at: 'claimed', count: 10 } })
  await within(doomed.holding, 20_000, 'the doomed producer holding every slot')
  t.is(sharedInputStats(claim.claim, 0).claimed, 4)
  await doomed.worker.terminate()
  // No room for anyone: nobody waits to publish behind the dead claim; the room wait rescues it.
  const live = startWorker(k.producer(), { producer: 0, count: 500, batch: 64, recoverAfterMs: 100 })
  const { seen, bad } = await receiveExactly(k, 500)
  t.is(bad, '')
  t.deepEqual(seen.get(0), range(0, 500))
  t.is(await live.done, 500)
  t.like(producersOf(k), { rescuedClaims: 1, skipped: 4, unpublished: 0 })
  t.is(k.stats().sent, 500)
})

// A producer only stalled (not dead) past recoverAfterMs: after claiming, it loses the claim to
// skip frames and sends those messages again; after writing, its frames are published for it
// and it does not send them twice. Either way nothing is lost or duplicated.
for (const [at, what] of [
  ['claimed', 'after claiming loses that claim to skip frames and sends those messages again'],
  ['written', 'after writing has its frames published for it, and does not send them twice'],
] as const) {
  test(`a producer only stalled past recoverAfterMs ${what}: nothing lost or duplicated`, async (t) => {
    const k = await launchOn(t, { handler: 'echo', input: Tagged, output: Tagged, capacity: 64, producers: 'shared' })
    const claim = k.producer()
    const slow = startWorker(claim, { producer: 9, count: 100, batch: 50, recoverAfterMs: 100, hold: { at, ms: 20_000, untilRescued: true, count: 200 } })
    await within(slow.holding, 20_000, `the slow producer stalled on its ${at} claim`)
    const held = sharedInputStats(claim.claim, 0).claimed - 100
    const live = [0, 1].map((i) => startWorker(k.producer(), { producer: i, count: 1000, batch: 100, recoverAfterMs: 100 }))
    const { seen, bad } = await receiveExactly(k, 300 + 2000)
    t.is(bad, '')
    t.deepEqual(seen.get(9), range(0, 300), 'every message of the slow producer, once, in order')
    for (const i of [0, 1]) t.deepEqual(seen.get(i), range(0, 1000))
    t.is(await slow.done, 300)
    t.deepEqual(await Promise.all(live.map((w) => w.done)), [1000, 1000])
    const rescued = at === 'claimed' ? { skipped: held, rescuedFrames: 0 } : { skipped: 0, rescuedFrames: held }
    t.like(producersOf(k), { rescuedClaims: 1, ...rescued, unpublished: 0 })
    t.is(k.stats().sent, 2300)
  })
}

test('stats under shared producers: sent counts what the producers published, input depth never goes negative', async (t) => {
  const k = await launchOn(t, { handler: 'echo', input: Tagged, output: Tagged, capacity: 16, producers: 'shared' })
  await k.deactivate()
  const handle = k.producer()
  const p = new RingProducer<Msg>(handle)
  t.is(p.trySendBatch(range(0, 10).map((seq) => ({ producer: 0, seq }))), 10)
  let s = k.stats()
  t.is(s.sent, 10)
  t.is(s.depth.inputRing, 10)
  t.like(producersOf(k), { claimed: 10, unpublished: 0 })
  await k.activate()
  const { seen } = await receiveExactly(k, 10)
  t.deepEqual(seen.get(0), range(0, 10))
  await until(() => k.stats().depth.inputRing === 0, 5000, 'input ring empty')
  s = k.stats()
  t.is(s.sent, 10)
  t.is(s.processed, 10)
  t.is(s.replied, 10)
  handle.wake.close()
})
