/**
 * `npm run bench`: the echo kernel on this host's backend beside the baseline a Node.js user
 * would otherwise reach for — a worker thread answering `postMessage` — measured in the same
 * process. Prints tinybench's table, then one `name value unit` line per figure, ratios last.
 */
import { Worker } from 'node:worker_threads'
import { performance } from 'node:perf_hooks'
import * as lib from '../index'
import { Runtime, bytes, f64, struct, u32 } from '../index'
import { streamChunks } from './gpu'
import { structStream } from './struct-stream'

const Msg = struct({ seq: u32, pad: u32, value: f64 })
const STREAM = 200_000
const BATCH = 512

function workerEcho(): Worker {
  return new Worker("require('node:worker_threads').parentPort.on('message', (m) => require('node:worker_threads').parentPort.postMessage(m))", { eval: true })
}

async function main(): Promise<void> {
  // tinybench is ESM-only; this file compiles to CommonJS.
  const { Bench } = (await import('tinybench')) as typeof import('tinybench')
  const runtime = await Runtime.open()
  const kernel = await runtime.launch({ handler: 'echo', input: Msg, output: Msg, capacity: 4096 })
  const worker = workerEcho()
  let pending: ((v: unknown) => void) | undefined
  worker.on('message', (m) => pending?.(m))
  const viaWorker = (m: unknown) => new Promise((resolve) => { pending = resolve; worker.postMessage(m) })

  // Correctness before timing.
  const probe = { seq: 7, pad: 0, value: 1.5 }
  const echoed = await kernel.request(probe, { timeoutMs: 5000 })
  if (echoed.seq !== 7 || echoed.value !== 1.5) throw new Error('echo kernel returned a wrong reply')

  const bench = new Bench({ time: 1500, warmup: true })
  let i = 0
  bench
    .add('ringbridge await request()', async () => { await kernel.request({ seq: i++ & 0xffff, pad: 0, value: 1 }) })
    .add('worker_threads postMessage round trip', async () => { await viaWorker({ seq: i++ & 0xffff, pad: 0, value: 1 }) })
  await bench.run()
  console.table(bench.table())

  // Streaming throughput, same message count both ways, each side's loop run once untimed
  // first: timed cold, the first 200 000 messages measured the JIT's warm-up (a quarter of the
  // warm rate on the cpu backend).
  const batch = Array.from({ length: BATCH }, (_, k) => ({ seq: k, pad: 0, value: k }))
  const ringStream = async (count: number): Promise<number> => {
    const started = performance.now()
    const sender = (async () => { for (let s = 0; s < count; s += BATCH) await kernel.sendBatch(batch) })()
    for (let got = 0; got < count; ) got += (await kernel.receiveBatch(8192, { timeoutMs: 10_000 })).length
    await sender
    return count / ((performance.now() - started) / 1000)
  }
  await ringStream(STREAM)
  const ringRate = await ringStream(STREAM)

  // The same with a deep ring and big batches: what the struct path moves when batching is
  // cheap; replies taken up to the whole ring at a time, 8192 at a time, and 1024 (the default).
  // A first pass of each, not timed, so the figures are the optimized code's rather than the
  // JIT's warm-up (the first million messages of a process ran at about half the rate).
  const deepRate = async (receiveMax: number, count: number): Promise<number> =>
    (await structStream(lib, runtime, { batch: 8192, receiveMax, capacity: 65_536, count })).rate
  const DEEP = 2_048_000 // a multiple of the batch
  await deepRate(65_536, DEEP / 2)
  await deepRate(8192, DEEP / 2)
  const deepWhole = await deepRate(65_536, DEEP)
  const deep8192 = await deepRate(8192, DEEP)
  const deep1024 = await deepRate(1024, DEEP) // receiveBatch's default

  worker.removeAllListeners('message')
  const workerStream = async (count: number): Promise<number> => {
    const started = performance.now()
    await new Promise<void>((resolve) => {
      let got = 0
      const onMessage = (m: unknown[]) => {
        got += m.length
        if (got < count) return
        worker.off('message', onMessage)
        resolve()
      }
      worker.on('message', onMessage)
      for (let s = 0; s < count; s += BATCH) worker.postMessage(batch)
    })
    return count / ((performance.now() - started) / 1000)
  }
  await workerStream(STREAM)
  const workerRate = await workerStream(STREAM)

  const p50 = (name: string) => {
    const task = bench.tasks.find((x) => x.name === name)
    const result = task?.result as { latency?: { p50?: number } } | undefined
    return (result?.latency?.p50 ?? NaN) * 1000
  }
  const rbP50 = p50('ringbridge await request()')
  const wkP50 = p50('worker_threads postMessage round trip')
  // Raw 48-byte payloads in 64-byte slots: packed batches (one copy each way) beside chunks (in
  // place; `full`: every payload written and every reply checked, else a sample, see gpu.ts).
  const raw: [string, number, string][] = []
  for (const cap of [4096, 65_536]) {
    const RAW = 4_000_000
    let k = await runtime.launch({ handler: 'echo', input: bytes(48), output: bytes(48), capacity: cap, slotSize: 64 })
    const packed = new Uint8Array(48 * 8192)
    const into = new Uint8Array(48 * cap)
    let sent = 0
    let got = 0
    const t = performance.now()
    while (got < RAW) {
      if (sent < RAW) sent += k.trySendPacked(packed, 48, Math.min(8192, RAW - sent))
      got += k.tryReceivePacked(into, 48)
    }
    raw.push([`${k.backend}_stream_packed64_cap${cap}`, RAW / ((performance.now() - t) / 1000) / 1e6, 'M_msg_per_s'])
    await k.terminate()
    for (const full of [false, true]) {
      k = await runtime.launch({ handler: 'echo', input: bytes(48), output: bytes(48), capacity: cap, slotSize: 64 })
      const rate = await streamChunks(k, RAW, full, `chunks cap ${cap}`)
      raw.push([`${k.backend}_stream_chunk64_${full ? 'full_' : ''}cap${cap}`, rate / 1e6, 'M_msg_per_s'])
      await k.terminate()
    }
  }

  const lines: [string, number, string][] = [
    [`${kernel.backend}_request_p50`, rbP50, 'us'],
    ['worker_postmessage_rtt_p50', wkP50, 'us'],
    [`${kernel.backend}_stream_echo_24B`, ringRate / 1e6, 'M_msg_per_s'],
    [`${kernel.backend}_stream_echo_24B_cap65536_batch8192`, deepWhole / 1e6, 'M_msg_per_s'],
    [`${kernel.backend}_stream_echo_24B_cap65536_batch8192_recv8192`, deep8192 / 1e6, 'M_msg_per_s'],
    [`${kernel.backend}_stream_echo_24B_cap65536_batch8192_recv1024`, deep1024 / 1e6, 'M_msg_per_s'],
    ['worker_postmessage_stream_24B_batch512', workerRate / 1e6, 'M_msg_per_s'],
    ...raw,
    ['ratio_request_p50_vs_worker', rbP50 / wkP50, 'x'],
    ['ratio_stream_vs_worker', ringRate / workerRate, 'x'],
    ['ratio_stream_cap65536_recv8192_vs_worker', deep8192 / workerRate, 'x'],
  ]
  for (const [name, value, unit] of lines) console.log(`${name} ${value.toFixed(3)} ${unit}`)
  await worker.terminate()
  await runtime.close()
}

main().catch((err) => {
  console.error(err)
  process.exitCode = 1
})
