/**
 * `node bench/struct-stream.js [build-dir]`: the struct stream of issue #12 goal 3 alone — a
 * 3-field struct through `sendBatch` / `receiveBatch`, every reply checked for order — for A/B
 * runs of two builds on a noisy machine: run it alternately with this tree and with an older
 * build's directory (its compiled `index.js` and `ts/`) and compare medians. Environment:
 * `B` batch (8192), `R` receiveBatch max (8192), `CAP` ring capacity (65 536), `N` messages a
 * pass (2 048 000), `PASSES` (4; the first is the JIT's warm-up and is not printed).
 * Prints `struct_stream_B…_R…_cap… value M_msg_per_s` per timed pass.
 */
import { performance } from 'node:perf_hooks'
import { resolve } from 'node:path'

type Lib = typeof import('../index')

const env = (name: string, fallback: number): number => {
  const v = process.env[name]
  if (v === undefined) return fallback
  const n = Number(v)
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name}: expected a positive integer, got ${JSON.stringify(v)}`)
  return n
}

async function main(): Promise<void> {
  const dir = process.argv[2]
  const lib = (dir === undefined ? await import('../index') : await import(resolve(dir, 'index.js'))) as Lib
  const { Runtime, f64, struct, u32 } = lib
  const Msg = struct({ seq: u32, pad: u32, value: f64 })
  const B = env('B', 8192)
  const R = env('R', 8192)
  const CAP = env('CAP', 65_536)
  const N = env('N', 2_048_000)
  const PASSES = env('PASSES', 4)
  const batch = Array.from({ length: B }, (_, k) => ({ seq: k, pad: 0, value: k }))
  const runtime = await Runtime.open()
  try {
    for (let pass = 0; pass < PASSES; pass++) {
      const kernel = await runtime.launch({ handler: 'echo', input: Msg, output: Msg, capacity: CAP })
      const started = performance.now()
      const sender = (async () => {
        for (let sent = 0; sent < N; sent += B) await kernel.sendBatch(sent + B <= N ? batch : batch.slice(0, N - sent))
      })()
      for (let got = 0; got < N; ) {
        for (const r of await kernel.receiveBatch(R, { timeoutMs: 10_000 })) {
          if (r.seq !== got % B) throw new Error(`reply ${got} has seq ${r.seq}, expected ${got % B}: out of order`)
          got++
        }
      }
      await sender
      const rate = N / ((performance.now() - started) / 1000)
      await kernel.terminate()
      if (pass > 0) console.log(`${kernel.backend}_struct_stream_B${B}_R${R}_cap${CAP} ${(rate / 1e6).toFixed(3)} M_msg_per_s`)
    }
  } finally {
    await runtime.close()
  }
}

main().catch((err) => {
  console.error(err)
  process.exitCode = 1
})
