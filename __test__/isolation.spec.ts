// Process isolation on the CPU backend (runs in CI): the kernel lives in a kernel host process
// (a child `node` running the addon) over shared memory both processes map. The same path the
// cuda backend takes by default, minus the GPU: a host that crashes (the test handler `trap`
// aborts it, as a trapping GPU kernel ends its context) rejects what waited on it, and the next
// launch works.
import test from 'ava'

import { Runtime, bytes, struct, u32 } from '../index'
import { alive, codeOf, launchOn, receiveAll, runNode, until, within } from './helpers'

const Ping = struct({ seq: u32, check: u32 })
const checkOf = (seq: number) => Math.imul(seq ^ 0x27d4eb2d, 0x5bd1e995) >>> 0

test('100 000 echo messages through a kernel host arrive in order with their checksums', async (t) => {
  const k = await launchOn(t, { handler: 'echo', input: Ping, output: Ping, capacity: 256, isolation: 'process' })
  t.is(k.isolation, 'process')
  t.true(typeof k.hostPid === 'number' && k.hostPid !== process.pid && alive(k.hostPid))
  t.is(k.backend, 'cpu')
  const N = 100_000
  const BATCH = 1000
  const sender = (async () => {
    for (let s = 0; s < N; s += BATCH) {
      await k.sendBatch(Array.from({ length: BATCH }, (_, i) => ({ seq: s + i, check: checkOf(s + i) })))
    }
  })()
  const replies = await within(receiveAll(k, N), 60_000, 'all replies')
  await sender
  replies.forEach((r, i) => {
    if (r.seq !== i || r.check !== checkOf(i)) t.fail(`reply ${i}: seq ${r.seq} check ${r.check}`)
  })
  t.deepEqual((await k.terminate()).undelivered, [])
  t.is(k.stats().processed, N)
  await until(() => !alive(k.hostPid!), 5000, 'the kernel host to exit after terminate')
})

test('a crashing kernel host rejects every waiter with the fault, and the next launch works', async (t) => {
  const rt = await Runtime.open({ backend: 'cpu' })
  t.teardown(() => within(rt.close(), 15_000, 'runtime close'))
  const k = await rt.launch({ handler: 'trap', input: u32, output: u32, isolation: 'process' })
  const pending = [k.request(1), k.request(2), k.receive()]
  for (const p of pending) {
    const err = await t.throwsAsync(within(p, 10_000, 'a rejection'))
    t.is(codeOf(err), 'ERR_RINGBRIDGE_KERNEL_ERROR')
    t.regex(err!.message, /kernel host process died \(signal: 6/)
  }
  t.is(k.state, 'terminated')
  t.is(k.stats().errors.firstKernelError, 'handler-fault')
  const report = await within(k.terminate(), 10_000, 'terminate')
  t.is(codeOf(report.fault), 'ERR_RINGBRIDGE_KERNEL_ERROR')
  t.is(codeOf(await t.throwsAsync(k.request(3))), 'ERR_RINGBRIDGE_CLOSED')
  t.false(alive(k.hostPid!))

  const again = await rt.launch({ handler: 'echo', input: u32, output: u32, isolation: 'process' })
  t.not(again.hostPid, k.hostPid)
  t.deepEqual(await Promise.all([again.request(7), again.request(8)]), [7, 8])
})

test('isolation is checked, and the test-only trap handler is refused in this process', async (t) => {
  const rt = await Runtime.open({ backend: 'cpu' })
  t.teardown(() => within(rt.close(), 15_000, 'runtime close'))
  const bad = await t.throwsAsync(rt.launch({ handler: 'echo', input: u32, output: u32, isolation: 'fork' as 'process' }))
  t.is(codeOf(bad), 'ERR_RINGBRIDGE_INVALID_ARGUMENT')
  t.regex(bad!.message, /isolation: expected 'process' or 'thread'/)
  const trap = await t.throwsAsync(rt.launch({ handler: 'trap', input: u32, output: u32 }))
  t.is(codeOf(trap), 'ERR_RINGBRIDGE_INVALID_ARGUMENT')
  t.regex(trap!.message, /isolation 'process'/)
  const unknown = await t.throwsAsync(rt.launch({ handler: 'nope', input: u32, output: u32, isolation: 'process' }))
  t.is(codeOf(unknown), 'ERR_RINGBRIDGE_UNKNOWN_HANDLER')
  t.regex(unknown!.message, /no built-in handler named 'nope'/)
  const k = await rt.launch({ handler: 'echo', input: bytes(), output: bytes() })
  t.is(k.isolation, 'thread')
  t.is(k.hostPid, undefined)
})

test('a parent that exits with an isolated kernel running takes its kernel host with it', async (t) => {
  const script = `
    const rb = require(${JSON.stringify(require.resolve('../index'))})
    rb.Runtime.open({ backend: 'cpu' }).then(async (rt) => {
      const k = await rt.launch({ handler: 'echo', input: rb.u32, output: rb.u32, isolation: 'process' })
      await k.request(1)
      process.stdout.write(String(k.hostPid))
      process.exit(0)
    })`
  const { code, stdout: out } = await runNode(script, 20_000)
  t.is(code, 0)
  const hostPid = Number(out)
  t.true(Number.isInteger(hostPid) && hostPid > 0, `host pid printed: ${out}`)
  await until(() => !alive(hostPid), 5000, `kernel host ${hostPid} to exit after its parent`)
  t.false(alive(hostPid))
})
