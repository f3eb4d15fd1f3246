// Routes from JavaScript (PROTOCOL.md §14): `Runtime.launchRoute` runs kernels whose output ring
// is the next one's input ring. On the cpu backend in CI (threads, and a kernel host); on the GPU
// with RINGBRIDGE_GPU=1 (the GPU suite), where the first kernel writes the second's rings itself.
import test from 'ava'

import { Runtime, array, bytes, f32, struct, u32, u64, type LaunchOptions } from '../index'
import { codeOf, receiveAll, within } from './helpers'

const GPU = process.env.RINGBRIDGE_GPU === '1'
const gpuTest = GPU ? test.serial : (title: string, _fn: unknown) => test.skip(`${title} — skipped: no CUDA device (set RINGBRIDGE_GPU=1 on a GPU host)`, () => undefined)
const GPUS = Number(process.env.RINGBRIDGE_GPU_COUNT ?? 0)
const gpu2Test = GPU && GPUS >= 2 ? test.serial : (title: string, _fn: unknown) => test.skip(`${title} — skipped: needs two GPUs (RINGBRIDGE_GPU=1, RINGBRIDGE_GPU_COUNT=${GPUS})`, () => undefined)

const N = 32
const axy = struct({ a: f32, xy: array(f32, 2 * N) })
const ys = array(f32, N)

async function open(backend: 'cpu' | 'cuda', t: { teardown(fn: () => Promise<void>): void }) {
  const rt = await Runtime.open({ backend })
  t.teardown(() => within(rt.close(), 30_000, 'runtime close'))
  return rt
}

/** echo → saxpy: the second kernel computes on what the first wrote into its ring. */
async function saxpyThroughARoute(rt: Runtime, extra: Pick<LaunchOptions<unknown, unknown>, 'isolation' | 'transport'> = {}) {
  const route = await rt.launchRoute([
    { handler: 'echo', input: axy, output: axy, ...extra },
    { handler: 'saxpy', input: axy, output: ys, ...extra },
  ])
  const replies = await Promise.all(
    Array.from({ length: 500 }, (_, m) => {
      const xy = Array.from({ length: 2 * N }, (_, i) => (i * 7 + m) % 97)
      return route.request({ a: m % 13, xy }).then((y) => ({ m, xy, y }))
    }),
  )
  for (const { m, xy, y } of replies) {
    // Small integers: a·x + y is exact in f32, so fused or not it is this.
    y.forEach((v, i) => {
      if (v !== (m % 13) * xy[i]! + xy[N + i]!) throw new Error(`message ${m}, element ${i}: ${v}`)
    })
  }
  return route
}

test('a route computes in its second kernel what its first forwarded', async (t) => {
  const rt = await open('cpu', t)
  const route = await saxpyThroughARoute(rt)
  t.is(route.stages.length, 2)
  t.deepEqual(route.stages.map((s) => s.transport), ['shared-memory', 'shared-memory'])
  const report = await route.terminate()
  t.is(report.undelivered.length, 0)
  t.is(report.processed, 500)
})

test('200 000 messages through four kernels: none lost, duplicated or reordered', async (t) => {
  const rt = await open('cpu', t)
  const stage = { handler: 'echo', input: u64, output: u64, capacity: 64 }
  const route = await rt.launchRoute([stage, stage, stage, stage])
  const total = 200_000
  const sending = route.sendBatch(Array.from({ length: total }, (_, i) => BigInt(i) * 3n))
  const got = await receiveAll(route, total)
  await sending
  t.is(got.length, total)
  const wrong = got.findIndex((v, i) => v !== BigInt(i) * 3n)
  t.is(wrong, -1, `reply ${wrong} is ${got[wrong]}`)
  const stats = route.stats()
  t.is(stats.depth.outputRing, 0)
  t.is((await route.terminate()).undelivered.length, 0)
})

test("an earlier stage's error rejects the request it belongs to; the others are answered", async (t) => {
  const rt = await open('cpu', t)
  const route = await rt.launchRoute([
    { handler: 'saxpy', input: bytes(), output: bytes() },
    { handler: 'echo', input: bytes(), output: bytes() },
  ])
  const bad = route.request(new Uint8Array([1, 2, 3]))
  const good = route.request(new Uint8Array(12))
  const err = await t.throwsAsync(bad)
  t.is(codeOf(err), 'ERR_RINGBRIDGE_KERNEL_ERROR')
  t.regex(err!.message, /bad-payload/)
  t.deepEqual([...(await good)], [0, 0, 0, 0])
  t.is(route.stats().errors.replies, 1)
  await route.terminate()
})

