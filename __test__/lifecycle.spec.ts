// Life cycle of a kernel and a runtime: pause and resume, drain and abandon, use after
// terminate, dispose, Runtime.close, and a process that forgets to terminate.
import { spawn } from 'node:child_process'
import path from 'node:path'

import test, { type ExecutionContext } from 'ava'

import { Runtime, struct, u32, type LaunchOptions, type RingKernel } from '../index'
import { codeOf, pendingAfter, sleep, until, within, launchOn , receiveAll } from './helpers'

function launch<TIn = number, TOut = number>(t: ExecutionContext, options: Partial<LaunchOptions<TIn, TOut>> = {}): Promise<RingKernel<TIn, TOut>> {
  return launchOn(t, { handler: 'echo', input: u32, output: u32, ...options } as LaunchOptions<TIn, TOut>)
}

/** Samples `read` every 10 ms for `ms` and returns the distinct values seen. */
async function samples(read: () => number, ms: number): Promise<number[]> {
  const seen = new Set<number>([read()])
  for (let waited = 0; waited < ms; waited += 10) {
    await sleep(10)
    seen.add(read())
  }
  return [...seen]
}

const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i)

const Msg = struct({ seq: u32, check: u32 })
const msg = (seq: number) => ({ seq, check: Math.imul(seq ^ 0x5bd1e995, 0x27d4eb2d) >>> 0 })

// ---- pause and resume -----------------------------------------------------------------------

test('deactivate stops processing while messages wait in the ring; activate resumes and all arrive', async (t) => {
  const k = await launch(t, { capacity: 64 })
  await until(() => k.state === 'running', 5000, 'kernel running')
  await within(k.activate(), 1000, 'activate a running kernel')
  await within(k.deactivate(), 5000, 'deactivate')
  t.is(k.state, 'paused')
  t.is(k.stats().state, 'paused')
  await within(k.deactivate(), 1000, 'deactivate twice')
  await within(k.sendBatch(range(0, 20)), 1000, 'sendBatch')
  t.deepEqual(await samples(() => k.stats().processed, 100), [0], 'processed stays constant')
  t.is(k.stats().depth.inputRing, 20)
  t.is(k.state, 'paused')
  await within(k.activate(), 5000, 'activate')
  t.not(k.state, 'paused')
  t.deepEqual(await receiveAll(k, 20), range(0, 20))
  t.is(k.stats().processed, 20)
})

test('deactivate in the middle of a stream holds the rest, activate delivers it in order', async (t) => {
  const k = await launch(t, { input: Msg, output: Msg, capacity: 16, sendQueue: { capacity: 8192 } })
  const n = 5000
  const sending = k.sendBatch(range(0, n).map(msg))
  const first = await within(k.receiveBatch(8, { timeoutMs: 5000 }), 6000, 'first replies')
  await within(k.deactivate(), 5000, 'deactivate')
  const held = k.stats().processed
  t.true(held < n, `processed ${held} of ${n} before the pause`)
  t.deepEqual(await samples(() => k.stats().processed, 100), [held], 'processed stays constant while paused')
  const s = k.stats()
  t.true(s.depth.inputRing + s.depth.sendQueue > 0, 'messages wait while paused')
  await within(k.activate(), 5000, 'activate')
  await within(sending, 5000, 'sendBatch')
  const rest = await receiveAll(k, n - first.length)
  t.deepEqual([...first, ...rest], range(0, n).map(msg))
})

// ---- terminate ------------------------------------------------------------------------------

