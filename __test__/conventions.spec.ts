// Node conventions (issue #14 item 6, CPU backend, runs in CI): `await using` on Runtime and
// RingKernel (Symbol.asyncDispose), aborted waits rejecting with an error named AbortError, JS
// handlers loaded from a module file (CJS and ESM, as piscina takes them), and a throwing
// handler's own error text in the rejection of its request.
import { createHash } from 'node:crypto'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'

import test from 'ava'

import { RingKernel, RingbridgeError, RingbridgeTypeError, Runtime, struct, u32 } from '../index'
import { codeOf, launchOn, runNode, sleep, until, within } from './helpers'

const fixture = (name: string) => join(__dirname, 'fixtures', name)
const Digest = struct({ calls: u32, byte: u32 })
const firstByte = (x: number) => createHash('sha256').update(String(x)).digest()[0]!

/** A CPU runtime closed at the test's end. */
async function cpuRuntime(t: Parameters<typeof launchOn>[0]): Promise<Runtime> {
  const rt = await Runtime.open({ backend: 'cpu' })
  t.teardown(() => within(rt.close(), 15_000, 'runtime close'))
  return rt
}

// ---- Symbol.asyncDispose ------------------------------------------------------------------------

test('Symbol.asyncDispose is the symbol Node uses, and both classes implement it', (t) => {
  t.is(typeof Symbol.asyncDispose, 'symbol')
  t.is(Symbol.asyncDispose as symbol, Symbol.for('nodejs.asyncDispose'))
  t.is(typeof Runtime.prototype[Symbol.asyncDispose], 'function')
  t.is(typeof RingKernel.prototype[Symbol.asyncDispose], 'function')
})

test('await using: the kernel is drained and the runtime closed when the block ends', async (t) => {
  let rt: Runtime | undefined
  let k: RingKernel<number, number> | undefined
  {
    await using runtime = await Runtime.open({ backend: 'cpu' })
    rt = runtime
    await using kernel = await runtime.launch({ handler: 'echo', input: u32, output: u32 })
    k = kernel
    await kernel.deactivate()
    await kernel.sendBatch([1, 2, 3, 4, 5]) // waiting in the ring of a paused kernel
    t.is(kernel.state, 'paused')
    t.false(kernel.closed)
  }
  t.true(k.closed)
  t.is(k.state, 'terminated')
  // The default mode is drain: the paused kernel took all five before it stopped (abandon: 0).
  t.is(k.stats().processed, 5)
  t.deepEqual(k.tryReceiveMany(), [1, 2, 3, 4, 5])
  t.is(codeOf(await t.throwsAsync(rt.launch({ handler: 'echo', input: u32, output: u32 }))), 'ERR_RINGBRIDGE_CLOSED')
  t.deepEqual(rt.kernels, [])
})

test('await using disposes when the block throws, and the block\'s error is the one thrown', async (t) => {
  let k: RingKernel<number, number> | undefined
  const err = await t.throwsAsync(async () => {
    await using rt = await Runtime.open({ backend: 'cpu' })
    k = await rt.launch({ handler: 'echo', input: u32, output: u32 })
    t.is(await k.request(3), 3)
    throw new Error('the block failed')
  })
  t.is(err!.message, 'the block failed')
  t.true(k!.closed, 'closing the runtime terminated its kernel')
  t.is(k!.state, 'terminated')
})

test('RingKernel[Symbol.asyncDispose] is idempotent and never throws on a terminated kernel', async (t) => {
  const rt = await cpuRuntime(t)
  const a = await rt.launch({ handler: 'echo', input: u32, output: u32 })
  await Promise.all([a[Symbol.asyncDispose](), a[Symbol.asyncDispose]()])
  t.is(a.state, 'terminated')
  await t.notThrowsAsync(a[Symbol.asyncDispose]())
  t.is((await a.terminate()).mode, 'drain', 'asyncDispose terminates with the default mode')

  const b = await rt.launch({ handler: 'echo', input: u32, output: u32 })
  await b.terminate({ mode: 'abandon' })
  await t.notThrowsAsync(b[Symbol.asyncDispose]())
  t.is((await b.terminate()).mode, 'abandon', 'an earlier terminate is not redone')

  const c = await rt.launch({ handler: 'echo', input: u32, output: u32 })
  c.dispose()
  await t.notThrowsAsync(c[Symbol.asyncDispose]())
  t.is(c.state, 'terminated')
})

