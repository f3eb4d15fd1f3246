// The CUDA backend end to end from JavaScript, per transport. Runs only with RINGBRIDGE_GPU=1
// (the GPU suite); elsewhere every test is listed as skipped with the reason, never passed.
import { execFileSync } from 'node:child_process'

import test from 'ava'

import { Runtime, array, bytes, f32, struct, u32, type RingKernel } from '../index'
import { alive, runNode, until, within } from './helpers'

const GPU = process.env.RINGBRIDGE_GPU === '1'
const TRANSPORTS = ['hybrid', 'mapped', 'dma', 'managed'] as const
const MESSAGES = Number(process.env.RINGBRIDGE_GPU_MESSAGES ?? 10_000_000)
const gpuTest = GPU ? test.serial : (title: string, _fn: unknown) => test.skip(`${title} — skipped: no CUDA device (set RINGBRIDGE_GPU=1 on a GPU host)`, () => undefined)

const Ping = struct({ seq: u32, check: u32 })
const checkOf = (seq: number) => Math.imul(seq ^ 0x5bd1e995, 0x27d4eb2d) >>> 0

async function open(): Promise<Runtime> {
  const rt = await Runtime.open({ backend: 'cuda' })
  if (rt.backend !== 'cuda') throw new Error(`expected the cuda backend, got ${rt.backend}: ${rt.backendReason}`)
  return rt
}

for (const transport of TRANSPORTS) {
  gpuTest(`${transport}: ${MESSAGES} echo messages in order with checksums`, async (t) => {
    const rt = await open()
    t.teardown(() => within(rt.close(), 30_000, 'close'))
    const k = await rt.launch({ handler: 'echo', input: Ping, output: Ping, capacity: 4096, transport })
    t.is(k.transport, transport)
    const BATCH = 2048
    const sender = (async () => {
      const batch = Array.from({ length: BATCH }, () => ({ seq: 0, check: 0 }))
      for (let s = 0; s < MESSAGES; s += BATCH) {
        const n = Math.min(BATCH, MESSAGES - s)
        for (let i = 0; i < n; i++) {
          batch[i]!.seq = s + i
          batch[i]!.check = checkOf(s + i)
        }
        await k.sendBatch(n === BATCH ? batch : batch.slice(0, n))
      }
    })()
    let expected = 0
    while (expected < MESSAGES) {
      for (const r of await k.receiveBatch(8192, { timeoutMs: 30_000 })) {
        if (r.seq !== expected || r.check !== checkOf(expected)) t.fail(`reply ${expected}: got seq ${r.seq} check ${r.check}`)
        expected++
      }
    }
    await sender
    t.is(expected, MESSAGES)
    const report = await k.terminate()
    t.deepEqual(report.undelivered, [])
    t.is(k.stats().errors.kernel, 0)
  })

  gpuTest(`${transport}: saxpy replies equal the CPU backend's bit for bit`, async (t) => {
    const Saxpy = struct({ a: f32, x: array(f32, 8), y: array(f32, 8) })
    const inputs = Array.from({ length: 500 }, (_, i) => ({
      a: i % 7 === 0 ? -0 : Math.fround(Math.sin(i) * 1e3),
      x: Array.from({ length: 8 }, (_, k) => (k === 3 && i % 5 === 0 ? NaN : Math.fround(Math.cos(i * k) * 7.3))),
      y: Array.from({ length: 8 }, (_, k) => (k === 6 && i % 11 === 0 ? Infinity : Math.fround(i / (k + 1)))),
    }))
    const run = async (rt: Runtime, options: { transport?: 'hybrid' | 'mapped' | 'dma' | 'managed' }) => {
      const k = await rt.launch({ handler: 'saxpy', input: Saxpy, output: bytes(32), outputSlotSize: 64, ...options })
      const out = await Promise.all(inputs.map((m) => k.request(m, { timeoutMs: 30_000 })))
      await k.terminate()
      return out.map((b) => Buffer.from(b).toString('hex'))
    }
    const cpu = await Runtime.open({ backend: 'cpu' })
    const gpu = await open()
    t.teardown(() => Promise.all([cpu.close(), gpu.close()]))
    t.deepEqual(await run(gpu, { transport }), await run(cpu, {}))
  })

  gpuTest(`${transport}: deactivate holds messages, activate releases them, abandon reports them`, async (t) => {
    const rt = await open()
    t.teardown(() => within(rt.close(), 30_000, 'close'))
    const k: RingKernel<number, number> = await rt.launch({ handler: 'echo', input: u32, output: u32, capacity: 64, transport })
    await within(k.deactivate(), 10_000, 'deactivate')
    t.is(k.state, 'paused')
    const processed = k.stats().processed
    for (let i = 0; i < 10; i++) await k.send(i)
    await new Promise((r) => setTimeout(r, 50))
    t.is(k.stats().processed, processed)
    await within(k.activate(), 10_000, 'activate')
    const got: number[] = []
    while (got.length < 10) got.push(...(await k.receiveBatch(10, { timeoutMs: 10_000 })))
    t.deepEqual(got, [...Array(10).keys()])
    await within(k.deactivate(), 10_000, 'deactivate')
    for (let i = 10; i < 17; i++) await k.send(i)
    const pending = k.request(99)
    const report = await within(k.terminate({ mode: 'abandon' }), 30_000, 'terminate')
    t.deepEqual(report.undelivered, [10, 11, 12, 13, 14, 15, 16, 99])
    const err = await t.throwsAsync(pending)
    t.is((err as { code?: string }).code, 'ERR_RINGBRIDGE_CLOSED')
  })

  gpuTest(`${transport}: terminate with thousands in flight drains them all`, async (t) => {
    const rt = await open()
    t.teardown(() => within(rt.close(), 30_000, 'close'))
    const k = await rt.launch({ handler: 'echo', input: u32, output: u32, capacity: 256, transport, sendQueue: { capacity: 32_768 } })
    const all = [...Array(20_000).keys()]
    const sending = k.sendBatch(all)
    const report = await within(k.terminate(), 30_000, 'terminate')
    await sending
    t.deepEqual(report.undelivered, [])
    const got = k.tryReceiveMany()
    t.deepEqual(got, all)
  })
}