test('terminate accounts for every message in flight at every hop: drain delivers all, abandon keeps what the route took', async (t) => {
  const rt = await open('cpu', t)
  for (const mode of ['drain', 'abandon'] as const) {
    const stage = { handler: 'echo', input: u32, output: u32, capacity: 16 }
    const route = await rt.launchRoute([stage, stage, stage])
    const total = 20_000
    const received: number[] = []
    const collecting = (async () => {
      for (;;) {
        try {
          received.push(...(await route.receiveBatch(4096, { timeoutMs: 5000 })))
        } catch {
          return
        }
      }
    })()
    // Resolves once every message is in the send queue or a ring: thousands still in flight.
    await route.sendBatch(Array.from({ length: total }, (_, i) => i))
    const report = await route.terminate({ mode })
    await collecting
    t.deepEqual(received, Array.from({ length: received.length }, (_, i) => i), `${mode}: replies in order, none twice`)
    t.is(received.length + report.undelivered.length, total, `${mode}: every message accounted for`)
    t.deepEqual(report.undelivered, Array.from({ length: report.undelivered.length }, (_, i) => received.length + i))
    if (mode === 'drain') t.is(report.undelivered.length, 0)
  }
})

test("stats() shows each stage's own counters; a stage's error is that stage's", async (t) => {
  const rt = await open('cpu', t)
  const route = await rt.launchRoute([
    { handler: 'echo', input: bytes(), output: bytes() },
    { handler: 'saxpy', input: bytes(), output: bytes() },
    { handler: 'echo', input: bytes(), output: bytes() },
  ])
  await route.request(new Uint8Array(12))
  await t.throwsAsync(route.request(new Uint8Array(5)))
  const stages = route.stats().stages
  t.deepEqual(stages.map((s) => s.processed), [2, 2, 2])
  t.deepEqual(stages.map((s) => s.errors), [0, 1, 0])
  t.deepEqual(stages.map((s) => s.firstKernelError), ['none', 'bad-payload', 'none'])
  t.deepEqual(stages.map((s) => s.inputRing), [0, 0, 0])
  t.deepEqual(stages.map((s) => s.state), ['running', 'running', 'running'])
  await route.terminate()
  t.deepEqual(route.stats().stages.map((s) => s.state), ['terminated', 'terminated', 'terminated'])
})

test("a stage that crashes the route's kernel host rejects every waiter; the next route works", async (t) => {
  const rt = await open('cpu', t)
  const route = await rt.launchRoute([
    { handler: 'echo', input: u32, output: u32, isolation: 'process' },
    { handler: 'trap', input: u32, output: u32, isolation: 'process' },
  ])
  const pending = [route.request(1), route.request(2), route.receive()]
  for (const p of pending) {
    const err = await t.throwsAsync(within(p, 10_000, 'a rejection'))
    t.is(codeOf(err), 'ERR_RINGBRIDGE_KERNEL_ERROR')
    t.regex(err!.message, /kernel host process died/)
  }
  t.is(route.state, 'terminated')
  t.deepEqual(route.stats().stages.map((s) => s.state), ['terminated', 'terminated'])
  const report = await within(route.terminate(), 10_000, 'terminate')
  t.is(codeOf(report.fault), 'ERR_RINGBRIDGE_KERNEL_ERROR')
  const again = await rt.launchRoute([
    { handler: 'echo', input: u32, output: u32, isolation: 'process' },
    { handler: 'echo', input: u32, output: u32, isolation: 'process' },
  ])
  t.not(again.hostPid, route.hostPid)
  t.deepEqual(await Promise.all([again.request(7), again.request(8)]), [7, 8])
})

test('a route in one kernel host process', async (t) => {
  const rt = await open('cpu', t)
  const route = await saxpyThroughARoute(rt, { isolation: 'process' })
  t.is(route.isolation, 'process')
  t.true(typeof route.hostPid === 'number')
  await route.terminate()
})

