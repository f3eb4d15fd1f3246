// Error codes: one list in Rust, TypeScript and docs/errors.md, and every code raised for real
// at least once. Assertions are on `code` and class, never on message text.
import { readFileSync } from 'node:fs'
import path from 'node:path'

import test, { type ExecutionContext } from 'ava'

import {
  ERROR_CODES,
  RingbridgeError,
  RingbridgeRangeError,
  RingbridgeTypeError,
  Runtime,
  array,
  bytes,
  u32,
  u8,
  type Backpressure,
  type BackendName,
  type RingKernel,
  type RingbridgeErrorCode,
  type TerminateMode,
} from '../index'
import { until, within } from './helpers'
import native from '../ts/binding'

// ---- one list -------------------------------------------------------------------------------

/** The code column of docs/errors.md's table, in order. Throws if the file is missing. */
function documentedCodes(): string[] {
  const text = readFileSync(path.resolve(__dirname, '..', 'docs', 'errors.md'), 'utf8')
  const lines = text.split('\n').map((l) => l.trim())
  const header = lines.findIndex((l) => /^\|\s*code\s*\|\s*meaning\s*\|\s*remedy\s*\|$/i.test(l))
  if (header < 0) throw new Error('docs/errors.md has no `| code | meaning | remedy |` table')
  const codes: string[] = []
  for (const line of lines.slice(header + 2)) {
    if (!line.startsWith('|')) break
    const cells = line.split('|').slice(1, -1).map((c) => c.trim())
    const code = /^`(ERR_[A-Z0-9_]+)`$/.exec(cells[0] ?? '')
    if (!code || cells.length !== 3 || !cells[1] || !cells[2]) throw new Error(`docs/errors.md: malformed row: ${line}`)
    codes.push(code[1]!)
  }
  return codes
}

test('ERROR_CODES equals the native list, in order', (t) => {
  t.deepEqual([...ERROR_CODES], native.errorCodes())
  t.is(new Set(ERROR_CODES).size, ERROR_CODES.length)
  for (const code of ERROR_CODES) t.regex(code, /^ERR_RINGBRIDGE_[A-Z_]+$/)
})

test('ERROR_CODES equals the code column of docs/errors.md, in order', (t) => {
  t.deepEqual(documentedCodes(), [...ERROR_CODES])
})

// ---- classes --------------------------------------------------------------------------------

test('error classes carry code, name, details and cause', (t) => {
  const cause = new Error('native')
  const e = new RingbridgeError('ERR_RINGBRIDGE_FULL', 'full', { cause, details: { capacity: 4 } })
  t.true(e instanceof Error)
  t.is(e.name, 'RingbridgeError')
  t.is(e.code, 'ERR_RINGBRIDGE_FULL')
  t.deepEqual(e.details, { capacity: 4 })
  t.is(e.cause, cause)
  const te = new RingbridgeTypeError('ERR_RINGBRIDGE_INVALID_MESSAGE', 'bad')
  t.true(te instanceof TypeError)
  t.is(te.name, 'RingbridgeTypeError')
  t.is(te.code, 'ERR_RINGBRIDGE_INVALID_MESSAGE')
  const re = new RingbridgeRangeError('ERR_RINGBRIDGE_INVALID_ARGUMENT', 'bad')
  t.true(re instanceof RangeError)
  t.is(re.name, 'RingbridgeRangeError')
  t.is(re.code, 'ERR_RINGBRIDGE_INVALID_ARGUMENT')
})

// ---- every code, raised for real ------------------------------------------------------------

type ErrorClass = typeof RingbridgeError | typeof RingbridgeTypeError | typeof RingbridgeRangeError

/** One way to raise a code: a name, the class the error must have, and the call that fails. */
interface Trigger {
  name: string
  cls: ErrorClass | 'any'
  run: (t: ExecutionContext, rt: Runtime) => Promise<unknown> | unknown
  /** Runs on the cuda backend, only where RINGBRIDGE_GPU=1; skipped with a reason elsewhere. */
  gpu?: true
  /** Cannot be raised from JS yet: skipped, with this reason. */
  skip?: string
  /** Raised only where CUDA is missing: skipped on a GPU host. */
  cpuOnly?: true
}