test('Runtime[Symbol.asyncDispose] closes the runtime (idempotent)', async (t) => {
  const rt = await Runtime.open({ backend: 'cpu' })
  const k = await rt.launch({ input: u32, output: u32, cpu: (x: number) => x + 1 })
  t.is(await k.request(1), 2)
  await rt[Symbol.asyncDispose]()
  t.true(k.closed)
  t.deepEqual(rt.kernels, [])
  await t.notThrowsAsync(rt[Symbol.asyncDispose]())
  t.is(codeOf(await t.throwsAsync(rt.launch({ handler: 'echo', input: u32, output: u32 }))), 'ERR_RINGBRIDGE_CLOSED')
})

test('[Symbol.asyncDispose]() called from a plain CommonJS script lets the process end', async (t) => {
  // Node 20 cannot parse `await using` itself (the tests above use tsc's compiled form): plain
  // JavaScript calls the method. In a child process of its own, so a kernel left running would
  // keep the child alive (and the test would time out).
  const index = JSON.stringify(join(__dirname, '..', 'index.js'))
  const script = `
    const { Runtime, u32 } = require(${index})
    async function main() {
      const rt = await Runtime.open({ backend: 'cpu' })
      const k = await rt.launch({ handler: 'echo', input: u32, output: u32 })
      try { console.log(await k.request(41)) } finally { await k[Symbol.asyncDispose](); await rt[Symbol.asyncDispose]() }
      console.log(k.state, rt.kernels.length)
    }
    main()`
  const { code, stdout } = await runNode(script, 30_000)
  t.is(code, 0)
  t.deepEqual(stdout.trim().split('\n'), ['41', 'terminated 0'])
})

// ---- AbortError -------------------------------------------------------------------------------

/** Checks an aborted wait's error: named AbortError, still a RingbridgeError with its code and cause. */
function isAbort(t: Parameters<typeof launchOn>[0], e: unknown, reason: unknown, what: string) {
  t.true(e instanceof RingbridgeError, `${what}: instanceof RingbridgeError`)
  t.true(e instanceof Error, what)
  t.is((e as Error).name, 'AbortError', what)
  t.is(codeOf(e), 'ERR_RINGBRIDGE_ABORTED', what)
  t.is((e as Error).cause, reason, `${what}: cause`)
  t.regex((e as Error).stack ?? '', /^AbortError: /, `${what}: stack header`)
}

test('every aborted wait rejects with an error named AbortError (code, class and cause kept)', async (t) => {
  const k = await launchOn(t, { handler: 'echo', input: u32, output: u32, capacity: 2, sendQueue: { capacity: 2, policy: 'block' } })
  await k.deactivate()
  const reason = new Error('gave up')

  // Already aborted: each call rejects at once.
  const done = AbortSignal.abort(reason)
  isAbort(t, await t.throwsAsync(k.request(1, { signal: done })), reason, 'request, signal already aborted')
  isAbort(t, await t.throwsAsync(k.send(1, { signal: done })), reason, 'send, signal already aborted')
  isAbort(t, await t.throwsAsync(k.receive({ signal: done })), reason, 'receive, signal already aborted')

  // Aborted while waiting: a request in the send queue, a send waiting for room, a receive.
  await k.sendBatch([1, 2, 3, 4]) // ring and queue full
  const ac = new AbortController()
  const request = k.request(5, { signal: ac.signal })
  const send = k.send(6, { signal: ac.signal })
  const receive = k.receive({ signal: ac.signal })
  await sleep(10)
  ac.abort(reason)
  isAbort(t, await t.throwsAsync(request), reason, 'request')
  isAbort(t, await t.throwsAsync(send), reason, 'send')
  isAbort(t, await t.throwsAsync(receive), reason, 'receive')
  // A timeout is not an abort.
  const timedOut = await t.throwsAsync(k.send(7, { timeoutMs: 10 }))
  t.is((timedOut as Error).name, 'RingbridgeError')
})

test('an aborted nextChunk rejects with an AbortError too', async (t) => {
  const k = await launchOn(t, { handler: 'echo', input: u32, output: u32 })
  const ac = new AbortController()
  const waiting = k.nextChunk(16, { signal: ac.signal })
  ac.abort('stop')
  isAbort(t, await t.throwsAsync(waiting), 'stop', 'nextChunk')
})

// ---- handlers from a module file ---------------------------------------------------------------

