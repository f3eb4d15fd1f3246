// User ring kernels on the GPU (runs with RINGBRIDGE_GPU=1 in the GPU suite; listed as skipped
// elsewhere, never passed): every field kind through a CUDA handler bit for bit, per-message
// errors, state kept in device memory across messages, compile errors at launch.
import { join } from 'node:path'
import { Worker } from 'node:worker_threads'

import test from 'ava'

import { Runtime, array, bool, f32, f64, i16, i32, i64, i8, struct, u16, u32, u64, u8 } from '../index'
import { codeOf, within } from './helpers'

const GPU = process.env.RINGBRIDGE_GPU === '1'
const gpuTest = GPU ? test.serial : (title: string, _fn: unknown) => test.skip(`${title} — skipped: no CUDA device (set RINGBRIDGE_GPU=1 on a GPU host)`, () => undefined)
const TRANSPORTS = ['hybrid', 'mapped', 'dma', 'managed'] as const

const Inner = struct({ a: u8, b: f64 }, { name: 'Inner' })
const Every = struct({
  u8, u16, u32, u64, i8, i16, i32, i64, f32, f64,
  flag: bool,
  arr: array(i16, 3),
  m: array(array(f32, 2), 2),
  inner: Inner,
  inners: array(Inner, 2),
})

// Member by member, so a field the GPU reads at another offset than the encoder wrote shows.
const MIRROR = `
__device__ uint32_t mirror(const rb_input& in, rb_output& out, rb_context& ctx) {
  out.u8 = in.u8; out.u16 = in.u16; out.u32 = in.u32; out.u64 = in.u64;
  out.i8 = in.i8; out.i16 = in.i16; out.i32 = in.i32; out.i64 = in.i64;
  out.f32 = in.f32; out.f64 = in.f64; out.flag = in.flag;
  for (int i = 0; i < 3; ++i) out.arr[i] = in.arr[i];
  for (int i = 0; i < 2; ++i) for (int j = 0; j < 2; ++j) out.m[i][j] = in.m[i][j];
  out.inner.a = in.inner.a; out.inner.b = in.inner.b;
  for (int i = 0; i < 2; ++i) { out.inners[i].a = in.inners[i].a; out.inners[i].b = in.inners[i].b; }
  if (in.u8 == 7 && in.flag) { ctx.detail = in.u32; return 300; }
  return 0;
}`

const f32bits = (bits: number) => new Float32Array(new Uint32Array([bits]).buffer)[0]!
const cases = [
  { u8: 255, u16: 65535, u32: 0xffffffff, u64: 0xffffffffffffffffn, i8: -128, i16: -32768, i32: -0x80000000, i64: -(1n << 63n), f32: -0, f64: -0, flag: true, arr: [-32768, 0, 32767], m: [[Infinity, -Infinity], [1.401298464324817e-45, 3.4028234663852886e38]], inner: { a: 1, b: 5e-324 }, inners: [{ a: 0, b: Number.MAX_VALUE }, { a: 255, b: -Number.MIN_VALUE }] },
  { u8: 0, u16: 0, u32: 0, u64: 0n, i8: 127, i16: 32767, i32: 0x7fffffff, i64: (1n << 63n) - 1n, f32: NaN, f64: NaN, flag: false, arr: [1, -1, 2], m: [[Math.fround(0.1), -0.5], [f32bits(0x00800000), -0]], inner: { a: 128, b: -1e308 }, inners: [{ a: 3, b: NaN }, { a: 4, b: Infinity }] },
]

async function open(): Promise<Runtime> {
  const rt = await Runtime.open({ backend: 'cuda' })
  if (rt.backend !== 'cuda') throw new Error(`expected cuda, got ${rt.backend}: ${rt.backendReason}`)
  return rt
}