const GPU = process.env.RINGBRIDGE_GPU === '1'

const echo = { handler: 'echo', input: u32, output: u32 }

async function kernelOf(t: ExecutionContext, rt: Runtime, options: Record<string, unknown> = {}): Promise<RingKernel<number, number>> {
  const k = await rt.launch({ ...echo, ...options })
  t.teardown(() => within(k.terminate({ mode: 'abandon' }), 10_000, 'terminate'))
  return k
}

async function repliesReady(k: RingKernel<number, number>, n: number): Promise<void> {
  await until(() => k.stats().processed === n && k.stats().depth.outputRing + k.stats().replied >= n, 5000, `${n} replies produced`)
}

const TRIGGERS: Record<RingbridgeErrorCode, Trigger[]> = {
  ERR_RINGBRIDGE_INVALID_ARGUMENT: [
    { name: 'capacity 3', cls: RingbridgeRangeError, run: (_t, rt) => rt.launch({ ...echo, capacity: 3 }) },
    { name: 'capacity 2^25', cls: RingbridgeRangeError, run: (_t, rt) => rt.launch({ ...echo, capacity: 2 ** 25 }) },
    { name: 'slotSize 24', cls: RingbridgeRangeError, run: (_t, rt) => rt.launch({ ...echo, slotSize: 24 }) },
    { name: 'outputSlotSize 48', cls: RingbridgeRangeError, run: (_t, rt) => rt.launch({ ...echo, outputSlotSize: 48 }) },
    { name: 'capacity 2.5', cls: RingbridgeTypeError, run: (_t, rt) => rt.launch({ ...echo, capacity: 2.5 }) },
    { name: 'typeId 70000', cls: RingbridgeRangeError, run: (_t, rt) => rt.launch({ ...echo, typeId: 70_000 }) },
    { name: 'unknown send policy', cls: RingbridgeTypeError, run: (_t, rt) => rt.launch({ ...echo, sendQueue: { policy: 'bogus' as Backpressure } }) },
    { name: 'unknown reply policy', cls: RingbridgeTypeError, run: (_t, rt) => rt.launch({ ...echo, replyQueue: { policy: 'bogus' as Backpressure } }) },
    { name: 'missing input schema', cls: RingbridgeTypeError, run: (_t, rt) => rt.launch({ handler: 'echo', output: u32 } as never) },
    { name: "backend 'bogus'", cls: RingbridgeTypeError, run: () => Runtime.open({ backend: 'bogus' as BackendName }) },
    { name: 'terminate mode', cls: RingbridgeRangeError, run: async (t, rt) => (await kernelOf(t, rt)).terminate({ mode: 'later' as TerminateMode }) },
    { name: 'receiveBatch max 0', cls: RingbridgeTypeError, run: async (t, rt) => (await kernelOf(t, rt)).receiveBatch(0) },
  ],
  ERR_RINGBRIDGE_INVALID_MESSAGE: [
    { name: 'string for a u32', cls: RingbridgeTypeError, run: async (t, rt) => (await kernelOf(t, rt)).trySend('7' as unknown as number) },
    { name: 'u32 out of range', cls: RingbridgeRangeError, run: async (t, rt) => (await kernelOf(t, rt)).send(2 ** 32) },
  ],
  ERR_RINGBRIDGE_MESSAGE_TOO_LARGE: [
    {
      name: 'bytes over the slot payload',
      cls: RingbridgeRangeError,
      run: async (t, rt) => {
        const k = await rt.launch({ handler: 'echo', input: bytes(), output: bytes() })
        t.teardown(() => within(k.terminate(), 10_000, 'terminate'))
        return k.send(new Uint8Array(241))
      },
    },
    { name: 'schema over the slot at launch', cls: RingbridgeRangeError, run: (_t, rt) => rt.launch({ ...echo, input: array(u8, 300), slotSize: 256 }) },
  ],
  ERR_RINGBRIDGE_FULL: [
    {
      name: "send under 'reject'",
      cls: RingbridgeError,
      run: async (t, rt) => {
        const k = await kernelOf(t, rt, { capacity: 1, sendQueue: { capacity: 1, policy: 'reject' } })
        await within(k.deactivate(), 5000, 'deactivate')
        await k.send(1)
        await k.send(2)
        return k.send(3)
      },
    },
    {
      name: "request dropped under 'drop-newest'",
      cls: RingbridgeError,
      run: async (t, rt) => {
        const k = await kernelOf(t, rt, { capacity: 1, sendQueue: { capacity: 1, policy: 'drop-newest' } })
        await within(k.deactivate(), 5000, 'deactivate')
        await k.send(1)
        await k.send(2)
        return within(k.request(3, { timeoutMs: 5000 }), 6000, 'request')
      },
    },
  ],
  ERR_RINGBRIDGE_OVERFLOW: [
    {
      name: "replies dropped under 'reject'",
      cls: RingbridgeError,
      run: async (t, rt) => {
        const k = await kernelOf(t, rt, { capacity: 8, replyQueue: { capacity: 1, policy: 'reject' } })
        await k.sendBatch([1, 2, 3])
        await repliesReady(k, 3)
        return k.receive({ timeoutMs: 5000 })
      },
    },
  ],
  ERR_RINGBRIDGE_CLOSED: [
    {
      name: 'send after terminate',
      cls: RingbridgeError,
      run: async (t, rt) => {
        const k = await kernelOf(t, rt)
        await within(k.terminate(), 5000, 'terminate')
        return k.send(1)
      },
    },
    {
      name: 'launch after close',
      cls: RingbridgeError,
      run: async () => {
        const rt2 = await Runtime.open({ backend: 'cpu' })
        await within(rt2.close(), 5000, 'close')
        return rt2.launch(echo)
      },
    },
  ],
  ERR_RINGBRIDGE_KERNEL_ERROR: [
    {
      name: 'saxpy of a bad length',
      cls: RingbridgeError,
      run: async (t, rt) => {
        const k = await rt.launch({ handler: 'saxpy', input: bytes(), output: bytes() })
        t.teardown(() => within(k.terminate(), 10_000, 'terminate'))
        return within(k.request(new Uint8Array(5), { timeoutMs: 5000 }), 6000, 'request')
      },
    },
  ],
  ERR_RINGBRIDGE_BACKEND_UNAVAILABLE: [{ name: "backend 'cuda' without a CUDA driver", cls: RingbridgeError, cpuOnly: true, run: () => Runtime.open({ backend: 'cuda' }) }],
  ERR_RINGBRIDGE_UNKNOWN_HANDLER: [{ name: "handler 'nope'", cls: RingbridgeError, run: (_t, rt) => rt.launch({ ...echo, handler: 'nope' }) }],
  ERR_RINGBRIDGE_TIMEOUT: [
    { name: 'receive', cls: RingbridgeError, run: async (t, rt) => (await kernelOf(t, rt)).receive({ timeoutMs: 10 }) },
    {
      name: 'request while paused',
      cls: RingbridgeError,
      run: async (t, rt) => {
        const k = await kernelOf(t, rt)
        await within(k.deactivate(), 5000, 'deactivate')
        return k.request(1, { timeoutMs: 10 })
      },
    },
  ],
  ERR_RINGBRIDGE_PROTOCOL: [
    {
      name: 'reply of the wrong size for the output schema',
      cls: 'any',
      run: async (t, rt) => {
        const k = await rt.launch({ handler: 'echo', input: bytes(), output: u32 })
        t.teardown(() => within(k.terminate(), 10_000, 'terminate'))
        await k.send(Uint8Array.of(1, 2, 3))
        return k.receive({ timeoutMs: 5000 })
      },
    },
  ],
  ERR_RINGBRIDGE_RESOURCE_EXHAUSTED: [
    {
      name: 'a region larger than memory',
      cls: RingbridgeError,
      skip: 'the rings JS can ask for fit a SharedArrayBuffer or a sparse memfd; raised for real by tests/cpu_backend.rs (a region of 2 × 16 TiB)',
      run: () => undefined,
    },
  ],
  ERR_RINGBRIDGE_OS: [
    {
      name: 'a failing system call',
      cls: RingbridgeError,
      skip: 'no system call fails on demand from JS; raised for real by tests/isolate.rs (mmap of a read-only file)',
      run: () => undefined,
    },
  ],
  ERR_RINGBRIDGE_CUDA: [
    {
      name: 'a GPU handler that traps',
      cls: RingbridgeError,
      gpu: true,
      run: async (t, rt) => {
        const k = await rt.launch({ handler: 'trap', input: u32, output: u32 })
        t.teardown(() => within(k.terminate(), 10_000, 'terminate'))
        return k.request(1, { timeoutMs: 5000 })
      },
    },
  ],
  ERR_RINGBRIDGE_COMPILE: [
    {
      name: 'a user kernel source NVRTC rejects (also raised without a GPU by cuda-schema.spec under CI\'s NVRTC step)',
      cls: RingbridgeError,
      gpu: true,
      run: (_t, rt) => rt.launch({ input: u32, output: u32, source: '__device__ uint32_t f(const rb_input& in, rb_output& out, rb_context&) { return nope; }', entry: 'f' }),
    },
  ],
  ERR_RINGBRIDGE_ABORTED: [
    {
      name: 'request aborted while paused',
      cls: RingbridgeError,
      run: async (t, rt) => {
        const k = await kernelOf(t, rt)
        await within(k.deactivate(), 5000, 'deactivate')
        const ac = new AbortController()
        const p = k.request(1, { signal: ac.signal })
        ac.abort(new Error('user gave up'))
        return p
      },
    },
  ],
}

