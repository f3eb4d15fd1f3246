// request(): correlation of replies to requests, mixed with plain sends; the saxpy handler's
// arithmetic; kernel error frames; timeouts and late replies.
import assert from 'node:assert/strict'

import test, { type ExecutionContext } from 'ava'
import fc from 'fast-check'

import { Runtime, array, bytes, f32, struct, u32, type LaunchOptions, type RingKernel } from '../index'
import { codeOf, sleep, until, within, launchOn as launch } from './helpers'

const detailsOf = (e: unknown) => (e as { details?: Record<string, unknown> } | undefined)?.details

// ---- correlation ----------------------------------------------------------------------------

type Op = { kind: 'send' } | { kind: 'request' } | { kind: 'tick' }

test('random interleavings of send() and request(): each request gets its own reply, sends arrive in order', async (t) => {
  const rt = await Runtime.open({ backend: 'cpu' })
  t.teardown(() => within(rt.close(), 15_000, 'runtime close'))
  const opArb: fc.Arbitrary<Op> = fc.oneof(
    { weight: 5, arbitrary: fc.constant({ kind: 'send' as const }) },
    { weight: 5, arbitrary: fc.constant({ kind: 'request' as const }) },
    { weight: 1, arbitrary: fc.constant({ kind: 'tick' as const }) },
  )
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom(1, 2, 4, 16, 1024),
      fc.integer({ min: 1, max: 64 }),
      fc.array(opArb, { minLength: 1, maxLength: 400 }),
      async (capacity, queue, ops) => {
        const k = await rt.launch({ handler: 'echo', input: u32, output: u32, capacity, sendQueue: { capacity: queue, policy: 'block' } })
        try {
          const sent: number[] = []
          const requests: { value: number; reply: Promise<number> }[] = []
          const sends: Promise<unknown>[] = []
          for (const [i, op] of ops.entries()) {
            if (op.kind === 'send') {
              sent.push(i)
              sends.push(k.send(i))
            } else if (op.kind === 'request') {
              requests.push({ value: i, reply: k.request(i, { timeoutMs: 10_000 }) })
            } else {
              await sleep(0)
            }
          }
          for (const r of requests) assert.equal(await within(r.reply, 11_000, `request ${r.value}`), r.value, `request ${r.value}`)
          await within(Promise.all(sends), 5000, 'sends resolve')
          const got: number[] = []
          while (got.length < sent.length) got.push(...(await within(k.receiveBatch(sent.length - got.length, { timeoutMs: 5000 }), 6000, `reply ${got.length}`)))
          assert.deepEqual(got, sent)
          assert.equal(k.stats().pendingRequests, 0)
          assert.equal(k.tryReceiveMany().length, 0, 'no extra reply')
          assert.equal(k.stats().replied, ops.length - ops.filter((o) => o.kind === 'tick').length)
        } finally {
          await within(k.terminate(), 10_000, 'terminate')
        }
      },
    ),
    { numRuns: 40 },
  )
  t.pass()
})

test('10 000 concurrent requests each resolve with their own reply', async (t) => {
  const Req = struct({ id: u32, check: u32 })
  const k = await launch(t, { handler: 'echo', input: Req, output: Req, capacity: 256, sendQueue: { capacity: 1024, policy: 'block' } })
  const n = 10_000
  const check = (id: number) => Math.imul(id + 1, 0x9e3779b1) >>> 0
  const replies = await within(Promise.all(Array.from({ length: n }, (_, id) => k.request({ id, check: check(id) }, { timeoutMs: 20_000 }))), 25_000, 'all requests')
  const wrong = replies.findIndex((r, id) => r.id !== id || r.check !== check(id))
  t.is(wrong, -1, `request ${wrong} got ${JSON.stringify(replies[wrong])}`)
  const s = k.stats()
  t.is(s.pendingRequests, 0)
  t.is(s.replied, n)
  t.is(s.depth.replyQueue, 0, 'no request reply leaked to receive()')
  t.is(s.lateReplies, 0)
})