for (const transport of TRANSPORTS) {
  gpuTest(`${transport}: every field kind goes through a CUDA handler and back bit for bit; a handler error rejects its request`, async (t) => {
    const rt = await open()
    t.teardown(() => within(rt.close(), 30_000, 'close'))
    const k = await rt.launch({ input: Every, output: Every, source: MIRROR, entry: 'mirror', transport })
    for (const c of cases) {
      const r = await within(k.request(c, { timeoutMs: 20_000 }), 25_000, 'mirror reply')
      for (const [name, v] of Object.entries(c)) {
        if (typeof v === 'number') t.true(Object.is((r as Record<string, unknown>)[name], v), `${name}: sent ${v}, got ${String((r as Record<string, unknown>)[name])}`)
        else t.deepEqual((r as Record<string, unknown>)[name], v, name)
      }
    }
    // Raw bytes, NaN payloads included: the JS number path canonicalises NaNs, this does not.
    const raw = new Uint8Array(Every.size)
    const dv = new DataView(raw.buffer)
    for (let i = 0; i < raw.length; i++) raw[i] = (i * 37 + 11) & 0xff
    for (const f of Every.layout) if (f.name === 'flag') raw[f.offset] = 1
    raw[Every.layout.find((f) => f.name === 'u8')!.offset] = 9
    dv.setUint32(Every.layout.find((f) => f.name === 'f32')!.offset, 0x7fa00001, true)
    dv.setBigUint64(Every.layout.find((f) => f.name === 'f64')!.offset, 0x7ff4000000000123n, true)
    // Padding goes out as zeros (the kernel zeroes its reply), so compare fields only.
    const inner = Every.layout.find((f) => f.name === 'inner')!
    raw.fill(0, inner.offset + 1, inner.offset + 8)
    const innersAt = Every.layout.find((f) => f.name === 'inners')!.offset
    raw.fill(0, innersAt + 1, innersAt + 8)
    raw.fill(0, innersAt + 17, innersAt + 24)
    const pads: [number, number][] = []
    let at = 0
    for (const f of Every.layout) {
      if (f.offset > at) pads.push([at, f.offset])
      at = f.offset + f.size
    }
    for (const [a, b] of pads) raw.fill(0, a, b)
    t.is(k.trySendPacked(raw, Every.size, 1), 1)
    const back = new Uint8Array(Every.size)
    const deadline = Date.now() + 20_000
    while (k.tryReceivePacked(back, Every.size) === 0) {
      if (Date.now() > deadline) t.fail('no raw reply')
      await new Promise((r) => setImmediate(r))
    }
    t.deepEqual([...back], [...raw], 'bit for bit, NaN payloads included')
    await k.terminate()

    const k2 = await rt.launch({ input: Every, output: Every, source: MIRROR, entry: 'mirror', transport })
    const bad = { ...cases[0]!, u8: 7, flag: true, u32: 4242 }
    const err = await t.throwsAsync(within(k2.request(bad, { timeoutMs: 20_000 }), 25_000, 'error reply'))
    t.is(codeOf(err), 'ERR_RINGBRIDGE_KERNEL_ERROR')
    t.like((err as { details?: object }).details, { kernelCode: 300, detail: 4242 })
    t.deepEqual(await k2.request(cases[1]!), await k2.request(cases[1]!), 'the kernel goes on after an error')
  })
}

const Add = struct({ key: u32, n: u32 })
const Total = struct({ key: u32, total: u32 })
const COUNTER = `
// Per-key state in device memory, kept across messages for the kernel's life.
__device__ unsigned int rb_counts[256];
__device__ uint32_t count(const rb_input& in, rb_output& out, rb_context& ctx) {
  if (in.key >= 256) { ctx.detail = in.key; return 404; }
  out.key = in.key;
  out.total = atomicAdd(&rb_counts[in.key], in.n) + in.n;
  return 0;
}`

gpuTest('a stateful CUDA handler keeps per-key state in device memory across many messages', async (t) => {
  const rt = await open()
  t.teardown(() => within(rt.close(), 30_000, 'close'))
  const k = await rt.launch({ input: Add, output: Total, source: COUNTER, entry: 'count', transport: 'dma', capacity: 4096 })
  const N = Math.min(100_000, Number(process.env.RINGBRIDGE_GPU_MESSAGES ?? 100_000))
  const expected = new Array(256).fill(0)
  const msgs = Array.from({ length: N }, (_, i) => ({ key: (i * 7919) % 256, n: (i % 5) + 1 }))
  for (const m of msgs) expected[m.key] += m.n
  const sender = k.sendBatch(msgs)
  const finals = new Array(256).fill(0)
  let got = 0
  while (got < N) {
    for (const r of await k.receiveBatch(8192, { timeoutMs: 30_000 })) {
      finals[r.key] = Math.max(finals[r.key], r.total)
      got++
    }
  }
  await sender
  t.deepEqual(finals, expected)
  const e = await t.throwsAsync(k.request({ key: 999, n: 1 }))
  t.like((e as { details?: object }).details, { kernelCode: 404, detail: 999 })
})

