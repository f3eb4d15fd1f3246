// A request/response service: small vector math on the GPU (a CUDA handler) or, without one,
// on the cpu backend (the same handler in JavaScript, in a worker thread). 20 000 requests in
// flight at once, each answer checked against plain JavaScript.
//   npm run example -- examples/vector-rpc
import { Runtime, array, f32, struct, u32, type HandlerContext, type Infer } from '../index'

const Op = { dot: 0, cross: 1, add: 2 } as const
const Request = struct({ op: u32, a: array(f32, 3), b: array(f32, 3) }, { name: 'VecRequest' })
const Reply = struct({ value: f32, v: array(f32, 3) }, { name: 'VecReply' })

const CUDA = `
__device__ uint32_t vec_rpc(const rb_input& in, rb_output& out, rb_context& ctx) {
  const float* a = in.a; const float* b = in.b;
  switch (in.op) {
    case 0: out.value = fmaf(a[2], b[2], fmaf(a[1], b[1], a[0] * b[0])); return 0;
    case 1: out.v[0] = a[1] * b[2] - a[2] * b[1]; out.v[1] = a[2] * b[0] - a[0] * b[2]; out.v[2] = a[0] * b[1] - a[1] * b[0]; return 0;
    case 2: for (int i = 0; i < 3; ++i) out.v[i] = a[i] + b[i]; return 0;
    default: ctx.detail = in.op; return 400;  // unknown op: this request rejects, the kernel goes on
  }
}`

// The same contract in JavaScript; self-contained (it is rebuilt in a worker thread).
const cpu = (m: Infer<typeof Request>, ctx: HandlerContext): Infer<typeof Reply> => {
  const [a, b] = [m.a, m.b]
  const f = Math.fround
  if (m.op === 0) return { value: f(f(f(a[0]! * b[0]!) + f(a[1]! * b[1]!)) + f(a[2]! * b[2]!)), v: [0, 0, 0] }
  if (m.op === 1) return { value: 0, v: [f(a[1]! * b[2]! - a[2]! * b[1]!), f(a[2]! * b[0]! - a[0]! * b[2]!), f(a[0]! * b[1]! - a[1]! * b[0]!)] }
  if (m.op === 2) return { value: 0, v: [f(a[0]! + b[0]!), f(a[1]! + b[1]!), f(a[2]! + b[2]!)] }
  return ctx.fail(400, m.op) // unknown op, as the CUDA handler's error return
}

function expected(m: Infer<typeof Request>): { value: number; v: number[] } {
  const [a, b] = [m.a, m.b]
  if (m.op === 0) return { value: a[0]! * b[0]! + a[1]! * b[1]! + a[2]! * b[2]!, v: [0, 0, 0] }
  if (m.op === 1) return { value: 0, v: [a[1]! * b[2]! - a[2]! * b[1]!, a[2]! * b[0]! - a[0]! * b[2]!, a[0]! * b[1]! - a[1]! * b[0]!] }
  return { value: 0, v: [a[0]! + b[0]!, a[1]! + b[1]!, a[2]! + b[2]!] }
}

const close = (x: number, y: number) => Math.abs(x - y) <= 1e-4 * Math.max(1, Math.abs(y))

async function main() {
  const runtime = await Runtime.open()
  const kernel = await runtime.launch({ input: Request, output: Reply, source: CUDA, entry: 'vec_rpc', cpu, capacity: 4096 })
  console.log(`backend: ${kernel.backend} (${kernel.backendReason})`)
  const rnd = (i: number) => Math.fround(Math.sin(i) * 10)
  const requests = Array.from({ length: 20_000 }, (_, i) => ({ op: i % 3, a: [rnd(i), rnd(i + 1), rnd(i + 2)], b: [rnd(2 * i), rnd(3 * i), rnd(5 * i)] }))
  const started = performance.now()
  const replies = await Promise.all(requests.map((r) => kernel.request(r)))
  const ms = performance.now() - started
  let wrong = 0
  replies.forEach((r, i) => {
    const e = expected(requests[i]!)
    if (!close(r.value, e.value) || !r.v.every((x, k) => close(x, e.v[k]!))) wrong++
  })
  console.log(`${replies.length} requests in flight at once answered in ${ms.toFixed(1)} ms; wrong answers: ${wrong}`)
  try {
    await kernel.request({ op: 9, a: [0, 0, 0], b: [0, 0, 0] })
    wrong++
  } catch (e) {
    console.log(`unknown op rejected: ${(e as Error).message}`)
  }
  console.log(await kernel.terminate())
  await runtime.close()
  if (wrong > 0) process.exitCode = 1
}

main().catch((err) => {
  console.error(err)
  process.exitCode = 1
})
