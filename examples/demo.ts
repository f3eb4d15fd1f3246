/**
 * `npm start`: launch the echo ring kernel on the best backend here (GPU when present, CPU
 * backend otherwise), stream 100 000 messages through it, check every reply, and print
 * round-trip latency and throughput; then run a handler of your own — CUDA C on the GPU, the
 * same function in JavaScript (a worker thread) on the CPU backend — over typed structs.
 */
import { performance } from 'node:perf_hooks'
import { Runtime, f32, f64, struct, u32, type Infer } from '../index'

const Ping = struct({ seq: u32, check: u32, sentAt: f64 })
const TOTAL = 100_000
const BATCH = 256
const SEQUENTIAL = 10_000

/** A cheap integer hash, so a corrupted or misrouted reply cannot pass by accident. */
const checksum = (seq: number) => Math.imul(seq ^ 0x9e3779b9, 0x85ebca6b) >>> 0

function percentile(sorted: Float64Array, p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!
}

function fmtUs(ms: number): string {
  return `${(ms * 1000).toFixed(1)} µs`
}

async function main(): Promise<void> {
  const runtime = await Runtime.open({ backend: 'auto' })
  console.log(`backend: ${runtime.backend} (${runtime.backendReason})`)
  const kernel = await runtime.launch({ handler: 'echo', input: Ping, output: Ping, capacity: 1024 })

  // Streaming: keep the ring busy with batches, check every reply in order.
  const rtt = new Float64Array(TOTAL)
  const start = performance.now()
  const sender = (async () => {
    for (let seq = 0; seq < TOTAL; seq += BATCH) {
      const batch = []
      for (let i = seq; i < Math.min(TOTAL, seq + BATCH); i++) batch.push({ seq: i, check: checksum(i), sentAt: performance.now() })
      await kernel.sendBatch(batch)
    }
  })()
  let expected = 0
  while (expected < TOTAL) {
    for (const reply of await kernel.receiveBatch(4096, { timeoutMs: 10_000 })) {
      if (reply.seq !== expected || reply.check !== checksum(expected)) {
        throw new Error(`reply ${expected}: got seq ${reply.seq} check ${reply.check}`)
      }
      rtt[expected++] = performance.now() - reply.sentAt
    }
  }
  await sender
  const seconds = (performance.now() - start) / 1000
  rtt.sort()
  console.log(`streamed ${TOTAL} messages, all replies checked in order`)
  console.log(`  throughput        ${(TOTAL / seconds / 1e6).toFixed(3)} M msg/s`)
  console.log(`  round trip p50    ${fmtUs(percentile(rtt, 0.5))}  (under load: includes queueing)`)
  console.log(`  round trip p99    ${fmtUs(percentile(rtt, 0.99))}`)

  // One request at a time: the latency of a single `await request()`.
  const one = new Float64Array(SEQUENTIAL)
  for (let i = 0; i < SEQUENTIAL; i++) {
    const t = performance.now()
    const reply = await kernel.request({ seq: i, check: checksum(i), sentAt: t }, { timeoutMs: 10_000 })
    if (reply.seq !== i || reply.check !== checksum(i)) throw new Error(`request ${i}: wrong reply`)
    one[i] = performance.now() - t
  }
  one.sort()
  console.log(`${SEQUENTIAL} sequential requests`)
  console.log(`  await request p50 ${fmtUs(percentile(one, 0.5))}`)
  console.log(`  await request p99 ${fmtUs(percentile(one, 0.99))}`)

  const report = await kernel.terminate()
  const stats = kernel.stats()
  console.log(`terminated: processed ${report.processed}, undelivered ${report.undelivered.length}, errors ${stats.errors.kernel}`)

  // Your own handler: one struct in, one out; CUDA on the GPU, the same contract in JS on cpu.
  const Poly = struct({ x: f32, c: struct({ a: f32, b: f32, d: f32 }) }, { name: 'Poly' })
  const Value = struct({ y: f32 }, { name: 'Value' })
  const source = `
__device__ uint32_t horner(const rb_input& in, rb_output& out, rb_context&) {
  out.y = fmaf(fmaf(in.c.a, in.x, in.c.b), in.x, in.c.d);  // a x^2 + b x + d
  return 0;
}`
  const cpu = (m: Infer<typeof Poly>) => ({ y: Math.fround(Math.fround(Math.fround(m.c.a * m.x + m.c.b) * m.x) + m.c.d) })
  const own = await runtime.launch({ input: Poly, output: Value, source, entry: 'horner', cpu })
  const xs = Array.from({ length: 10_000 }, (_, i) => Math.fround(i / 1000 - 5))
  const ys = await Promise.all(xs.map((x) => own.request({ x, c: { a: 0.5, b: -2, d: 1 } })))
  const off = ys.filter((r, i) => Math.abs(r.y - (0.5 * xs[i]! * xs[i]! - 2 * xs[i]! + 1)) > 1e-4 * Math.max(1, Math.abs(r.y))).length
  const l = own.stats().requestLatency
  console.log(`your handler (${own.backend === 'cuda' ? 'CUDA C on the GPU' : 'JavaScript in a worker thread'}): ${ys.length} requests, ${off} off; p50 ${l.p50.toFixed(1)} µs under load`)
  await own.terminate()
  await runtime.close()
  if (off > 0) process.exitCode = 1
}

main().catch((err) => {
  console.error(err)
  process.exitCode = 1
})