test('routes that cannot work are refused before anything runs, naming the stage', async (t) => {
  const rt = await open('cpu', t)
  const echo = { handler: 'echo', input: u32, output: u32 }
  const one = await t.throwsAsync(rt.launchRoute([echo] as never))
  t.regex(one!.message, /launchRoute stages: expected an array of at least two launch options/)
  const shape = await t.throwsAsync(rt.launchRoute([echo, { ...echo, capacity: 8 }]))
  t.is(codeOf(shape), 'ERR_RINGBRIDGE_INVALID_ARGUMENT')
  t.regex(shape!.message, /route stage 0's output ring \(1024 slots of 32 B\) must be stage 1's input ring \(8 slots of 32 B\)/)
  const schema = await t.throwsAsync(rt.launchRoute([echo, { handler: 'echo', input: u64, output: u64, slotSize: 32, outputSlotSize: 32 }]))
  t.regex(schema!.message, /route stage 0's output schema \(4 bytes\) is not stage 1's input schema \(8 bytes\)/)
  const js = await t.throwsAsync(rt.launchRoute([echo, { input: u32, output: u32, cpu: (x: number) => x }]))
  t.regex(js!.message, /route stage 1: cpu: expected a built-in or CUDA handler/)
  const stageError = await t.throwsAsync(rt.launchRoute([echo, { handler: 'nope', input: u32, output: u32 }]))
  t.is(codeOf(stageError), 'ERR_RINGBRIDGE_UNKNOWN_HANDLER')
  const device = await t.throwsAsync(rt.launchRoute([echo, { ...echo, device: 3 }]))
  t.regex(device!.message, /route stage 1: device: expected one of this runtime's devices \(0\)/)
  const iso = await t.throwsAsync(rt.launchRoute([echo, { ...echo, isolation: 'process' }]))
  t.regex(iso!.message, /route stage 1: isolation: expected 'thread', as stage 0/)
})

gpuTest('GPU: routes on one GPU, every transport pair, none lost or reordered', async (t) => {
  const rt = await open('cuda', t)
  const total = Number(process.env.RINGBRIDGE_GPU_MESSAGES ?? 1_000_000) / 10
  for (const first of ['hybrid', 'mapped', 'dma', 'managed'] as const) {
    for (const second of ['mapped', 'dma', 'managed'] as const) {
      const route = await rt.launchRoute([
        { handler: 'echo', input: u64, output: u64, transport: first },
        { handler: 'echo', input: u64, output: u64, transport: second },
      ])
      t.deepEqual(route.stages.map((s) => s.transport), [first, second])
      const sending = route.sendBatch(Array.from({ length: total }, (_, i) => BigInt(i) * 5n))
      const got = await receiveAll(route, total)
      await sending
      t.is(got.findIndex((v, i) => v !== BigInt(i) * 5n), -1, `${first} → ${second}`)
      t.is((await route.terminate()).undelivered.length, 0)
    }
  }
})

gpuTest('GPU: saxpy on the second kernel of a route, in a kernel host and in this process', async (t) => {
  const rt = await open('cuda', t)
  for (const isolation of ['process', 'thread'] as const) {
    const route = await saxpyThroughARoute(rt, { isolation, transport: 'dma' })
    t.is(route.isolation, isolation)
    t.is((await route.terminate()).undelivered.length, 0)
  }
})

gpu2Test('two GPUs: a route from device 0 to device 1, host-staged and (where the GPUs allow it) peer', async (t) => {
  const rt = await open('cuda', t)
  t.true(rt.devices.length >= 2)
  const total = 200_000
  for (const second of ['mapped', 'dma'] as const) {
    let route
    try {
      route = await rt.launchRoute([
        { handler: 'echo', input: u64, output: u64, transport: 'dma', device: 0 },
        { handler: 'echo', input: u64, output: u64, transport: second, device: 1 },
      ])
    } catch (e) {
      // Only a device-memory ring without peer access may be refused, and it says what works.
      t.is(second, 'dma', String(e))
      t.regex((e as Error).message, /transport 'mapped'/)
      continue
    }
    t.deepEqual(route.stages.map((s) => s.device), [0, 1])
    const sending = route.sendBatch(Array.from({ length: total }, (_, i) => BigInt(i) * 7n))
    const got = await receiveAll(route, total)
    await sending
    t.is(got.findIndex((v, i) => v !== BigInt(i) * 7n), -1, `gpu0 dma → gpu1 ${second}`)
    t.is((await route.terminate()).undelivered.length, 0)
  }
})
