// Regression tests of issue #10 ("nothing lost, nothing wedged, nothing hung"), one or more per
// item, each written against the behaviour seen before the fix; plus the in-process part of the
// fault suite (event-loop liveness under load, launch/terminate churn). Kernel-host faults are
// in faults-host.spec, shared producers in producers.spec, codecs in codec.spec.
import test from 'ava'

import { Runtime, bytes, u32, type RingKernel } from '../index'
import { codeOf, launchOn, receiveAll, runNode, sleep, until, within } from './helpers'

const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i)
const echo = { handler: 'echo', input: u32, output: u32 } as const

/** A kernel paused with its ring full (capacity 1 holds message 0). */
async function pausedAndFull(t: Parameters<typeof launchOn>[0], extra: object = {}): Promise<RingKernel<number, number>> {
  const k = await launchOn(t, { ...echo, capacity: 1, ...extra })
  await within(k.deactivate(), 5000, 'deactivate')
  t.true(k.trySend(0))
  return k
}

// ---- 1. leaving `for await` early loses nothing --------------------------------------------

test('item 1: breaking out of replies() leaves every reply it did not yield receivable', async (t) => {
  const k = await launchOn(t, { ...echo, capacity: 128 })
  await k.sendBatch(range(0, 100))
  await until(() => k.stats().processed === 100, 5000, 'all 100 handled')
  const seen: number[] = []
  for await (const r of k.replies()) {
    seen.push(r)
    if (seen.length === 10) break
  }
  t.deepEqual(seen, range(0, 10))
  t.deepEqual(await receiveAll(k, 90), range(10, 100))
  t.is(k.stats().dropped.reply, 0)
  t.is(k.stats().replied, 100)
})

// ---- 2. ring shapes past 2^32 are refused, never wrapped -----------------------------------

for (const [name, value] of [
  ['capacity', 2 ** 32 + 8],
  ['capacity', 2 ** 40],
  ['capacity', -8],
  ['capacity', 2 ** 53],
  ['outputCapacity', 2 ** 32],
  ['slotSize', 2 ** 32 + 64],
  ['outputSlotSize', 2 ** 33],
  ['slotSize', -64],
] as const) {
  test(`item 2: ${name} ${value} is refused with the value as given`, async (t) => {
    const rt = await Runtime.open({ backend: 'cpu' })
    t.teardown(() => rt.close())
    const e = await t.throwsAsync(rt.launch({ ...echo, [name]: value }))
    t.is(codeOf(e), 'ERR_RINGBRIDGE_INVALID_ARGUMENT')
    t.true(e!.message.startsWith(`${name}: expected a power of two from `), e!.message)
    t.true(e!.message.endsWith(`got number ${String(value)}`), e!.message)
    t.is(rt.kernels.length, 0, 'nothing was launched')
  })
}

test('item 2: wait limits past what a timer holds are refused, not fired after 1 ms', async (t) => {
  const k = await launchOn(t, echo)
  for (const timeoutMs of [2 ** 31, 2 ** 40, Infinity]) {
    t.is(codeOf(await t.throwsAsync(k.receive({ timeoutMs }))), 'ERR_RINGBRIDGE_INVALID_ARGUMENT')
    t.is(codeOf(await t.throwsAsync(k.request(1, { timeoutMs }))), 'ERR_RINGBRIDGE_INVALID_ARGUMENT')
  }
  t.is(codeOf(await t.throwsAsync(launchOn(t, { ...echo, timeoutMs: 2 ** 32 }))), 'ERR_RINGBRIDGE_INVALID_ARGUMENT')
  t.is(await within(k.request(5, { timeoutMs: 2 ** 31 - 1 }), 5000, 'request with the longest limit'), 5)
})

// ---- 4 (see backpressure.spec for drop-oldest) ---------------------------------------------

