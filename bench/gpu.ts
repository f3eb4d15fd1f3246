/**
 * GPU figures of the CUDA backend from JavaScript, one `name value unit` line each, to set
 * beside `ringbench.cu` run in the same GPU session: `await request()` round trip per transport
 * and streaming echo of 64-byte slots (48-byte payloads) fed by packed batches.
 * Without a GPU it prints a skip line.
 */
import { performance } from 'node:perf_hooks'
import { Runtime, bytes } from '../index'

const TRANSPORTS = ['mapped', 'dma', 'managed'] as const
const quick = process.argv.includes('--quick')
const ITERS = quick ? 500 : 20_000
const STREAM = quick ? 200_000 : 5_000_000

function pct(sorted: Float64Array, q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!
}

async function main(): Promise<void> {
  const rt = await Runtime.open({ backend: 'auto' })
  if (rt.backend !== 'cuda') {
    console.log(`gpu_bench skipped: no CUDA device (${rt.backendReason})`)
    return
  }
  console.log(`# ${rt.backendReason}`)
  for (const transport of TRANSPORTS) {
    const k = await rt.launch({ handler: 'echo', input: bytes(48), output: bytes(48), capacity: 64, slotSize: 64, transport })
    const msg = new Uint8Array(48).fill(7)
    const us = new Float64Array(ITERS)
    for (let i = -500; i < ITERS; i++) {
      const t = performance.now()
      const r = await k.request(msg, { timeoutMs: 10_000 })
      if (r.length !== 48 || r[47] !== 7) throw new Error(`${transport}: wrong reply`)
      if (i >= 0) us[i] = (performance.now() - t) * 1000
    }
    us.sort()
    console.log(`js_rtt_${transport}_p50 ${pct(us, 0.5).toFixed(2)} us`)
    console.log(`js_rtt_${transport}_p99 ${pct(us, 0.99).toFixed(2)} us`)
    await k.terminate()
  }
  for (const transport of TRANSPORTS) {
    const total = transport === 'managed' ? STREAM / 10 : STREAM
    const k = await rt.launch({ handler: 'echo', input: bytes(48), output: bytes(48), capacity: 65_536, slotSize: 64, transport })
    const SIZE = 48
    const packed = new Uint8Array(SIZE * 8192)
    const into = new Uint8Array(SIZE * 65_536)
    let sent = 0
    let got = 0
    const start = performance.now()
    let last = start
    while (got < total) {
      if (sent < total) sent += k.trySendPacked(packed, SIZE, Math.min(8192, total - sent))
      const n = k.tryReceivePacked(into, SIZE)
      got += n
      const now = performance.now()
      if (n > 0) last = now
      else if (now - last > 30_000) throw new Error(`${transport}: stalled at ${got}`)
    }
    const rate = total / ((performance.now() - start) / 1000)
    console.log(`js_stream_echo64_${transport}_cap65536_packed ${rate.toExponential(3)} msg/s`)
    await k.terminate()
  }
  await rt.close()
}

main().catch((err) => {
  console.error(err)
  process.exitCode = 1
})