test('a CommonJS handler module: module.exports is the handler; it imports a builtin and keeps module state', async (t) => {
  const rt = await cpuRuntime(t)
  const k = await rt.launch({ input: u32, output: u32, cpu: { filename: fixture('scale.cjs') } })
  t.deepEqual(await Promise.all([1, 2, 3].map((x) => k.request(x))), [3, 6, 9], 'x * FACTOR, a constant of the module')
  const d = await rt.launch({ input: u32, output: Digest, cpu: { filename: fixture('scale.cjs'), export: 'digest' } })
  const got = []
  for (const x of [10, 11, 12]) got.push(await d.request(x))
  // node:crypto in the worker; `calls` is the module's own counter, kept across messages.
  t.deepEqual(got, [10, 11, 12].map((x, i) => ({ calls: i + 1, byte: firstByte(x) })))
})

test('an ES module handler (.mjs) by file URL: the default export, or a named one', async (t) => {
  const rt = await cpuRuntime(t)
  const url = pathToFileURL(fixture('scale.mjs'))
  const byHref = await rt.launch({ input: u32, output: u32, cpu: { filename: url.href } })
  t.is(await byHref.request(4), 20)
  const named = await rt.launch({ input: u32, output: Digest, cpu: { filename: url, export: 'digest' } })
  t.deepEqual(await named.request(7), { calls: 5, byte: firstByte(7) })
  const byPath = await rt.launch({ input: u32, output: u32, cpu: { filename: fixture('scale.mjs'), export: 'default' } })
  t.is(await byPath.request(1), 5)
})

test('a .js file of a "type": "module" package loads as an ES module', async (t) => {
  const k = await launchOn(t, { input: u32, output: u32, cpu: { filename: fixture('esm-pkg/handler.js') } })
  t.is(await k.request(1), 101)
})