test("item 4: sendBatch under 'drop-newest' counts what it dropped; under 'reject' a batch that cannot fit is refused whole", async (t) => {
  const k = await pausedAndFull(t, { sendQueue: { capacity: 2, policy: 'drop-newest' } })
  t.deepEqual(await within(k.sendBatch([1, 2, 3, 4]), 1000, 'batch'), { sent: 0, queued: 2, dropped: 2, undelivered: 0 })
  const r = await pausedAndFull(t, { sendQueue: { capacity: 2, policy: 'reject' } })
  const e = await t.throwsAsync(r.sendBatch([1, 2, 3]))
  t.is(codeOf(e), 'ERR_RINGBRIDGE_FULL')
  t.regex(e!.message, /nothing was sent/)
  t.is(r.stats().depth.sendQueue, 0)
  t.deepEqual(await r.sendBatch([1, 2]), { sent: 0, queued: 2, dropped: 0, undelivered: 0 })
  await r.activate()
  t.deepEqual(await receiveAll(r, 3), [0, 1, 2])
})

// ---- 5. a request that timed out in the send queue is withdrawn ----------------------------

test('item 5: a request that times out while still queued is never sent', async (t) => {
  const k = await pausedAndFull(t)
  const e = await t.throwsAsync(k.request(7, { timeoutMs: 30 }))
  t.is(codeOf(e), 'ERR_RINGBRIDGE_TIMEOUT')
  t.is((e as { details?: { withdrawn?: boolean } }).details?.withdrawn, true)
  t.is(k.stats().depth.sendQueue, 0)
  await k.activate()
  t.deepEqual(await receiveAll(k, 1), [0])
  const report = await k.terminate()
  t.is(report.processed, 1, 'the withdrawn request never reached the kernel')
  t.is(k.stats().lateReplies, 0)
})

test('item 5: a request that times out after reaching the ring counts its reply as late', async (t) => {
  const k = await pausedAndFull(t)
  await k.activate()
  await receiveAll(k, 1)
  await k.deactivate()
  const e = await t.throwsAsync(k.request(8, { timeoutMs: 30 }))
  t.is((e as { details?: { withdrawn?: boolean } }).details?.withdrawn, false)
  await k.activate()
  await until(() => k.stats().lateReplies === 1, 5000, 'the late reply is counted')
})

// ---- 6. JS handlers on small rings: no lost wake-up ----------------------------------------

for (const capacity of [1, 2, 16]) {
  test(`item 6: a JS handler on capacity ${capacity} never waits for the keep-alive timer`, async (t) => {
    const k = await launchOn(t, { input: u32, output: u32, cpu: (m: number) => m + 1, capacity })
    t.is(await within(k.request(1000), 15_000, 'the worker starts'), 1001)
    // Sequential requests: a lost wake-up costs the 1 s keep-alive, so each is bounded below it.
    for (let i = 0; i < 200; i++) t.is(await within(k.request(i), 900, `request ${i}`), i + 1)
    // Streaming through the small ring: the host waits for room (WAIT_INPUT) again and again.
    const sent = k.sendBatch(range(0, 2000))
    const got = await within(receiveAll(k, 2000), 20_000, '2000 replies')
    await sent
    t.deepEqual(got, range(1, 2001))
  })
}

// ---- 8. reply delivery yields to the event loop --------------------------------------------