test('requests and sends in flight together while the kernel is paused are answered after activate', async (t) => {
  const k = await launch(t, { handler: 'echo', input: u32, output: u32, capacity: 8 })
  await within(k.deactivate(), 5000, 'deactivate')
  const r1 = k.request(1, { timeoutMs: 10_000 })
  await within(k.send(2), 2000, 'k.send(2)')
  const r3 = k.request(3, { timeoutMs: 10_000 })
  await within(k.send(4), 2000, 'k.send(4)')
  t.is(k.stats().pendingRequests, 2)
  await within(k.activate(), 5000, 'activate')
  t.deepEqual(await within(Promise.all([r1, r3]), 5000, 'requests'), [1, 3])
  t.is(await within(k.receive({ timeoutMs: 5000 }), 6000, 'receive'), 2)
  t.is(await within(k.receive({ timeoutMs: 5000 }), 6000, 'receive'), 4)
})

// ---- saxpy ----------------------------------------------------------------------------------

const f32Bits = new Float32Array(1)
const u32Bits = new Uint32Array(f32Bits.buffer)

/** The f32 next to finite f32 `r`, towards +∞ (dir 1) or −∞ (dir −1). */
function nextF32(r: number, dir: 1 | -1): number {
  if (r === 0) return dir * 1.401298464324817e-45
  f32Bits[0] = r
  u32Bits[0]! += (r > 0) === (dir > 0) ? 1 : -1
  return f32Bits[0]!
}

/**
 * fmaf(a, x, y) correctly rounded, from f32 inputs: a·x is exact in f64 (24 + 24 bits), TwoSum
 * gives s + e === a·x + y exactly, and only a tie of s between two f32 values can be resolved
 * wrongly by rounding s alone (double rounding); e breaks that tie.
 */
function fmaf(a: number, x: number, y: number): number {
  const p = a * x
  const s = p + y
  const bb = s - p
  const e = p - (s - bb) + (y - bb)
  const r = Math.fround(s)
  if (e === 0 || r === s) return r
  const other = nextF32(r, s > r ? 1 : -1)
  if ((r + other) / 2 !== s) return r
  return e > 0 ? Math.max(r, other) : Math.min(r, other)
}

const sameBits = (a: number, b: number) => Object.is(a, b)

const N = 16
const SaxpyIn = struct({ a: f32, x: array(f32, N), y: array(f32, N) })
const SaxpyOut = array(f32, N)

test('saxpy message layout is a: f32, x: f32[n], y: f32[n]', (t) => {
  t.deepEqual(
    SaxpyIn.layout.map((f) => [f.name, f.offset, f.size]),
    [
      ['a', 0, 4],
      ['x', 4, 4 * N],
      ['y', 4 + 4 * N, 4 * N],
    ],
  )
  t.is(SaxpyIn.size, 4 + 8 * N)
})

test('the reference fmaf resolves double-rounding ties the way a fused multiply-add does', (t) => {
  const a = 1 + 2 ** -12
  // a·a = 1 + 2^-11 + 2^-24 is a tie between two f32 values; +2^-80 must round it up.
  t.is(fmaf(a, a, 2 ** -80), 1 + 2 ** -11 + 2 ** -23)
  t.not(Math.fround(a * a + 2 ** -80), 1 + 2 ** -11 + 2 ** -23, 'the naive formula rounds this case wrongly')
  // a·(1 + 3·2^-12) = 1 + 2^-10 + 3·2^-24 is a tie whose even neighbour is above; −2^-80 must round it down.
  const x = 1 + 3 * 2 ** -12
  t.is(fmaf(a, x, -(2 ** -80)), 1 + 2 ** -10 + 2 ** -23)
  t.not(Math.fround(a * x - 2 ** -80), 1 + 2 ** -10 + 2 ** -23)
  t.is(fmaf(2, 3, 0.5), 6.5)
  const tenth = Math.fround(0.1)
  t.is(fmaf(tenth, tenth, 0), Math.fround(tenth * tenth))
})

async function saxpy(k: RingKernel<{ a: number; x: number[]; y: number[] }, number[]>, a: number, x: number[], y: number[]) {
  return within(k.request({ a, x, y }, { timeoutMs: 5000 }), 6000, `saxpy a=${a}`)
}

test('saxpy via request: exact integer-and-half inputs match Math.fround(a*x + y)', async (t) => {
  const k = await launch(t, { handler: 'saxpy', input: SaxpyIn, output: SaxpyOut, capacity: 16 })
  const half = fc.integer({ min: -4000, max: 4000 }).map((n) => n / 2)
  await fc.assert(
    fc.asyncProperty(half, fc.array(half, { minLength: N, maxLength: N }), fc.array(half, { minLength: N, maxLength: N }), async (a, x, y) => {
      const r = await saxpy(k, a, x, y)
      for (let i = 0; i < N; i++) {
        // a·x + y is exact in f64 here, so one rounding to f32 is the fused result.
        assert.ok(sameBits(r[i]!, Math.fround(a * x[i]! + y[i]!)), `r[${i}] = ${r[i]} for ${a}·${x[i]} + ${y[i]}`)
      }
    }),
    { numRuns: 100 },
  )
  t.is(k.stats().errors.replies, 0)
})

