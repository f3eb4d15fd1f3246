/**
 * GPU figures of the CUDA backend from JavaScript, one `name value unit` line each, to set
 * beside `ringbench.cu` run in the same GPU session: `await request()` round trip per transport
 * and streaming echo of 64-byte slots (48-byte payloads) fed by packed batches, then by chunks
 * (`reserve`/`commit`, `receiveChunk`/`release`: in place, PROTOCOL.md §5.3).
 * Without a GPU it prints a skip line.
 */
import { performance } from 'node:perf_hooks'
import { Runtime, bytes, type RingKernel } from '../index'

const TRANSPORTS = ['hybrid', 'mapped', 'dma', 'managed'] as const
const quick = process.argv.includes('--quick')
const ITERS = quick ? 500 : 20_000
const STREAM = quick ? 200_000 : 5_000_000

/** The pattern word of message `seq` (its first payload word is `seq`, the second this). */
const patternOf = (seq: number) => Math.imul(seq ^ 0x5bd1e995, 0x27d4eb2d) >>> 0

/**
 * Streams `total` 48-byte messages through chunks and returns msg/s. `full`: every payload
 * written (seq, pattern) and every reply checked. Otherwise the input slots are filled once,
 * before the loop, with a pattern of the slot (the echo kernel leaves input slots as they are),
 * and a sample of the replies is checked: every 4096th and the last of each chunk.
 */
export async function streamChunks(k: RingKernel<Uint8Array, Uint8Array>, total: number, full: boolean, what: string): Promise<number> {
  const SIZE = 48
  const cap = k.capacity
  const slotOf = (c: { first: Uint8Array; second: Uint8Array; firstCount: number; slotSize: number; payloadOffset: number }, i: number) =>
    (i < c.firstCount ? c.first.byteOffset + i * c.slotSize : c.second.byteOffset + (i - c.firstCount) * c.slotSize) + c.payloadOffset
  // The first reservation covers the whole (empty) ring: fill every slot's payload once.
  const all = k.reserve(cap)
  if (all.count !== cap) throw new Error(`${what}: expected an empty ring of ${cap}, got ${all.count} free`)
  const view = new DataView(all.first.buffer)
  for (let i = 0; i < cap; i++) view.setUint32(slotOf(all, i) + 4, patternOf(i), true)
  k.receiveChunk(0) // replies stay in the ring for the chunks below
  let sent = 0
  let got = 0
  const start = performance.now()
  let last = start
  while (got < total) {
    if (sent < total) {
      const c = k.reserve(total - sent)
      if (full) {
        for (let i = 0; i < c.count; i++) {
          const at = slotOf(c, i)
          view.setUint32(at, sent + i, true)
          view.setUint32(at + 4, patternOf(sent + i), true)
        }
      } else {
        // Every 4096th position carries its sequence number, so a stale reply from an earlier
        // lap fails the sampled check too.
        for (let i = sent % 4096 === 0 ? 0 : 4096 - (sent % 4096); i < c.count; i += 4096) view.setUint32(slotOf(c, i), sent + i, true)
      }
      sent += c.commit(c.count, { size: SIZE })
    }
    const r = k.receiveChunk(cap)
    const n = r.count
    if (n > 0) {
      const rv = new DataView(r.first.buffer)
      for (let i = full ? 0 : (got % 4096 === 0 ? 0 : 4096 - (got % 4096)); i < n; i += full ? 1 : 4096) checkReply(r, rv, i, got + i, full)
      checkReply(r, rv, n - 1, got + n - 1, full)
      r.release()
      got += n
    }
    const now = performance.now()
    if (n > 0) last = now
    else if (now - last > 30_000) throw new Error(`${what}: stalled at ${got}`)
  }
  return total / ((performance.now() - start) / 1000)

  function checkReply(r: ReturnType<typeof k.receiveChunk>, rv: DataView, i: number, seq: number, full: boolean): void {
    const at = slotOf(r, i)
    const sampled = seq % 4096 === 0
    const ok = r.lengthAt(i) === SIZE && (full ? rv.getUint32(at, true) === seq && rv.getUint32(at + 4, true) === patternOf(seq) : (!sampled || rv.getUint32(at, true) === seq) && rv.getUint32(at + 4, true) === patternOf(seq % cap))
    if (!ok) throw new Error(`${what}: reply ${seq} is wrong (length ${r.lengthAt(i)}${r.isErrorAt(i) ? `, ${r.errorAt(i)?.message}` : ''})`)
  }
}

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
  for (const transport of ['dma', 'hybrid', 'mapped'] as const) {
    for (const cap of [1 << 20, 65_536]) {
      for (const full of [false, true]) {
        const k = await rt.launch({ handler: 'echo', input: bytes(48), output: bytes(48), capacity: cap, slotSize: 64, transport })
        const rate = await streamChunks(k, quick ? STREAM : 4 * STREAM, full, `${transport} cap ${cap}`)
        console.log(`js_stream_chunk64_${full ? 'full_' : ''}${transport}_cap${cap} ${rate.toExponential(3)} msg/s`)
        await k.terminate()
      }
    }
  }
  await rt.close()
}

if (require.main === module) main().catch((err) => {
  console.error(err)
  process.exitCode = 1
})