// Serial: a test of this file doing synchronous work meanwhile (a 2 GiB buffer being zeroed)
// would delay the timer for reasons of its own.
test.serial('item 8: with 10 000 requests kept outstanding, timers and request timeouts still fire', async (t) => {
  // A deep ring and send queue keep replies ready at every pump: each reply's continuation
  // issued the next request, whose pump delivered more, and the microtask queue never emptied.
  // Counted in turns of the event loop per reply, not in wall time, so a busy machine cannot
  // fail it: a 1 ms interval ticks once per turn that lasts a millisecond or more.
  const k = await launchOn(t, { ...echo, capacity: 65536, sendQueue: { capacity: 16384 } })
  const total = 300_000
  let replies = 0
  let ticks = 0
  const interval = setInterval(() => ticks++, 1)
  const chain = async (seed: number) => {
    for (let v = seed; replies < total; v += 10_000) {
      const r = await k.request(v >>> 0)
      if (r !== v >>> 0) throw new Error(`reply ${r} for ${v}`)
      replies++
    }
  }
  const timedOut = k.request(1, { timeoutMs: 1 }).then(
    () => 'replied',
    (e: unknown) => codeOf(e),
  )
  try {
    await within(Promise.all(range(0, 10_000).map(chain)), 60_000, `${total} replies`)
  } finally {
    clearInterval(interval)
  }
  t.log(`${ticks} timer ticks during ${replies} replies`)
  // At least one turn per 4096 replies (about 75 here); the old pump gave 0 to 2.
  t.true(ticks >= 20, `only ${ticks} timer ticks during ${replies} replies: reply delivery starves the event loop`)
  t.true(['replied', 'ERR_RINGBRIDGE_TIMEOUT'].includes((await timedOut)!))
  t.is(k.stats().pendingRequests, 0)
})

// ---- 9. a stopped kernel host shows in stats() ---------------------------------------------

test('item 9: stats().host reports a kernel host stopped, continued and exited', async (t) => {
  const k = await launchOn(t, { ...echo, isolation: 'process' })
  t.is(await k.request(1), 1)
  const pid = k.hostPid!
  t.like(k.stats().host, { pid, state: 'running' })
  process.kill(pid, 'SIGSTOP')
  try {
    await until(() => k.stats().host?.state === 'stopped', 5000, 'the host is seen stopped')
    await sleep(50)
    t.true(k.stats().host!.stoppedForMs! >= 40, 'stoppedForMs grows while it stays stopped')
  } finally {
    process.kill(pid, 'SIGCONT')
  }
  await until(() => k.stats().host?.state === 'running', 5000, 'the host runs again')
  t.is(await k.request(2), 2)
  await k.terminate()
  t.is(k.stats().host?.state, 'exited')
})

// ---- 10. a rejected wait leaves no timer behind --------------------------------------------

test('item 10: a receive rejected by terminate keeps no timer: the process exits at once', async (t) => {
  const script = `
    const { Runtime, u32 } = require(${JSON.stringify(require.resolve('../index'))})
    ;(async () => {
      const rt = await Runtime.open({ backend: 'cpu' })
      const k = await rt.launch({ handler: 'echo', input: u32, output: u32 })
      const r = k.receive({ timeoutMs: 20000 }).catch((e) => e.code)
      const s = k.request(1, { timeoutMs: 20000, signal: new AbortController().signal })
      await s
      await k.terminate()
      await rt.close()
      console.log(await r)
      globalThis.started = Date.now()
    })()
  `
  const t0 = Date.now()
  const { code, stdout } = await runNode(script, 15_000)
  t.is(code, 0)
  t.is(stdout.trim(), 'ERR_RINGBRIDGE_CLOSED')
  t.true(Date.now() - t0 < 10_000, 'the process did not live on for the 20 s timer')
})

// ---- 11. the runtime holds no ended kernel ------------------------------------------------

