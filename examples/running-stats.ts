// A streaming reducer: running statistics (count, mean, min, max) over streams of samples,
// kept by the kernel across messages — in device memory on the GPU, in the worker's state on
// the cpu backend. Samples stream in with sendBatch; each reply is the stream's count so far;
// a query message (op 1) returns the stream's statistics.
//   npm run example -- examples/running-stats
import { Runtime, f64, struct, u32, u64, type HandlerContext, type Infer } from '../index'

const STREAMS = 16
const Sample = struct({ op: u32, stream: u32, x: f64 }, { name: 'Sample' })
const Stats = struct({ stream: u32, count: u64, mean: f64, min: f64, max: f64 }, { name: 'Stats' })

const CUDA = `
#define STREAMS ${STREAMS}
__device__ unsigned long long rs_count[STREAMS];
__device__ double rs_sum[STREAMS];
__device__ unsigned long long rs_min[STREAMS];  // IEEE bits of the min, order-mapped
__device__ unsigned long long rs_max[STREAMS];

// Doubles as unsigned integers in the same order, so atomicMin/atomicMax work on them.
__device__ unsigned long long rs_key(double x) {
  unsigned long long b = __double_as_longlong(x);
  return (b >> 63) ? ~b : (b | 0x8000000000000000ull);
}
__device__ double rs_value(unsigned long long k) {
  return __longlong_as_double((k >> 63) ? (k & 0x7fffffffffffffffull) : ~k);
}

__device__ uint32_t running_stats(const rb_input& in, rb_output& out, rb_context& ctx) {
  if (in.stream >= STREAMS) { ctx.detail = in.stream; return 404; }
  const uint32_t s = in.stream;
  out.stream = s;
  if (in.op == 0) {
    atomicAdd(&rs_sum[s], in.x);
    atomicMax(&rs_min[s], ~rs_key(in.x));  // the min's key, inverted: max of ~key = min of key, and 0 means "none"
    atomicMax(&rs_max[s], rs_key(in.x));
    out.count = atomicAdd(&rs_count[s], 1ull) + 1;
    return 0;
  }
  const unsigned long long n = atomicAdd(&rs_count[s], 0ull);
  out.count = n;
  out.mean = n ? atomicAdd(&rs_sum[s], 0.0) / n : 0.0;
  out.min = n ? rs_value(~atomicAdd(&rs_min[s], 0ull)) : 0.0;
  out.max = n ? rs_value(atomicAdd(&rs_max[s], 0ull)) : 0.0;
  return 0;
}`

const cpu = (m: Infer<typeof Sample>, ctx: HandlerContext): Infer<typeof Stats> => {
  if (m.stream >= 16) return ctx.fail(404, m.stream)
  const all = (ctx.state.streams ??= {}) as Record<number, { n: number; sum: number; min: number; max: number }>
  const s = (all[m.stream] ??= { n: 0, sum: 0, min: Infinity, max: -Infinity })
  if (m.op === 0) {
    s.n++
    s.sum += m.x
    s.min = Math.min(s.min, m.x)
    s.max = Math.max(s.max, m.x)
    return { stream: m.stream, count: BigInt(s.n), mean: 0, min: 0, max: 0 }
  }
  return { stream: m.stream, count: BigInt(s.n), mean: s.n ? s.sum / s.n : 0, min: s.n ? s.min : 0, max: s.n ? s.max : 0 }
}

async function main() {
  const runtime = await Runtime.open()
  const kernel = await runtime.launch({ input: Sample, output: Stats, source: CUDA, entry: 'running_stats', cpu, capacity: 4096 })
  console.log(`backend: ${kernel.backend}`)
  const N = 200_000
  const samples = Array.from({ length: N }, (_, i) => ({ op: 0, stream: i % STREAMS, x: Math.sin(i * 0.37) * 100 + (i % STREAMS) }))
  const started = performance.now()
  const sending = kernel.sendBatch(samples)
  let got = 0
  while (got < N) got += (await kernel.receiveBatch(16_384)).length
  await sending
  const ms = performance.now() - started
  let wrong = 0
  for (let s = 0; s < STREAMS; s++) {
    const xs = samples.filter((m) => m.stream === s).map((m) => m.x)
    const r = await kernel.request({ op: 1, stream: s, x: 0 })
    const mean = xs.reduce((a, b) => a + b, 0) / xs.length
    const ok = r.count === BigInt(xs.length) && Math.abs(r.mean - mean) < 1e-9 * Math.max(1, Math.abs(mean)) && r.min === Math.min(...xs) && r.max === Math.max(...xs)
    if (!ok) wrong++
    if (s < 3) console.log(`stream ${s}: count ${r.count} mean ${r.mean.toFixed(6)} min ${r.min.toFixed(6)} max ${r.max.toFixed(6)}`)
  }
  console.log(`${N} samples reduced in ${ms.toFixed(1)} ms (${((N / ms) * 1000).toFixed(0)} samples/s); streams with wrong statistics: ${wrong}`)
  await kernel.terminate()
  await runtime.close()
  if (wrong > 0) process.exitCode = 1
}

main().catch((err) => {
  console.error(err)
  process.exitCode = 1
})