test("terminate({ mode: 'drain' }) hands the kernel every queued message; replies stay receivable, then receive rejects ERR_RINGBRIDGE_CLOSED", async (t) => {
  const k = await launch(t, { capacity: 4, sendQueue: { capacity: 512 } })
  const n = 300
  // Paused while sending, so messages wait in the send queue however fast the backend is (a GPU
  // kernel kept up with this loop on an H100); activated as the drain begins, so the drain meets
  // a running kernel with a queue behind it.
  await within(k.deactivate(), 5000, 'deactivate')
  const sends = range(0, n).map((v) => k.send(v))
  t.true(k.stats().depth.sendQueue > 0, 'messages are waiting in the send queue')
  const activating = k.activate()
  const report = await within(k.terminate({ mode: 'drain' }), 10_000, 'terminate')
  await within(activating.catch(() => undefined), 5000, 'activate settles')
  await within(Promise.all(sends), 1000, 'sends resolved')
  t.is(report.mode, 'drain')
  t.deepEqual(report.undelivered, [])
  t.is(report.processed, n)
  t.is(k.state, 'terminated')
  t.true(k.closed)
  t.deepEqual(await receiveAll(k, n), range(0, n))
  t.is(codeOf(await t.throwsAsync(k.receive({ timeoutMs: 1000 }))), 'ERR_RINGBRIDGE_CLOSED')
  t.deepEqual(k.tryReceiveMany(), [])
})

// Regression: on a paused kernel the send queue never flushed, so drain waited out timeoutMs and
// then abandoned everything it should have handled.
test('terminate drains a paused kernel promptly, send queue included', async (t) => {
  const k = await launch(t, { capacity: 4, sendQueue: { capacity: 16 }, timeoutMs: 5000 })
  await within(k.deactivate(), 5000, 'deactivate')
  for (const v of range(0, 12)) await within(k.send(v), 2000, `send ${v}`)
  t.is(k.stats().depth.sendQueue, 8)
  const started = Date.now()
  const report = await within(k.terminate(), 2000, 'terminate (drain) of a paused kernel')
  t.true(Date.now() - started < 2000)
  t.deepEqual(report.undelivered, [])
  t.is(report.processed, 12)
  const collect = async () => {
    const got: number[] = []
    for await (const v of k.replies()) got.push(v)
    return got
  }
  t.deepEqual(await within(collect(), 5000, 'replies() ends'), range(0, 12), 'replies() yields every reply, then ends')
})

test("terminate({ mode: 'abandon' }) on a paused kernel reports exactly the unsent messages and rejects pending requests", async (t) => {
  const k = await launch<{ seq: number; check: number }, { seq: number; check: number }>(t, {
    input: Msg,
    output: Msg,
    capacity: 4,
    sendQueue: { capacity: 4, policy: 'block' },
  })
  await within(k.deactivate(), 5000, 'deactivate')
  for (const v of [0, 1, 2]) t.true(k.trySend(msg(v)))
  const inRing = k.request(msg(3))
  await within(k.send(msg(4)), 2000, 'k.send(msg(4))')
  const queued = k.request(msg(5))
  await within(k.sendBatch([msg(6), msg(7)]), 2000, 'k.sendBatch([msg(6), msg(7)])')
  const blocked = k.send(msg(8))
  t.true(await pendingAfter(blocked, 20), 'ring and queue are full')
  t.deepEqual(k.stats().depth, { sendQueue: 4, inputRing: 4, outputRing: 0, replyQueue: 0 })
  const report = await within(k.terminate({ mode: 'abandon' }), 5000, 'terminate')
  t.is(report.mode, 'abandon')
  t.is(report.processed, 0)
  t.deepEqual(report.undelivered, range(0, 8).map(msg))
  t.is(codeOf(await t.throwsAsync(within(inRing, 1000, 'request in the ring'))), 'ERR_RINGBRIDGE_CLOSED')
  t.is(codeOf(await t.throwsAsync(within(queued, 1000, 'request in the send queue'))), 'ERR_RINGBRIDGE_CLOSED')
  t.is(codeOf(await t.throwsAsync(within(blocked, 1000, 'blocked send'))), 'ERR_RINGBRIDGE_CLOSED', 'a send never accepted is refused')
  t.is(k.stats().pendingRequests, 0)
  t.is(k.state, 'terminated')
  t.is(codeOf(await t.throwsAsync(k.receive({ timeoutMs: 1000 }))), 'ERR_RINGBRIDGE_CLOSED')
})

