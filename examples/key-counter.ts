// A stateful kernel: per-key counters that live in the kernel across messages — device memory
// on the GPU (atomics, since messages run in parallel), the worker's state on the cpu backend.
// Each request adds to a key and answers with the key's new total; keys out of range reject.
//   npm run example -- examples/key-counter
import { Runtime, struct, u32, type HandlerContext, type Infer } from '../index'

const KEYS = 1024
const Add = struct({ key: u32, n: u32 }, { name: 'Add' })
const Total = struct({ key: u32, total: u32 }, { name: 'Total' })

const CUDA = `
__device__ unsigned int kc_totals[${KEYS}];
__device__ uint32_t key_counter(const rb_input& in, rb_output& out, rb_context& ctx) {
  if (in.key >= ${KEYS}) { ctx.detail = in.key; return 404; }
  out.key = in.key;
  out.total = atomicAdd(&kc_totals[in.key], in.n) + in.n;
  return 0;
}`

const cpu = (m: Infer<typeof Add>, ctx: HandlerContext): Infer<typeof Total> => {
  if (m.key >= 1024) return ctx.fail(404, m.key)
  const totals = (ctx.state.totals ??= new Map<number, number>()) as Map<number, number>
  const total = (totals.get(m.key) ?? 0) + m.n
  totals.set(m.key, total)
  return { key: m.key, total }
}

async function main() {
  const runtime = await Runtime.open()
  const kernel = await runtime.launch({ input: Add, output: Total, source: CUDA, entry: 'key_counter', cpu, capacity: 4096 })
  console.log(`backend: ${kernel.backend}`)
  const expected = new Map<number, number>()
  const adds = Array.from({ length: 50_000 }, (_, i) => ({ key: (i * 7919) % KEYS, n: 1 + (i % 7) }))
  for (const a of adds) expected.set(a.key, (expected.get(a.key) ?? 0) + a.n)
  const replies = await Promise.all(adds.map((a) => kernel.request(a)))
  const highest = new Map<number, number>()
  for (const r of replies) highest.set(r.key, Math.max(highest.get(r.key) ?? 0, r.total))
  let wrong = 0
  for (const [key, total] of expected) if (highest.get(key) !== total) wrong++
  console.log(`${adds.length} increments over ${expected.size} keys; keys with a wrong final total: ${wrong}`)
  try {
    await kernel.request({ key: KEYS + 5, n: 1 })
    wrong++
  } catch (e) {
    console.log(`out-of-range key rejected: ${(e as Error).message}`)
  }
  await kernel.terminate()
  await runtime.close()
  if (wrong > 0) process.exitCode = 1
}

main().catch((err) => {
  console.error(err)
  process.exitCode = 1
})
