// Handlers written in JavaScript on the cpu backend (runs in CI): a worker thread runs the kernel
// side of the protocol over the same rings. Order and payloads, per-message errors, faults,
// 100 000 requests in flight, life cycle, and the examples that use them.
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { promisify } from 'node:util'

import test from 'ava'

import { Runtime, f64, struct, u32, type HandlerContext } from '../index'
import { codeOf, launchOn, receiveAll, sleep, until, within } from './helpers'

const run = promisify(execFile)
const Msg = struct({ seq: u32, x: f64 })
const Out = struct({ seq: u32, y: f64, total: f64 })

test('200 000 messages through a JS handler come back in order, computed, with per-kernel state', async (t) => {
  const k = await launchOn(t, {
    input: Msg,
    output: Out,
    capacity: 1024,
    cpu: (m: { seq: number; x: number }, ctx: HandlerContext) => {
      ctx.state.total = ((ctx.state.total as number | undefined) ?? 0) + m.x
      return { seq: m.seq, y: m.x * 2, total: ctx.state.total as number }
    },
  })
  t.is(k.backend, 'cpu')
  const N = 200_000
  const sending = k.sendBatch(Array.from({ length: N }, (_, i) => ({ seq: i, x: i % 10 })))
  const replies = await within(receiveAll(k, N), 60_000, 'replies')
  await sending
  let total = 0
  replies.forEach((r, i) => {
    total += i % 10
    if (r.seq !== i || r.y !== (i % 10) * 2 || r.total !== total) t.fail(`reply ${i}: ${JSON.stringify(r)}`)
  })
  t.deepEqual((await k.terminate()).undelivered, [])
  t.is(k.stats().processed, N)
})

test('100 000 requests in flight each resolve to their own reply', async (t) => {
  const k = await launchOn(t, { input: Msg, output: Out, cpu: (m: { seq: number; x: number }) => ({ seq: m.seq, y: -m.x, total: 0 }) })
  const N = 100_000
  const replies = await within(Promise.all(Array.from({ length: N }, (_, i) => k.request({ seq: i, x: i * 0.5 }))), 60_000, 'requests')
  t.true(replies.every((r, i) => r.seq === i && r.y === -i * 0.5))
})

test('100 000 requests in flight resolve to their own replies while the handler answers them in shuffled order', async (t) => {
  const k = await launchOn(t, {
    input: Msg,
    output: Out,
    capacity: 1024,
    cpu: (m: { seq: number; x: number }, ctx: HandlerContext) => {
      // Holds 100 messages, then answers them in a shuffled order (a seeded LCG).
      const held = (ctx.state.held ??= []) as { seq: number; respond: (v: unknown) => void }[]
      held.push({ seq: m.seq, respond: ctx.defer() })
      if (held.length === 100) {
        let seed = (ctx.state.seed as number | undefined) ?? 12345
        for (let i = held.length - 1; i > 0; i--) {
          seed = (Math.imul(seed, 1103515245) + 12345) >>> 0
          const j = seed % (i + 1)
          ;[held[i], held[j]] = [held[j]!, held[i]!]
        }
        ctx.state.seed = seed
        ctx.state.orderChanged = ((ctx.state.orderChanged as number | undefined) ?? 0) + (held[0]!.seq % 100 !== 0 ? 1 : 0)
        for (const h of held.splice(0)) h.respond({ seq: h.seq, y: h.seq * 3, total: 0 })
      }
      return undefined
    },
  })
  const N = 100_000
  const order: number[] = []
  const replies = await within(
    Promise.all(Array.from({ length: N }, (_, i) => k.request({ seq: i, x: 0 }).then((r) => (order.push(i), r)))),
    60_000,
    'requests',
  )
  t.true(replies.every((r, i) => r.seq === i && r.y === i * 3), 'each request got its own reply')
  t.true(order.some((v, i) => v !== i), 'replies completed out of request order')
  t.deepEqual([...order].sort((a, b) => a - b), Array.from({ length: N }, (_, i) => i))
  t.is(k.stats().lateReplies, 0)
})

test('a handler may answer a message several times or not at all', async (t) => {
  const k = await launchOn(t, {
    input: Msg,
    output: Out,
    cpu: (m: { seq: number; x: number }, ctx: HandlerContext) => {
      if (m.seq % 2 === 1) return undefined // no reply
      ctx.reply({ seq: m.seq, y: 1, total: 0 })
      ctx.reply({ seq: m.seq, y: 2, total: 0 })
      return { seq: m.seq, y: 3, total: 0 }
    },
  })
  t.is((await k.request({ seq: 0, x: 0 })).y, 1, 'request() takes the first reply of its id')
  t.deepEqual([(await k.receive()).y, (await k.receive()).y], [2, 3], 'the others go to receive()')
  const none = await t.throwsAsync(k.request({ seq: 1, x: 0 }, { timeoutMs: 50 }))
  t.is(codeOf(none), 'ERR_RINGBRIDGE_TIMEOUT')
  t.is(k.stats().processed, 2)
})

