/**
 * `ringbridge bench`: the echo kernel on this host's backend — `await request()` round trip
 * (p50/p99) and zero-copy streaming of 48-byte payloads in 64-byte slots through chunks
 * (`reserve`/`commit`, `receiveChunk`/`release`) at several batch sizes (the most messages one
 * commit carries), every payload written and every reply checked. Prints `name value unit`
 * lines (or one JSON object with `--json`); `--svg` writes a report made with Vega-Lite.
 * @internal
 * @module
 */
import { writeFileSync } from 'node:fs'
import { performance } from 'node:perf_hooks'
import { setImmediate as yieldToLoop } from 'node:timers/promises'
import { Runtime, bytes, type RingKernel } from '../../index'

type Backend = 'auto' | 'cuda' | 'cpu'

/** One `name value unit` figure. */
export interface Figure {
  name: string
  value: number
  unit: string
}

/** The `--json` object. */
export interface BenchReport {
  backend: string
  backendReason: string
  transport: string
  quick: boolean
  request: { iterations: number; p50Us: number; p99Us: number; meanUs: number; minUs: number; maxUs: number }
  stream: { batch: number; messages: number; seconds: number; msgPerSec: number }[]
  figures: Figure[]
  svg: string | null
}

const PAYLOAD = 48
const SLOT = 64

/** A progress bar on a terminal's stderr; nothing otherwise. */
interface Progress {
  start(phase: string, total: number): void
  update(done: number): void
  stop(): void
}

function progress(enabled: boolean): Progress {
  if (!enabled) return { start() {}, update() {}, stop() {} }
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const cliProgress = require('cli-progress') as {
    SingleBar: new (options: object, preset: object) => { start(total: number, value: number, payload: object): void; update(value: number): void; stop(): void }
    Presets: { shades_classic: object }
  }
  const bar = new cliProgress.SingleBar(
    { format: '{phase} [{bar}] {percentage}% | {value}/{total}', stream: process.stderr, hideCursor: true, clearOnComplete: true, etaBuffer: 50 },
    cliProgress.Presets.shades_classic,
  )
  let running = false
  return {
    start(phase, total) {
      if (running) bar.stop()
      bar.start(total, 0, { phase: phase.padEnd(22) })
      running = true
    },
    update(done) {
      bar.update(done)
    },
    stop() {
      if (running) bar.stop()
      running = false
    },
  }
}

function pct(sorted: Float64Array, q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!
}

const round = (x: number, digits = 3) => Math.round(x * 10 ** digits) / 10 ** digits

/** Runs the bench; prints; resolves with the exit code. */
export async function bench(options: { backend: Backend; json: boolean; quick: boolean; svg?: string }): Promise<number> {
  // Checked before the run: a missing plotting package should not cost a whole bench.
  const plotting = options.svg === undefined ? undefined : await loadPlotting()
  if (typeof plotting === 'string') {
    console.error(`ringbridge: ${plotting}`)
    return 1
  }
  const bar = progress(process.stderr.isTTY === true)
  const { report, latencies } = await run(options, bar)
  bar.stop()
  if (options.svg !== undefined) {
    writeFileSync(options.svg, await svgReport(report, latencies, plotting))
    report.svg = options.svg
  }
  if (options.json) console.log(JSON.stringify(report, null, 2))
  else {
    console.log(`# ${report.backend}: ${report.backendReason}; transport ${report.transport}`)
    for (const f of report.figures) console.log(`${f.name} ${f.value.toFixed(3)} ${f.unit}`)
    if (report.svg) console.log(`# SVG report: ${report.svg}`)
  }
  return 0
}

