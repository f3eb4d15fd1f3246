// AbortSignal and timeouts on send, request and receive (CPU backend, runs in CI): a cancelled
// message that has not reached the ring is withdrawn and never handled; one already in the ring
// is answered and counted as late; no reply is lost to a cancelled receive.
import test from 'ava'

import { u32 } from '../index'
import { codeOf, launchOn, sleep, until, within } from './helpers'

const paused = async (t: Parameters<typeof launchOn>[0]) => {
  const k = await launchOn(t, { handler: 'echo', input: u32, output: u32, capacity: 2, sendQueue: { capacity: 2, policy: 'block' } })
  await k.deactivate()
  return k
}

test('requests aborted before they reach the ring are withdrawn and never handled', async (t) => {
  const k = await paused(t)
  const inRing = [k.request(1), k.request(2)]
  const ac = new AbortController()
  const queued = k.request(3, { signal: ac.signal }) // in the send queue
  const kept = k.request(4) // in the send queue
  const blocked = k.request(5, { signal: ac.signal }) // waiting for room in the queue
  await sleep(10)
  ac.abort(new Error('gave up'))
  for (const p of [queued, blocked]) {
    const e = await t.throwsAsync(p)
    t.is(codeOf(e), 'ERR_RINGBRIDGE_ABORTED')
    t.is((e as Error & { cause?: Error }).cause?.message, 'gave up')
  }
  await k.activate()
  t.deepEqual(await within(Promise.all([...inRing, kept]), 5000, 'replies'), [1, 2, 4])
  await k.terminate()
  t.is(k.stats().processed, 3, 'the withdrawn messages never reached the kernel')
  t.is(k.stats().lateReplies, 0)
})

test('a request aborted after it reached the ring is answered and counted as late', async (t) => {
  const k = await paused(t)
  const ac = new AbortController()
  const p = k.request(7, { signal: ac.signal })
  ac.abort()
  t.is(codeOf(await t.throwsAsync(p)), 'ERR_RINGBRIDGE_ABORTED')
  await k.activate()
  await until(() => k.stats().lateReplies === 1, 5000, 'the late reply')
  t.is(await k.request(8), 8)
})

test('a send that waits for room gives up after timeoutMs or on abort, withdrawing its message', async (t) => {
  const k = await paused(t)
  await k.sendBatch([1, 2, 3, 4]) // ring and queue full
  const timedOut = await t.throwsAsync(k.send(5, { timeoutMs: 20 }))
  t.is(codeOf(timedOut), 'ERR_RINGBRIDGE_TIMEOUT')
  const ac = new AbortController()
  const aborted = k.send(6, { signal: ac.signal })
  ac.abort()
  t.is(codeOf(await t.throwsAsync(aborted)), 'ERR_RINGBRIDGE_ABORTED')
  const sent = k.send(9, { timeoutMs: 5000 })
  await k.activate()
  await sent
  const got: number[] = []
  while (got.length < 5) got.push(await within(k.receive(), 5000, 'reply'))
  t.deepEqual(got, [1, 2, 3, 4, 9])
})

test('an aborted receive loses no reply, and an already-aborted signal sends nothing', async (t) => {
  const k = await launchOn(t, { handler: 'echo', input: u32, output: u32 })
  const ac = new AbortController()
  const r = k.receive({ signal: ac.signal })
  ac.abort()
  t.is(codeOf(await t.throwsAsync(r)), 'ERR_RINGBRIDGE_ABORTED')
  await k.send(11)
  t.is(await within(k.receive(), 5000, 'reply'), 11)
  const done = AbortSignal.abort()
  t.is(codeOf(await t.throwsAsync(k.request(12, { signal: done }))), 'ERR_RINGBRIDGE_ABORTED')
  t.is(codeOf(await t.throwsAsync(k.send(13, { signal: done }))), 'ERR_RINGBRIDGE_ABORTED')
  await k.terminate()
  t.is(k.stats().processed, 1)
  const bad = await t.throwsAsync(k.receive({ signal: 'stop' as never }))
  t.is(codeOf(bad), 'ERR_RINGBRIDGE_INVALID_ARGUMENT')
})