gpuTest('a CUDA handler that does not compile fails its launch with the NVRTC log, lines as in the source', async (t) => {
  const rt = await open()
  t.teardown(() => within(rt.close(), 30_000, 'close'))
  const source = `__device__ uint32_t f(const rb_input& in, rb_output& out, rb_context&) {\n  out.total = in.missing;\n  return 0;\n}`
  const err = await t.throwsAsync(rt.launch({ input: Add, output: Total, source, entry: 'f' }))
  t.is(codeOf(err), 'ERR_RINGBRIDGE_COMPILE')
  t.regex((err as Error).message, /handler\.cu\(2\): error: class "Add"|handler\.cu\(2\): error/)
  t.regex((err as Error).message, /missing/)
})

gpuTest('4 worker threads share one GPU kernel\'s input ring (producers: shared): none lost, duplicated or reordered', async (t) => {
  const rt = await open()
  t.teardown(() => within(rt.close(), 30_000, 'close'))
  const Tagged = struct({ producer: u32, seq: u32 })
  const k = await rt.launch({ handler: 'echo', input: Tagged, output: Tagged, capacity: 4096, producers: 'shared', transport: 'dma' })
  t.is(k.isolation, 'thread')
  const P = 4
  const N = Math.min(1_000_000, Number(process.env.RINGBRIDGE_GPU_MESSAGES ?? 1_000_000))
  const senders = Array.from({ length: P }, (_, i) => {
    const handle = k.producer()
    const w = new Worker(join(__dirname, 'producer-worker.js'), { workerData: { handle, producer: i, count: N, batch: 512 }, transferList: [handle.wake] })
    return new Promise<number>((resolve, reject) => {
      w.once('message', (m: { sent?: number; error?: string }) => (m.error ? reject(new Error(m.error)) : resolve(m.sent!)))
      w.once('error', reject)
    })
  })
  const next = new Array<number>(P).fill(0)
  let got = 0
  let bad = ''
  while (got < P * N) {
    for (const r of await within(k.receiveBatch(16_384), 30_000, `replies after ${got}`)) {
      if (r.producer >= P || r.seq !== next[r.producer]) bad ||= `reply ${got}: producer ${r.producer} seq ${r.seq}`
      else next[r.producer]!++
      got++
    }
  }
  t.is(bad, '')
  t.deepEqual(await Promise.all(senders), new Array(P).fill(N))
  t.deepEqual((await k.terminate()).undelivered, [])
})

gpuTest('a CUDA handler answers a message zero, one or several times (maxReplies)', async (t) => {
  const rt = await open()
  t.teardown(() => within(rt.close(), 30_000, 'close'))
  const In = struct({ n: u32 })
  const Out = struct({ i: u32, n: u32 })
  const source = `__device__ uint32_t fan(const rb_input& in, rb_replies& out, rb_context&) {
  for (uint32_t i = 0; i < in.n; ++i) { rb_output r; r.i = i; r.n = in.n; if (!out.push(r)) break; }
  return 0;
}`
  for (const transport of TRANSPORTS) {
    const k = await rt.launch({ input: In, output: Out, source, entry: 'fan', maxReplies: 4, transport, capacity: 1024 })
    t.is((await k.request({ n: 3 })).i, 0, 'request() takes the first reply')
    t.deepEqual([(await k.receive()).i, (await k.receive()).i], [1, 2], 'the others go to receive()')
    const none = await t.throwsAsync(k.request({ n: 0 }, { timeoutMs: 200 }))
    t.is(codeOf(none), 'ERR_RINGBRIDGE_TIMEOUT', 'zero replies: nothing comes')
    // Streamed: message k asks for k % 5 replies, 4 at most.
    const N = 20_000
    const want = (k: number) => Math.min(k % 5, 4)
    const total = Array.from({ length: N }, (_, i) => want(i)).reduce((a, b) => a + b, 0)
    const sending = k.sendBatch(Array.from({ length: N }, (_, i) => ({ n: i % 5 })))
    const got: { i: number; n: number }[] = []
    while (got.length < total) got.push(...(await within(k.receiveBatch(8192), 20_000, `${transport}: replies after ${got.length}`)))
    await sending
    let at = 0
    let bad = ''
    for (let m = 0; m < N && !bad; m++) {
      for (let i = 0; i < want(m); i++, at++) if (got[at]!.i !== i || got[at]!.n !== m % 5) bad = `message ${m} reply ${i}: ${JSON.stringify(got[at])}`
    }
    t.is(bad, '', transport)
    t.is(got.length, total)
    await k.terminate()
  }
})