test('item 11: launch/terminate churn: the runtime keeps no ended kernel, memory and descriptors stay flat', async (t) => {
  const script = `
    require('v8').setFlagsFromString('--expose-gc')
    const gc = require('vm').runInNewContext('gc')
    const fs = require('fs')
    const { Runtime, u32 } = require(${JSON.stringify(require.resolve('../index'))})
    const fds = () => fs.readdirSync('/proc/self/fd').length
    ;(async () => {
      const rt = await Runtime.open({ backend: 'cpu' })
      const cycle = async (isolation, n, capacity) => {
        const refs = []
        for (let i = 0; i < n; i++) {
          const k = await rt.launch({ handler: 'echo', input: u32, output: u32, capacity, isolation })
          if ((await k.request(i)) !== i) throw new Error('bad reply')
          await k.terminate()
          refs.push(new WeakRef(k))
        }
        for (let i = 0; i < 5; i++) { gc(); await new Promise((r) => setTimeout(r, 20)) }
        return refs.filter((r) => r.deref() !== undefined).length
      }
      await cycle('thread', 5, 1024); await cycle('process', 2, 16) // warm up
      gc()
      const fd0 = fds(), rss0 = process.memoryUsage().rss
      const liveThread = await cycle('thread', 300, 1 << 14)
      const liveProcess = await cycle('process', 60, 16)
      const out = { liveThread, liveProcess, kernels: rt.kernels.length, fdGrowth: fds() - fd0, rssGrowthMiB: (process.memoryUsage().rss - rss0) / 2 ** 20 }
      await rt.close()
      console.log(JSON.stringify(out))
    })().catch((e) => { console.log(String(e.stack)); process.exit(1) })
  `
  const { code, stdout } = await runNode(script, 150_000)
  t.is(code, 0, stdout)
  const r = JSON.parse(stdout.trim().split('\n').pop()!) as { liveThread: number; liveProcess: number; kernels: number; fdGrowth: number; rssGrowthMiB: number }
  t.log(r)
  t.is(r.kernels, 0)
  // 300 kernels of 2 × 16 K × 32 B rings held would be ~300 MiB; a few may survive one GC.
  t.true(r.liveThread < 10, `${r.liveThread} of 300 ended kernels are still reachable`)
  t.true(r.liveProcess < 10, `${r.liveProcess} of 60 ended kernel-host kernels are still reachable`)
  t.true(r.fdGrowth < 10, `descriptors grew by ${r.fdGrowth} over 60 kernel hosts`)
  t.true(r.rssGrowthMiB < 150, `rss grew ${r.rssGrowthMiB.toFixed(0)} MiB over 300 launches`)
})

// ---- 12. regions of 2–4 GiB -----------------------------------------------------------------

test('item 12: a region past 2 GiB (input 2^19 × 4 KiB slots) launches and carries messages', async (t) => {
  const k = await launchOn(t, { handler: 'echo', input: bytes(), output: bytes(), capacity: 2 ** 19, slotSize: 4096, outputCapacity: 1024, outputSlotSize: 4096 })
  const big = new Uint8Array(4000).map((_, i) => i & 0xff)
  for (let i = 0; i < 2100; i++) await k.send(big.subarray(0, (i % 4000) + 1))
  const got = await receiveAll(k, 2100)
  got.forEach((r, i) => t.is(r.length, (i % 4000) + 1))
  t.deepEqual(got[2099], big.subarray(0, 2100))
  t.is((await k.terminate()).undelivered.length, 0)
})

test('item 12: a launch that fails after its kernel started stops the kernel; no doorbell reaches the half-built object', async (t) => {
  const rt = await Runtime.open({ backend: 'cpu' })
  t.teardown(() => rt.close())
  // A method shorthand cannot be rebuilt in the worker: refused after the native side launched.
  const handlers = { twice(m: number) { return m * 2 } }
  for (let i = 0; i < 20; i++) {
    const e = await t.throwsAsync(rt.launch({ input: u32, output: u32, cpu: handlers.twice, capacity: 2 }))
    t.is(codeOf(e), 'ERR_RINGBRIDGE_INVALID_ARGUMENT')
  }
  await sleep(100) // an uncaught throw from a late doorbell would end this test's process here
  t.is(rt.kernels.length, 0)
  const k = await rt.launch({ ...echo, capacity: 2 })
  t.is(await k.request(3), 3)
})

// ---- 14. errors name the call; drain delivers what waited for room -------------------------