test('ctx.fail rejects one request with its code and detail; the kernel goes on', async (t) => {
  const k = await launchOn(t, {
    input: Msg,
    output: Out,
    cpu: (m: { seq: number; x: number }, ctx: HandlerContext) => (m.seq === 13 ? ctx.fail(413, m.seq * 2) : { seq: m.seq, y: 0, total: 0 }),
  })
  const [a, b, c] = await Promise.allSettled([k.request({ seq: 12, x: 0 }), k.request({ seq: 13, x: 0 }), k.request({ seq: 14, x: 0 })])
  t.is(a.status, 'fulfilled')
  t.is(c.status, 'fulfilled')
  t.is(b.status, 'rejected')
  const err = (b as PromiseRejectedResult).reason
  t.is(codeOf(err), 'ERR_RINGBRIDGE_KERNEL_ERROR')
  t.like(err.details, { kernelCode: 413, detail: 26 })
  t.is(k.stats().errors.kernel, 1)
})

test('a handler that throws (here: it uses a variable of its module) answers HANDLER_FAULT and says why', async (t) => {
  const outside = 41
  const k = await launchOn(t, { input: Msg, output: Out, cpu: (m: { seq: number; x: number }) => ({ seq: m.seq, y: outside + 1, total: 0 }) })
  const err = await t.throwsAsync(within(k.request({ seq: 1, x: 0 }), 10_000, 'fault reply'))
  t.is(codeOf(err), 'ERR_RINGBRIDGE_KERNEL_ERROR')
  t.like((err as { details?: object }).details, { kernelError: 'handler-fault' })
  // The worker reports the exception's text beside the error frame, a moment later.
  await until(() => k.handlerFault !== undefined, 5000, 'the handler fault text')
  t.regex(k.handlerFault ?? '', /outside is not defined/)
})

test('a worker that exits under its kernel is a fault every waiter sees', async (t) => {
  const k = await launchOn(t, { input: Msg, output: Out, cpu: () => process.exit(3) })
  const err = await t.throwsAsync(within(k.request({ seq: 1, x: 0 }), 10_000, 'rejection'))
  t.is(codeOf(err), 'ERR_RINGBRIDGE_CLOSED')
  t.is(k.state, 'terminated')
  t.is(k.stats().errors.firstKernelError, 'handler-fault')
  t.regex(k.handlerFault ?? '', /exited \(code 3\)/)
})

test('pause holds messages, resume releases them, abandon reports what was never handled', async (t) => {
  const k = await launchOn(t, { input: Msg, output: Out, capacity: 8, cpu: (m: { seq: number; x: number }) => ({ seq: m.seq, y: m.x, total: 0 }) })
  await k.deactivate()
  t.is(k.state, 'paused')
  await k.sendBatch([0, 1, 2].map((i) => ({ seq: i, x: i })))
  await sleep(50)
  t.is(k.stats().processed, 0)
  await k.activate()
  t.deepEqual((await receiveAll(k, 3)).map((r) => r.seq), [0, 1, 2])
  await k.deactivate()
  await k.sendBatch([3, 4].map((i) => ({ seq: i, x: i })))
  const report = await k.terminate({ mode: 'abandon' })
  t.deepEqual(report.undelivered.map((m) => m.seq), [3, 4])
})

test('JS handler options are checked', async (t) => {
  const rt = await Runtime.open({ backend: 'cpu' })
  t.teardown(() => within(rt.close(), 15_000, 'close'))
  const notFn = await t.throwsAsync(rt.launch({ input: Msg, output: Out, cpu: 42 as never }))
  t.regex(notFn!.message, /cpu: expected a function/)
  const both = await t.throwsAsync(rt.launch({ handler: 'echo', input: Msg, output: Out, cpu: (m: any) => m }))
  t.regex(both!.message, /handler: expected nothing: the cpu handler replaces/)
  const proc = await t.throwsAsync(rt.launch({ input: Msg, output: Out, cpu: (m: any) => m, isolation: 'process' }))
  t.regex(proc!.message, /isolation: expected 'thread'/)
  const method = { h(m: unknown) { return m } }
  const shorthand = await t.throwsAsync(rt.launch({ input: Msg, output: Out, cpu: method.h as never }))
  t.regex(shorthand!.message, /cpu: expected a self-contained function/)
})

for (const name of ['vector-rpc', 'running-stats', 'key-counter']) {
  test(`example ${name} runs and checks its answers (npm run example -- examples/${name})`, async (t) => {
    const { stdout } = await run(process.execPath, [join(__dirname, '..', 'examples', `${name}.js`)], { timeout: 120_000 })
    t.log(stdout.trim().split('\n').slice(-2).join(' | '))
    t.regex(stdout, /(wrong answers|wrong statistics|wrong final total): 0/)
  })
}