async function run(options: { backend: Backend; quick: boolean }, bar: Progress): Promise<{ report: BenchReport; latencies: Float64Array }> {
  const iterations = options.quick ? 2000 : 20_000
  const warmup = options.quick ? 200 : 1000
  const perBatch = options.quick ? 100_000 : 2_000_000
  const batches = options.quick ? [1, 16, 256, 4096] : [1, 4, 16, 64, 256, 1024, 4096]
  const rt = await Runtime.open({ backend: options.backend })
  try {
    // Round trip: one 48-byte request at a time on a small ring.
    const k = await rt.launch({ handler: 'echo', input: bytes(PAYLOAD), output: bytes(PAYLOAD), capacity: 64, slotSize: SLOT })
    const transport = k.transport
    const msg = new Uint8Array(PAYLOAD).fill(7)
    const us = new Float64Array(iterations)
    bar.start('request round trip', warmup + iterations)
    for (let i = -warmup; i < iterations; i++) {
      msg[0] = i & 0xff
      const t = performance.now()
      const r = await k.request(msg, { timeoutMs: 10_000 })
      const dt = (performance.now() - t) * 1000
      if (r.length !== PAYLOAD || r[0] !== (i & 0xff) || r[PAYLOAD - 1] !== 7) throw new Error(`request ${i}: wrong reply`)
      if (i >= 0) us[i] = dt
      if ((i & 255) === 0) bar.update(i + warmup)
    }
    bar.update(warmup + iterations)
    await k.terminate()
    const sorted = us.slice().sort()
    const request = {
      iterations,
      p50Us: round(pct(sorted, 0.5)),
      p99Us: round(pct(sorted, 0.99)),
      meanUs: round(us.reduce((a, b) => a + b, 0) / iterations),
      minUs: round(sorted[0]!),
      maxUs: round(sorted[sorted.length - 1]!),
    }

    // Streaming by chunks, at each batch size.
    const stream: BenchReport['stream'] = []
    for (const batch of batches) {
      const messages = batch === 1 ? perBatch / 10 : perBatch
      const s = await rt.launch({ handler: 'echo', input: bytes(PAYLOAD), output: bytes(PAYLOAD), capacity: 8192, slotSize: SLOT })
      bar.start(`stream, batch ${batch}`, messages)
      const seconds = await streamChunks(s, messages, batch, (n) => bar.update(n))
      await s.terminate()
      stream.push({ batch, messages, seconds: round(seconds, 6), msgPerSec: Math.round(messages / seconds) })
    }
    bar.stop()
    const b = rt.backend
    const figures: Figure[] = [
      { name: `${b}_request_p50`, value: request.p50Us, unit: 'us' },
      { name: `${b}_request_p99`, value: request.p99Us, unit: 'us' },
      ...stream.map((x) => ({ name: `${b}_stream_chunk64_batch${x.batch}`, value: round(x.msgPerSec / 1e6), unit: 'M_msg_per_s' })),
    ]
    return { report: { backend: b, backendReason: rt.backendReason, transport, quick: options.quick, request, stream, figures, svg: null }, latencies: us }
  } finally {
    await rt.close()
  }
}

/**
 * Streams `total` messages through chunks of at most `batch` slots and returns the seconds it
 * took: each payload's first word is its sequence number and its second a pattern of it; every
 * reply is checked (length, sequence, pattern), in order.
 */
export async function streamChunks(k: RingKernel<Uint8Array, Uint8Array>, total: number, batch: number, onProgress: (done: number) => void): Promise<number> {
  const slotOf = (c: { first: Uint8Array; second: Uint8Array; firstCount: number; slotSize: number; payloadOffset: number }, i: number) =>
    (i < c.firstCount ? c.first.byteOffset + i * c.slotSize : c.second.byteOffset + (i - c.firstCount) * c.slotSize) + c.payloadOffset
  const pattern = (seq: number) => Math.imul(seq ^ 0x5bd1e995, 0x27d4eb2d) >>> 0
  let sent = 0
  let got = 0
  let rounds = 0
  const start = performance.now()
  let last = start
  while (got < total) {
    if (sent < total) {
      const c = k.reserve(Math.min(batch, total - sent))
      if (c.count > 0) {
        const view = new DataView(c.first.buffer)
        for (let i = 0; i < c.count; i++) {
          const at = slotOf(c, i)
          view.setUint32(at, sent + i, true)
          view.setUint32(at + 4, pattern(sent + i), true)
        }
        sent += c.commit(c.count, { size: PAYLOAD })
      }
    }
    let r = k.receiveChunk(k.capacity)
    // Nothing ready and nothing more to send now (the ring is full or all sent): wait.
    if (r.count === 0 && (sent === total || sent - got >= k.capacity)) r = await k.nextChunk(k.capacity, { timeoutMs: 30_000 })
    const n = r.count
    if (n > 0) {
      const rv = new DataView(r.first.buffer)
      for (let i = 0; i < n; i++) {
        const at = slotOf(r, i)
        const seq = got + i
        if (r.lengthAt(i) !== PAYLOAD || rv.getUint32(at, true) !== seq || rv.getUint32(at + 4, true) !== pattern(seq)) {
          throw new Error(`stream (batch ${batch}): reply ${seq} is wrong (length ${r.lengthAt(i)}${r.isErrorAt(i) ? `, ${r.errorAt(i)?.message}` : ''})`)
        }
      }
      r.release()
      got += n
    }
    const now = performance.now()
    if (n > 0) last = now
    else if (now - last > 30_000) throw new Error(`stream (batch ${batch}): stalled at ${got} of ${total}`)
    // Let timers (the progress bar) run now and then; cheap next to the work of a round.
    if ((++rounds & 1023) === 0) {
      onProgress(got)
      await yieldToLoop()
    }
  }
  onProgress(got)
  return (performance.now() - start) / 1000
}