gpuTest('auto transport falls back when mapped and managed fail (injected), and says why', async (t) => {
  process.env.RINGBRIDGE_INJECT_FAULT = 'mapped,managed'
  try {
    const rt = await open()
    t.teardown(() => within(rt.close(), 30_000, 'close'))
    const k = await rt.launch({ handler: 'echo', input: u32, output: u32 })
    t.is(k.transport, 'dma')
    t.regex(k.transportReason, /mapped \(cuMemHostRegister failed: CUDA_ERROR_INVALID_VALUE \(injected/)
    t.is(await k.request(5, { timeoutMs: 10_000 }), 5)
  } finally {
    delete process.env.RINGBRIDGE_INJECT_FAULT
  }
})

gpuTest('devices: all GPUs of the host are the runtime\'s; a kernel runs on the one asked for; others are refused', async (t) => {
  const count = execFileSync('nvidia-smi', ['--query-gpu=index', '--format=csv,noheader']).toString().trim().split('\n').length
  const rt = await Runtime.open({ backend: 'cuda', devices: 'all' })
  t.teardown(() => within(rt.close(), 30_000, 'close'))
  t.deepEqual(rt.devices, Array.from({ length: count }, (_, i) => i))
  const k = await rt.launch({ handler: 'echo', input: u32, output: u32, device: count - 1 })
  t.is(k.device, count - 1)
  t.is(await k.request(9), 9)
  const err = await t.throwsAsync(Runtime.open({ backend: 'cuda', devices: [count] }))
  t.regex((err as Error).message, new RegExp(`devices: ${count} is not a device of the cuda backend here \\(${count} present`))
})

gpuTest('a process that exits with a kernel still running ends at once and leaves nothing on the GPU', async (t) => {
  const script = `
    const rb = require(${JSON.stringify(require.resolve('../index'))})
    rb.Runtime.open({ backend: 'cuda' }).then(async (rt) => {
      const k = await rt.launch({ handler: 'echo', input: rb.u32, output: rb.u32 })
      await k.request(1)
      process.stdout.write(String(k.hostPid))
      process.exit(0)
    })`
  const started = Date.now()
  const { code, stdout: out, pid } = await runNode(script, 20_000)
  t.is(code, 0)
  t.log(`exited after ${Date.now() - started} ms`)
  // The kernel host (a grandchild) stops its kernel when its parent's socket closes.
  const hostPid = Number(out)
  t.true(Number.isInteger(hostPid) && hostPid > 0, `kernel host pid: ${out}`)
  await until(() => !alive(hostPid), 10_000, `kernel host ${hostPid} to exit`)
  t.log(`kernel host gone after ${Date.now() - started} ms`)
  const apps = execFileSync('nvidia-smi', ['--query-compute-apps=pid', '--format=csv,noheader']).toString().split('\n').map((l) => l.trim())
  t.false(apps.includes(String(pid)), `the exited process ${pid} is not on the GPU (${apps.join(',')})`)
  t.false(apps.includes(String(hostPid)), `its kernel host ${hostPid} is not on the GPU (${apps.join(',')})`)
})

gpuTest('a trapping handler in its kernel host rejects its requests with ERR_RINGBRIDGE_CUDA, and the next launch works', async (t) => {
  const rt = await open()
  t.teardown(() => within(rt.close(), 30_000, 'close'))
  for (const transport of TRANSPORTS) {
    const k = await rt.launch({ handler: 'trap', input: u32, output: u32, transport })
    t.is(k.isolation, 'process')
    const pending = [k.request(1, { timeoutMs: 20_000 }), k.request(2, { timeoutMs: 20_000 })]
    for (const p of pending) {
      const err = await t.throwsAsync(within(p, 25_000, `${transport}: trap request`))
      t.is((err as { code?: string }).code, 'ERR_RINGBRIDGE_CUDA', `${transport}: ${(err as Error).message}`)
    }
    t.is(k.state, 'terminated')
    t.is(k.stats().errors.firstKernelError, 'handler-fault')
    const again = await rt.launch({ handler: 'echo', input: u32, output: u32, transport })
    t.not(again.hostPid, k.hostPid)
    t.deepEqual(await Promise.all([again.request(5), again.request(6)]), [5, 6], `${transport}: after the trap`)
    await again.terminate()
  }
})

// Issue #14 item 3: an in-process launch (`isolation: 'thread'`) runs on the libuv pool, as a
// kernel host's start does: its CUDA context, the mapped region's registration (pinning 1 GiB
// takes a while) and the kernel launch leave the event loop free. On the JS thread a 5 ms timer
// got at most one tick through the whole launch.
gpuTest('isolation thread: timers keep firing while a kernel over a 1 GiB mapped region launches', async (t) => {
  const rt = await open()
  t.teardown(() => within(rt.close(), 30_000, 'close'))
  let ticks = 0
  const timer = setInterval(() => ticks++, 5)
  const started = Date.now()
  let k: RingKernel<Uint8Array, Uint8Array>
  try {
    k = await rt.launch({ handler: 'echo', input: bytes(), output: bytes(), capacity: 1 << 18, slotSize: 4096, transport: 'mapped', isolation: 'thread' })
  } finally {
    clearInterval(timer)
  }
  const ms = Date.now() - started
  t.log(`launch ${ms} ms, ${ticks} timer ticks`)
  t.is(k.isolation, 'thread')
  t.deepEqual([...(await k.request(Uint8Array.of(1, 2, 3), { timeoutMs: 10_000 }))], [1, 2, 3])
  if (ms >= 50) t.true(ticks >= Math.floor(ms / 5 / 4), `${ticks} timer ticks in a ${ms} ms launch`)
  await within(k.terminate(), 30_000, 'terminate')
})

// Runtime.open probes cuda on the libuv pool: loading the driver and compiling the ring kernel by
// NVRTC (about a second with a cold kernel cache) leave timers running. A fresh process and an
// empty cache directory make the compile cold.
gpuTest('Runtime.open keeps timers firing while it compiles the ring kernel (cold kernel cache)', async (t) => {
  const { mkdtempSync } = await import('node:fs')
  const { tmpdir } = await import('node:os')
  const path = await import('node:path')
  const cache = mkdtempSync(path.join(tmpdir(), 'ringbridge-cold-'))
  const script = `process.env.RINGBRIDGE_CACHE_DIR = ${JSON.stringify(cache)}
const { Runtime } = require(${JSON.stringify(path.join(__dirname, '..', 'index.js'))})
let ticks = 0
const timer = setInterval(() => ticks++, 5)
const started = Date.now()
Runtime.open({ backend: 'cuda' }).then(async (rt) => {
  clearInterval(timer)
  console.log(JSON.stringify({ ms: Date.now() - started, ticks, backend: rt.backend }))
  await rt.close()
})`
  const r = await runNode(script, 120_000)
  t.is(r.code, 0)
  const { ms, ticks, backend } = JSON.parse(r.stdout) as { ms: number; ticks: number; backend: string }
  t.log(`Runtime.open ${ms} ms (cold kernel cache), ${ticks} timer ticks`)
  t.is(backend, 'cuda')
  // The open compiled the ring kernel (into the empty cache), not just loaded it. (How long that
  // takes is the host's: 45 ms on an H100 host, so no floor on `ms`.)
  const { readdirSync } = await import('node:fs')
  t.true(readdirSync(cache).some((f) => f.endsWith('.img')), `the open compiled the ring kernel into ${cache}`)
  t.true(ticks >= Math.floor(ms / 5 / 4), `${ticks} timer ticks in a ${ms} ms open`)
})

// Last: a fault in this process's own context (isolation 'thread') ends CUDA here; kernel
// hosts are unaffected.
gpuTest('isolation thread: a trap rejects with ERR_RINGBRIDGE_CUDA; thread launches then say restart, process launches still work', async (t) => {
  const rt = await open()
  t.teardown(() => within(rt.close(), 30_000, 'close'))
  const k = await rt.launch({ handler: 'trap', input: u32, output: u32, isolation: 'thread' })
  const err = await t.throwsAsync(within(k.request(1, { timeoutMs: 20_000 }), 25_000, 'trap request'))
  t.is((err as { code?: string }).code, 'ERR_RINGBRIDGE_CUDA')
  t.is(k.state, 'terminated')
  t.truthy(k.fault)
  // A trap is a sticky error: the driver refuses new contexts in this process (driver 580).
  const again = await t.throwsAsync(rt.launch({ handler: 'echo', input: u32, output: u32, isolation: 'thread' }))
  t.is((again as { code?: string }).code, 'ERR_RINGBRIDGE_CUDA')
  t.regex((again as Error).message, /restart the process/)
  const isolated = await rt.launch({ handler: 'echo', input: u32, output: u32, isolation: 'process' })
  t.is(await isolated.request(11), 11)
})