test('every call that needs a live kernel rejects with ERR_RINGBRIDGE_CLOSED after terminate', async (t) => {
  const k = await launch(t)
  await within(k.terminate(), 5000, 'terminate')
  t.true(k.closed)
  t.is(codeOf(t.throws(() => k.trySend(1))), 'ERR_RINGBRIDGE_CLOSED')
  const calls: [string, () => Promise<unknown>][] = [
    ['send', () => k.send(1)],
    ['sendBatch', () => k.sendBatch([1, 2])],
    ['request', () => k.request(1, { timeoutMs: 1000 })],
    ['activate', () => k.activate()],
    ['deactivate', () => k.deactivate()],
    ['receive', () => k.receive({ timeoutMs: 1000 })],
    ['receiveBatch', () => k.receiveBatch(4, { timeoutMs: 1000 })],
  ]
  for (const [name, call] of calls) {
    const e = await t.throwsAsync(within(call(), 2000, name), undefined, name)
    t.is(codeOf(e), 'ERR_RINGBRIDGE_CLOSED', name)
  }
  t.is(k.stats().sent, 0)
})

test('terminate is idempotent and validates its mode', async (t) => {
  const k = await launch(t)
  const bad = await t.throwsAsync(within(k.terminate({ mode: 'now' as 'drain' }), 2000, 'k.terminate({ mode: \'now\' as \'drain\' })'))
  t.is(codeOf(bad), 'ERR_RINGBRIDGE_INVALID_ARGUMENT')
  t.true(bad instanceof RangeError)
  t.false(k.closed, 'a bad mode terminates nothing')
  await within(k.send(1), 2000, 'k.send(1)')
  const p1 = k.terminate()
  const p2 = k.terminate({ mode: 'abandon' })
  const r1 = await within(p1, 5000, 'terminate')
  t.is(await within(p2, 5000, 'second terminate'), r1)
  t.is(await within(k.terminate(), 5000, 'third terminate'), r1)
  t.is(r1.mode, 'drain')
  t.is(r1.processed, 1)
  t.deepEqual(await receiveAll(k, 1), [1])
})

test('dispose stops the kernel at once; pending and blocked calls reject; terminate afterwards reports what it abandoned', async (t) => {
  const k = await launch(t, { capacity: 2, sendQueue: { capacity: 2, policy: 'block' } })
  await within(k.deactivate(), 5000, 'deactivate')
  const request = k.request(0)
  await within(k.sendBatch([1, 2, 3]), 2000, 'k.sendBatch([1, 2, 3])')
  const blocked = k.send(4)
  t.true(await pendingAfter(blocked, 20))
  k.dispose()
  t.true(k.closed)
  t.is(k.state, 'terminated')
  k.dispose()
  t.is(codeOf(await t.throwsAsync(within(request, 1000, 'request'))), 'ERR_RINGBRIDGE_CLOSED')
  // Regression: blocked sends were never woken by dispose() and hung forever.
  t.is(codeOf(await t.throwsAsync(within(blocked, 1000, 'blocked send'))), 'ERR_RINGBRIDGE_CLOSED')
  t.is(codeOf(await t.throwsAsync(within(k.send(5), 2000, 'k.send(5)'))), 'ERR_RINGBRIDGE_CLOSED')
  // Regression: terminate after dispose reported nothing undelivered.
  const report = await within(k.terminate(), 1000, 'terminate after dispose')
  t.is(report.mode, 'abandon')
  t.is(report.processed, 0)
  t.deepEqual(report.undelivered, [0, 1, 2, 3])
})

test('Runtime.close terminates every kernel (draining) and refuses later launches', async (t) => {
  const rt = await Runtime.open({ backend: 'cpu' })
  t.teardown(() => within(rt.close(), 15_000, 'runtime close'))
  t.is(rt.backend, 'cpu')
  const kernels = await Promise.all([1, 2, 3].map(() => rt.launch({ handler: 'echo', input: u32, output: u32, capacity: 4 })))
  t.is(rt.kernels.length, 3)
  await within(kernels[1]!.deactivate(), 5000, 'deactivate kernel 1')
  for (const [i, k] of kernels.entries()) await within(k.sendBatch(range(i * 10, i * 10 + 10)), 2000, `sendBatch to kernel ${i}`)
  await within(rt.close(), 10_000, 'close')
  t.is(rt.kernels.length, 0)
  for (const [i, k] of kernels.entries()) {
    t.true(k.closed, `kernel ${i}`)
    t.is(k.state, 'terminated')
    t.deepEqual(await receiveAll(k, 10), range(i * 10, i * 10 + 10), `kernel ${i} drained`)
  }
  const e = await t.throwsAsync(rt.launch({ handler: 'echo', input: u32, output: u32 }))
  t.is(codeOf(e), 'ERR_RINGBRIDGE_CLOSED')
  await within(rt.close(), 1000, 'close twice')
})