test('without require(esm), a .js ES module falls back from require (ERR_REQUIRE_ESM) to import()', async (t) => {
  // Node 20.19+ requires ES modules itself; this flag restores the older refusal, in a child.
  const index = JSON.stringify(join(__dirname, '..', 'index.js'))
  const file = JSON.stringify(fixture('esm-pkg/handler.js'))
  const script = `
    let refused = 'no'
    try { require(${file}) } catch (e) { refused = e.code }
    const { Runtime, u32 } = require(${index})
    Runtime.open({ backend: 'cpu' }).then(async (rt) => {
      const k = await rt.launch({ input: u32, output: u32, cpu: { filename: ${file} } })
      console.log(refused, await k.request(2))
      await rt.close()
    })`
  const { spawn } = await import('node:child_process')
  const child = spawn(process.execPath, ['--no-experimental-require-module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout.on('data', (d: Buffer) => (out += d.toString()))
  child.stderr.on('data', (d: Buffer) => (out += d.toString()))
  const code = await within(new Promise<number | null>((resolve) => child.on('close', resolve)), 30_000, 'the child')
  t.is(code, 0, out)
  t.is(out.trim(), 'ERR_REQUIRE_ESM 102')
})

test('a module handler whose export is missing or not a function fails the launch, naming file, export and what was found', async (t) => {
  const rt = await cpuRuntime(t)
  const missing = await t.throwsAsync(rt.launch({ input: u32, output: u32, cpu: { filename: fixture('missing-export.cjs'), export: 'handle' } }))
  t.true(missing instanceof RingbridgeTypeError)
  t.is(codeOf(missing), 'ERR_RINGBRIDGE_INVALID_ARGUMENT')
  t.regex(missing!.message, /export "handle"/)
  t.true(missing!.message.includes(fixture('missing-export.cjs')), missing!.message)
  t.regex(missing!.message, /found undefined \(its exports: other, limit\)/)
  const noDefault = await t.throwsAsync(rt.launch({ input: u32, output: u32, cpu: { filename: fixture('missing-export.cjs') } }))
  t.regex(noDefault!.message, /export "default" .* found undefined/)
  const notFn = await t.throwsAsync(rt.launch({ input: u32, output: u32, cpu: { filename: fixture('scale.mjs'), export: 'notAFunction' } }))
  t.regex(notFn!.message, /export "notAFunction" of .*scale\.mjs to be a function .*found number 42/)
  t.deepEqual(rt.kernels, [], 'a failed launch keeps no kernel')
})

test('a module handler that cannot be loaded fails the launch with the loader\'s error as cause', async (t) => {
  const rt = await cpuRuntime(t)
  const nowhere = fixture('no-such-handler.cjs')
  const e = await t.throwsAsync(rt.launch({ input: u32, output: u32, cpu: { filename: nowhere } }))
  t.is(codeOf(e), 'ERR_RINGBRIDGE_INVALID_ARGUMENT')
  t.true(e!.message.startsWith(`cpu: cannot load ${nowhere}: Error: Cannot find module`), e!.message)
  t.regex(String((e!.cause as Error | undefined)?.message), /Cannot find module/)
  // The runtime goes on.
  const k = await rt.launch({ input: u32, output: u32, cpu: { filename: fixture('scale.cjs') } })
  t.is(await k.request(1), 3)
})

test('cpu.filename must be absolute or a file URL; cpu.export a name', async (t) => {
  const rt = await cpuRuntime(t)
  const cases: [unknown, RegExp][] = [
    [{ filename: './fixtures/scale.cjs' }, /cpu\.filename: expected an absolute path or a file: URL .*got the string "\.\/fixtures\/scale\.cjs"/],
    [{ filename: 'scale.cjs' }, /cpu\.filename: expected an absolute path/],
    [{ filename: 'https://example.com/scale.mjs' }, /cpu\.filename: expected an absolute path/],
    [{ filename: new URL('https://example.com/scale.mjs') }, /cpu\.filename: expected an absolute path/],
    [{}, /cpu\.filename: expected .* got undefined/],
    [{ filename: fixture('scale.cjs'), export: 7 }, /cpu\.export: expected the name of the module's export/],
    [{ filename: fixture('scale.cjs'), export: '' }, /cpu\.export: expected/],
  ]
  for (const [cpu, message] of cases) {
    const e = await t.throwsAsync(rt.launch({ input: u32, output: u32, cpu: cpu as never }))
    t.is(codeOf(e), 'ERR_RINGBRIDGE_INVALID_ARGUMENT', JSON.stringify(cpu))
    t.regex(e!.message, message)
  }
})

// ---- a throwing handler's text in its rejection ------------------------------------------------

declare const FACTOR: number

test('a handler function that throws: the request\'s rejection carries the exception text and cause', async (t) => {
  const k = await launchOn(t, { input: u32, output: u32, cpu: (x: number) => (x % 2 === 0 ? x : x * FACTOR) })
  t.is(await k.request(2), 2)
  const e = await t.throwsAsync(within(k.request(3), 10_000, 'the fault'))
  t.is(codeOf(e), 'ERR_RINGBRIDGE_KERNEL_ERROR')
  t.true(e instanceof RingbridgeError)
  t.regex(e!.message, /handler-fault .*: ReferenceError: FACTOR is not defined$/)
  t.like((e as RingbridgeError).details, { kernelError: 'handler-fault', handlerError: 'FACTOR is not defined' })
  const cause = e!.cause as Error
  t.true(cause instanceof Error)
  t.is(cause.name, 'ReferenceError')
  t.is(cause.message, 'FACTOR is not defined')
  t.regex(cause.stack ?? '', /ReferenceError: FACTOR is not defined\n\s+at /, "the worker's stack")
  t.is(await k.request(4), 4, 'the kernel goes on')
})

test('a handler module that throws: each rejection has its own text, at once (no wait for handlerFault)', async (t) => {
  const k = await launchOn(t, { input: u32, output: u32, cpu: { filename: fixture('throws.cjs') } })
  const settled = await within(Promise.allSettled([1, 2, 3, 4, 5].map((x) => k.request(x))), 10_000, 'requests')
  t.deepEqual(
    settled.map((s) => (s.status === 'fulfilled' ? s.value : (s.reason as Error).message.replace(/^kernel rejected message \d+: /, ''))),
    [
      'handler-fault (code 5, detail 0): ReferenceError: FACTOR is not defined',
      2,
      'handler-fault (code 5, detail 0): ReferenceError: FACTOR is not defined',
      4,
      'handler-fault (code 5, detail 0): ReferenceError: FACTOR is not defined',
    ],
  )
  t.true(String((settled[0] as PromiseRejectedResult).reason.cause?.stack).includes('throws.cjs'), 'the stack names the module')
  // Unclaimed replies: receive() sees the same text.
  await k.send(7)
  const r = await t.throwsAsync(within(k.receive(), 10_000, 'receive'))
  t.regex(r!.message, /FACTOR is not defined/)
  await until(() => k.handlerFault !== undefined, 5000, 'handlerFault')
  t.is(k.handlerFault, 'FACTOR is not defined')
})

test('ctx.fail errors are not faults: their rejection has no handler text', async (t) => {
  const k = await launchOn(t, { input: u32, output: u32, cpu: (x: number, ctx) => ctx.fail(400 + x, x) })
  const e = await t.throwsAsync(k.request(1))
  t.regex(e!.message, /^kernel rejected message \d+: handler-401 \(code 401, detail 1\)$/)
  t.is(e!.cause, undefined)
})