/** The plotting libraries the SVG report is drawn with. */
export interface Plotting {
  vega: any
  vl: any
}

/**
 * Loads Vega and Vega-Lite, or says why not. They are optional peer dependencies (about 12 MB
 * that only `--svg` uses), so a project that depends on ringbridge does not install them.
 */
export async function loadPlotting(): Promise<Plotting | string> {
  // Both packages are ES modules; this file compiles to CommonJS, whose import() would become
  // require(). A real dynamic import keeps them loadable on every Node.js >= 20.
  const load = new Function('s', 'return import(s)') as (s: string) => Promise<any>
  const missing: string[] = []
  const loaded: Record<string, any> = {}
  for (const name of ['vega', 'vega-lite']) {
    try {
      loaded[name] = await load(name)
    } catch (e) {
      const code = (e as { code?: string }).code
      if (code !== 'ERR_MODULE_NOT_FOUND' && code !== 'MODULE_NOT_FOUND') throw e
      missing.push(name)
    }
  }
  if (missing.length > 0) {
    return `--svg needs ${missing.join(' and ')}, optional peer dependencies of ringbridge that are not installed here: run 'npm install --save-dev vega vega-lite' in your project, or leave out --svg`
  }
  return { vega: loaded.vega, vl: loaded['vega-lite'] }
}

/**
 * The SVG report: a latency histogram of the round trips (up to p99.9, so one outlier does not
 * flatten it) above throughput against batch size, drawn by Vega-Lite/Vega in Node (no browser,
 * no canvas).
 */
export async function svgReport(report: BenchReport, latencies: Float64Array, plotting?: Plotting): Promise<string> {
  const loaded = plotting ?? (await loadPlotting())
  if (typeof loaded === 'string') throw new Error(loaded)
  const { vega, vl } = loaded
  const sorted = latencies.slice().sort()
  const cap = pct(sorted, 0.999)
  const values = Array.from(sorted.filter((x) => x <= cap), (us) => ({ us }))
  const title = `ringbridge bench: ${report.backend} backend (${report.transport})`
  const spec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: title, subtitle: report.backendReason.slice(0, 120) },
    config: { font: 'sans-serif' },
    vconcat: [
      {
        title: `Request round trip (${report.request.iterations} requests, p50 ${report.request.p50Us} us, p99 ${report.request.p99Us} us; up to p99.9)`,
        width: 560,
        height: 220,
        data: { values },
        mark: { type: 'bar', tooltip: true },
        encoding: {
          x: { field: 'us', type: 'quantitative', bin: { maxbins: 60 }, title: 'round trip (us)' },
          y: { aggregate: 'count', type: 'quantitative', title: 'requests' },
        },
      },
      {
        title: 'Streaming throughput against batch size (chunks, 48-byte payloads in 64-byte slots)',
        width: 560,
        height: 220,
        data: { values: report.stream.map((s) => ({ batch: s.batch, mps: s.msgPerSec / 1e6 })) },
        mark: { type: 'line', point: true, tooltip: true },
        encoding: {
          x: { field: 'batch', type: 'quantitative', scale: { type: 'log', base: 2 }, axis: { values: report.stream.map((s) => s.batch) }, title: 'messages per commit (batch)' },
          y: { field: 'mps', type: 'quantitative', title: 'M messages / s' },
        },
      },
    ],
  }
  const view = new vega.View(vega.parse(vl.compile(spec).spec), { renderer: 'none' })
  try {
    return (await view.toSVG()) as string
  } finally {
    view.finalize()
  }
}