// ---- process ------------------------------------------------------------------------------

test('a process that launches kernels and returns without terminating exits by itself', async (t) => {
  const index = path.resolve(__dirname, '..', 'index.js')
  const script = `
    const { Runtime, bytes, u32 } = require(${JSON.stringify(index)})
    ;(async () => {
      const rt = await Runtime.open({ backend: 'cpu' })
      const a = await rt.launch({ handler: 'echo', input: u32, output: u32 })
      await a.send(41)
      console.log('reply', await a.receive({ timeoutMs: 5000 }))
      console.log('request', await a.request(42, { timeoutMs: 5000 }))
      const b = await rt.launch({ handler: 'echo', input: u32, output: u32 })
      await b.send(43) // its reply is never received
      const c = await rt.launch({ handler: 'saxpy', input: bytes(), output: bytes() })
      await c.deactivate()
      console.log('done')
    })()
  `
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  child.stdout.on('data', (d: Buffer) => (out += d.toString()))
  child.stderr.on('data', (d: Buffer) => (err += d.toString()))
  const started = Date.now()
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })))
  let result: { code: number | null; signal: NodeJS.Signals | null }
  try {
    result = await within(exit, 5000, 'the child process exits')
  } catch (e) {
    child.kill('SIGKILL')
    throw e
  }
  t.deepEqual(result, { code: 0, signal: null }, err)
  t.is(out, 'reply 41\nrequest 42\ndone\n')
  t.true(Date.now() - started < 5000)
})

// Launches run on the libuv pool (issue #14 item 3), so a runtime can be closed while one is under
// way: the launch must reject, and the kernel it made must not outlive the runtime — no thread
// left running, no kernel host left behind.
for (const isolation of ['thread', 'process'] as const) {
  // Serial (AVA runs serial tests before the others): it counts this process's threads and children.
  test.serial(`close() while a launch (${isolation} isolation) is under way: the launch rejects CLOSED and its kernel is stopped`, async (t) => {
    const { readFileSync, readdirSync } = await import('node:fs')
    const threads = () => Number(/^Threads:\s+(\d+)/m.exec(readFileSync('/proc/self/status', 'utf8'))![1])
    const children = () => readdirSync('/proc/self/task').flatMap((task) => readFileSync(`/proc/self/task/${task}/children`, 'utf8').trim().split(/\s+/).filter(Boolean))
    // Warm up: the libuv pool's threads exist from the first launch on.
    const warm = await Runtime.open({ backend: 'cpu' })
    await (await warm.launch({ handler: 'echo', input: u32, output: u32, isolation })).terminate()
    await warm.close()
    await until(() => children().length === 0, 10_000, 'the warm-up host exited')
    const base = threads()
    const rt = await Runtime.open({ backend: 'cpu' })
    const launching = rt.launch({ handler: 'echo', input: u32, output: u32, isolation })
    await rt.close()
    const e = await t.throwsAsync(within(launching, 20_000, 'launch'))
    t.is(codeOf(e), 'ERR_RINGBRIDGE_CLOSED')
    t.regex(e!.message, /launch: the runtime was closed while the kernel launched \(it was stopped\)/)
    t.deepEqual(rt.kernels, [])
    // At once: the rejection comes after the kernel was stopped (joined), not whenever a
    // finalizer would get to it.
    t.true(threads() <= base, `${threads()} threads, ${base} before the launch`)
    t.deepEqual(children(), [], 'no kernel host left')
  })
}