test('item 14: errors name the call that failed', async (t) => {
  const k = await pausedAndFull(t, { sendQueue: { capacity: 1, policy: 'block' } })
  await k.send(1) // queued
  const blockedSend = k.send(2)
  const blockedRequest = k.request(3)
  const report = await k.terminate({ mode: 'abandon' })
  t.deepEqual(report.undelivered, [0, 1])
  t.regex((await t.throwsAsync(blockedSend))!.message, /^send: /)
  t.regex((await t.throwsAsync(blockedRequest))!.message, /^request \d+: /)
  t.regex((await t.throwsAsync(k.send(4)))!.message, /^send: /)
  t.regex((await t.throwsAsync(k.request(5)))!.message, /^request: /)
  t.regex((await t.throwsAsync(k.sendBatch([6])))!.message, /^sendBatch: /)
  t.regex(t.throws(() => k.trySend(7))!.message, /^trySend: /)
})

test("item 14: terminate({ mode: 'drain' }) delivers the messages still waiting for room behind a full send queue", async (t) => {
  const k = await pausedAndFull(t, { sendQueue: { capacity: 1, policy: 'block' } })
  const sends = range(1, 20).map((v) => k.send(v))
  const requests = range(100, 110).map((v) => k.request(v))
  const report = await within(k.terminate({ mode: 'drain' }), 10_000, 'drain')
  t.deepEqual(report.undelivered, [])
  t.is(report.processed, 30)
  t.deepEqual(await Promise.all(requests), range(100, 110))
  for (const s of sends) t.true(['sent', 'queued'].includes(await s))
  t.deepEqual(k.tryReceiveMany(), range(0, 20))
})

test("item 14: the reply queue's overflow error names its capacity, and every reply is a reply or counted in an error", async (t) => {
  const k = await launchOn(t, { ...echo, capacity: 2, replyQueue: { capacity: 4, policy: 'reject' } })
  const n = 3000
  const sent = k.sendBatch(range(0, n))
  let received = 0
  let dropped = 0
  let errors = 0
  while (received + dropped < n) {
    try {
      await within(k.receive({ timeoutMs: 5000 }), 6000, 'receive')
      received++
      if (received % 7 === 0) await sleep(1) // a receiver that falls behind now and then
    } catch (e) {
      t.is(codeOf(e), 'ERR_RINGBRIDGE_OVERFLOW', (e as Error).message)
      t.regex((e as Error).message, /capacity 4/)
      dropped += (e as { details: { dropped: number } }).details.dropped
      errors++
    }
  }
  await sent
  t.is(received + dropped, n)
  t.is(k.stats().dropped.reply, dropped)
  t.log(`${received} received, ${dropped} dropped in ${errors} errors`)
})

// receiveBatch waited for one reply, then took the rest with tryReceiveMany, which throws when an
// error reply comes first: the reply it had waited for was lost. It now returns that reply (and
// any after it up to the error); the next receive reports the error.
test('receiveBatch keeps the reply it waited for when an error reply follows it', async (t) => {
  // 40-byte messages do not fit the 32-byte output slots: the kernel answers REPLY_TOO_LARGE.
  const k = (await launchOn(t, { handler: 'echo', input: bytes(), output: bytes(), capacity: 4, slotSize: 64, outputSlotSize: 32 })) as RingKernel<Uint8Array, Uint8Array>
  await within(k.deactivate(), 5000, 'deactivate')
  const batch = k.receiveBatch(16, { timeoutMs: 10_000 })
  await within(k.sendBatch([Uint8Array.of(7), new Uint8Array(40), Uint8Array.of(9)]), 5000, 'send')
  await within(k.activate(), 5000, 'activate')
  const first = await within(batch, 10_000, 'receiveBatch')
  t.deepEqual(first.map((b) => [...b]), [[7]])
  t.is(codeOf(await t.throwsAsync(k.receiveBatch(16, { timeoutMs: 10_000 }))), 'ERR_RINGBRIDGE_KERNEL_ERROR')
  t.deepEqual((await k.receiveBatch(16, { timeoutMs: 10_000 })).map((b) => [...b]), [[9]])
  await within(k.terminate(), 10_000, 'terminate')
})