test('saxpy via request: general f32 inputs match a correctly rounded fma bit for bit', async (t) => {
  const k = await launch(t, { handler: 'saxpy', input: SaxpyIn, output: SaxpyOut, capacity: 16 })
  const big = Math.fround(1e15)
  const value = fc.float({ min: -big, max: big, noNaN: true })
  await fc.assert(
    fc.asyncProperty(value, fc.array(value, { minLength: N, maxLength: N }), fc.array(value, { minLength: N, maxLength: N }), async (a, x, y) => {
      const r = await saxpy(k, a, x, y)
      for (let i = 0; i < N; i++) {
        const want = fmaf(a, x[i]!, y[i]!)
        assert.ok(sameBits(r[i]!, want), `r[${i}] = ${r[i]}, want ${want} for fma(${a}, ${x[i]}, ${y[i]})`)
      }
    }),
    { numRuns: 150 },
  )
  // Hand-picked: ties after the f64 sum (see the fmaf test), specials, and signed zeros.
  const a1 = 1 + 2 ** -12
  const xs = [a1, 1 + 3 * 2 ** -12, 0.1, -0, 3, 1e30, -1e30, Infinity, 0, 2 ** -149, 1, 2, 0.5, -7, 65_536, 1 / 3].map(Math.fround)
  const ys = [2 ** -80, -(2 ** -80), 0.2, -0, -3, 1e30, 1, 5, Infinity, 0, -1, 1e-30, 0.25, 7, 1, -1 / 3].map(Math.fround)
  const r = await saxpy(k, a1, xs, ys)
  for (let i = 0; i < N; i++) t.true(sameBits(r[i]!, fmaf(a1, xs[i]!, ys[i]!)), `case ${i}: ${r[i]} vs ${fmaf(a1, xs[i]!, ys[i]!)}`)
  t.is(r[0], 1 + 2 ** -11 + 2 ** -23, 'fused: rounded once')
  t.is(r[1], 1 + 2 ** -10 + 2 ** -23, 'fused: rounded once')
  t.true(Object.is((await saxpy(k, -0, new Array(N).fill(1), new Array(N).fill(-0)))[0], -0), '-0·1 + -0 = -0')
  t.true(Number.isNaN((await saxpy(k, 0, new Array(N).fill(Infinity), new Array(N).fill(1)))[0]!), '0·∞ is NaN')
})

test('saxpy of a wrong length rejects with ERR_RINGBRIDGE_KERNEL_ERROR (bad-payload) and the kernel keeps serving', async (t) => {
  const k = await launch(t, { handler: 'saxpy', input: bytes(), output: bytes(), capacity: 8 })
  const frame = (a: number, x: number[], y: number[]) => new Uint8Array(new Float32Array([a, ...x, ...y]).buffer)
  for (const length of [0, 3, 5, 4 + 8 + 4]) {
    const e = await t.throwsAsync(within(k.request(new Uint8Array(length), { timeoutMs: 5000 }), 6000, `request of ${length} bytes`))
    t.is(codeOf(e), 'ERR_RINGBRIDGE_KERNEL_ERROR', `${length} bytes`)
    t.is(detailsOf(e)?.kernelError, 'bad-payload')
    t.is(detailsOf(e)?.kernelCode, 2)
    t.is(detailsOf(e)?.detail, length)
  }
  // Error frames reach receive() as well when the message was a plain send.
  await within(k.send(new Uint8Array(6)), 2000, 'k.send(new Uint8Array(6))')
  const e = await t.throwsAsync(k.receive({ timeoutMs: 5000 }))
  t.is(codeOf(e), 'ERR_RINGBRIDGE_KERNEL_ERROR')
  t.is(detailsOf(e)?.kernelError, 'bad-payload')
  const s = k.stats()
  t.is(s.errors.replies, 5)
  t.is(s.errors.kernel, 5)
  t.is(s.errors.firstKernelError, 'bad-payload')
  // Still serving.
  const reply = await within(k.request(frame(2, [1, 2.5], [3, -4]), { timeoutMs: 5000 }), 6000, 'good request')
  t.deepEqual([...new Float32Array(reply.buffer, reply.byteOffset, reply.length / 4)], [5, 1])
  t.is(k.state, 'running')
})

