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

type Runtime = Awaited<ReturnType<Lib['Runtime']['open']>>

/** What one pass of the stream is: batch size, replies per `receiveBatch`, ring capacity, messages. */
export interface StructStream {
  batch: number
  receiveMax: number
  capacity: number
  count: number
}

/**
 * One pass on a fresh echo kernel of `runtime` (from the library `lib`): `count` messages sent
 * in `sendBatch`es of `batch` while `receiveBatch(receiveMax)` takes the replies, each checked
 * for order. Returns messages per second and the backend. Also `npm run bench`'s deep struct rows.
 */
export async function structStream(lib: Lib, runtime: Runtime, o: StructStream): Promise<{ rate: number; backend: string }> {
  const Msg = lib.struct({ seq: lib.u32, pad: lib.u32, value: lib.f64 })
  const batch = Array.from({ length: o.batch }, (_, k) => ({ seq: k, pad: 0, value: k }))
  const kernel = await runtime.launch({ handler: 'echo', input: Msg, output: Msg, capacity: o.capacity })
  const started = performance.now()
  const sender = (async () => {
    for (let sent = 0; sent < o.count; sent += o.batch) await kernel.sendBatch(sent + o.batch <= o.count ? batch : batch.slice(0, o.count - sent))
  })()
  for (let got = 0; got < o.count; ) {
    for (const r of await kernel.receiveBatch(o.receiveMax, { timeoutMs: 10_000 })) {
      if (r.seq !== got % o.batch) throw new Error(`struct stream: reply ${got} has seq ${r.seq}, expected ${got % o.batch}: out of order`)
      got++
    }
  }
  await sender
  const rate = o.count / ((performance.now() - started) / 1000)
  await kernel.terminate()
  return { rate, backend: kernel.backend }
}

async function main(): Promise<void> {
  const dir = process.argv[2]
  const lib = (dir === undefined ? await import('../index') : await import(resolve(dir, 'index.js'))) as Lib
  const o: StructStream = { batch: env('B', 8192), receiveMax: env('R', 8192), capacity: env('CAP', 65_536), count: env('N', 2_048_000) }
  const passes = env('PASSES', 4)
  const runtime = await lib.Runtime.open()
  try {
    for (let pass = 0; pass < passes; pass++) {
      const { rate, backend } = await structStream(lib, runtime, o)
      if (pass > 0) console.log(`${backend}_struct_stream_B${o.batch}_R${o.receiveMax}_cap${o.capacity} ${(rate / 1e6).toFixed(3)} M_msg_per_s`)
    }
  } finally {
    await runtime.close()
  }
}

if (require.main === module) {
  main().catch((err) => {
    console.error(err)
    process.exitCode = 1
  })
}