test('every error code has a trigger below', (t) => {
  t.deepEqual(Object.keys(TRIGGERS), [...ERROR_CODES])
  for (const code of ERROR_CODES) t.true(TRIGGERS[code].length > 0, code)
})

for (const code of ERROR_CODES) {
  for (const trigger of TRIGGERS[code]) {
    const reason =
      trigger.skip ??
      (trigger.gpu && !GPU ? 'no CUDA device (set RINGBRIDGE_GPU=1 on a GPU host)' : undefined) ??
      (trigger.cpuOnly && GPU ? 'CUDA is available on this host' : undefined)
    if (reason) {
      test.skip(`${code}: ${trigger.name} — skipped: ${reason}`, () => undefined)
      continue
    }
    test(`${code}: ${trigger.name}`, async (t) => {
      const rt = await Runtime.open({ backend: trigger.gpu ? 'cuda' : 'cpu' })
      t.teardown(() => within(rt.close(), 15_000, 'runtime close'))
      let error: unknown
      try {
        await within(Promise.resolve().then(() => trigger.run(t, rt)), 10_000, trigger.name)
      } catch (e) {
        error = e
      }
      t.truthy(error, 'the call fails')
      t.is((error as { code?: string }).code, code)
      t.true(error instanceof RingbridgeError || error instanceof RingbridgeTypeError || error instanceof RingbridgeRangeError, `class ${(error as Error).name}`)
      if (trigger.cls !== 'any') t.true(error instanceof trigger.cls, `${(error as Error).name} is a ${trigger.cls.name}`)
      t.is((error as Error).name, (error as Error).constructor.name)
    })
  }
}

test('errors converted from the native binding keep the native error as cause', async (t) => {
  const rt = await Runtime.open({ backend: 'cpu' })
  t.teardown(() => rt.close())
  const e = await t.throwsAsync(rt.launch({ handler: 'nope', input: u32, output: u32 }))
  t.true(e instanceof RingbridgeError)
  const cause = (e as Error).cause as { code?: string } | undefined
  t.truthy(cause)
  t.is(cause?.code, 'ERR_RINGBRIDGE_UNKNOWN_HANDLER')
  t.not(cause, e)
})