test('a reply larger than the output slot comes back as ERR_RINGBRIDGE_KERNEL_ERROR (reply-too-large)', async (t) => {
  // 256-byte input slots, 32-byte output slots: 16 bytes of reply payload at most.
  const k = await launch(t, { handler: 'echo', input: bytes(), output: bytes(), outputSlotSize: 32 })
  const e = await t.throwsAsync(within(k.request(new Uint8Array(17), { timeoutMs: 5000 }), 6000, 'request of 17 bytes'))
  t.is(codeOf(e), 'ERR_RINGBRIDGE_KERNEL_ERROR')
  t.is(detailsOf(e)?.kernelError, 'reply-too-large')
  t.is(detailsOf(e)?.kernelCode, 4)
  const ok = Uint8Array.from({ length: 16 }, (_, i) => i)
  t.deepEqual([...(await within(k.request(ok, { timeoutMs: 5000 }), 6000, 'request of 16 bytes'))], [...ok])
  t.is(k.stats().errors.firstKernelError, 'reply-too-large')
})

// ---- timeouts -------------------------------------------------------------------------------

test('a request times out with ERR_RINGBRIDGE_TIMEOUT while paused; its late reply is counted, not delivered', async (t) => {
  const k = await launch(t, { handler: 'echo', input: u32, output: u32, capacity: 8 })
  await within(k.deactivate(), 5000, 'deactivate')
  const e = await t.throwsAsync(within(k.request(7, { timeoutMs: 50 }), 2000, 'timed request'))
  t.is(codeOf(e), 'ERR_RINGBRIDGE_TIMEOUT')
  t.is(k.stats().pendingRequests, 0)
  t.is(k.stats().lateReplies, 0)
  await within(k.activate(), 5000, 'activate')
  await until(() => k.stats().processed === 1, 5000, 'the late message is processed')
  const e2 = await t.throwsAsync(k.receive({ timeoutMs: 100 }))
  t.is(codeOf(e2), 'ERR_RINGBRIDGE_TIMEOUT', 'the late reply does not reach receive()')
  t.is(k.stats().lateReplies, 1)
  t.is(k.stats().replied, 1)
  // Later traffic is unaffected.
  t.is(await within(k.request(8, { timeoutMs: 5000 }), 6000, 'request 8'), 8)
  await within(k.send(9), 2000, 'k.send(9)')
  t.is(await within(k.receive({ timeoutMs: 5000 }), 6000, 'receive 9'), 9)
  t.is(k.stats().lateReplies, 1)
})

test('timeoutMs of request and receive is validated', async (t) => {
  const k = await launch(t, { handler: 'echo', input: u32, output: u32 })
  for (const timeoutMs of [-1, Number.NaN, Infinity, '10' as unknown as number]) {
    const e = await t.throwsAsync(k.request(1, { timeoutMs }))
    t.is(codeOf(e), 'ERR_RINGBRIDGE_INVALID_ARGUMENT', String(timeoutMs))
    t.true(e instanceof TypeError)
    t.is(codeOf(await t.throwsAsync(k.receive({ timeoutMs }))), 'ERR_RINGBRIDGE_INVALID_ARGUMENT')
  }
  t.is(k.stats().sent, 0)
  t.is(k.stats().pendingRequests, 0)
})

test('stats() keeps request latency percentiles, and they bracket the measured round trips', async (t) => {
  const k = await launch(t, { handler: 'echo', input: u32, output: u32 })
  const times: number[] = []
  for (let i = 0; i < 2000; i++) {
    const t0 = performance.now()
    await k.request(i)
    times.push((performance.now() - t0) * 1000)
  }
  const l = k.stats().requestLatency
  t.is(l.count, 2000)
  t.true(l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max, JSON.stringify(l))
  times.sort((a, b) => a - b)
  const median = times[1000]!
  // Buckets are within 12.5 %; the histogram times send→settle, inside the caller's await.
  t.true(l.p50 <= median * 1.15, `p50 ${l.p50} µs vs caller-measured median ${median.toFixed(2)} µs`)
  t.true(l.p50 >= times[0]! * 0.5, `p50 ${l.p50} µs vs fastest ${times[0]!.toFixed(2)} µs`)
})
