// Chunks (PROTOCOL.md §5.3): reserve/commit and receiveChunk/release, in place in the rings'
// slots. The CPU backend runs everywhere; the CUDA variants run only with RINGBRIDGE_GPU=1 and
// are listed as skipped with the reason elsewhere, never passed.
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'

import test from 'ava'
import fc from 'fast-check'

import { Runtime, bytes, u32, type ReceiveChunk, type RingKernel, type SendChunk } from '../index'
import { ControlBlockView, InputRing } from '../ts/ring'
import { codeOf, launchOn, pendingAfter, sleep, until, within } from './helpers'

const GPU = process.env.RINGBRIDGE_GPU === '1'
const GPU_MESSAGES = Number(process.env.RINGBRIDGE_GPU_MESSAGES ?? 10_000_000)
const gpuTest = GPU ? test.serial : (title: string, _fn: unknown) => test.skip(`${title} — skipped: no CUDA device (set RINGBRIDGE_GPU=1 on a GPU host)`, () => undefined)

type Kernel = RingKernel<Uint8Array, Uint8Array>

/** The checksum word of message `seq`. */
const checkOf = (seq: number) => Math.imul(seq ^ 0x5bd1e995, 0x27d4eb2d) >>> 0

/** Byte offset, in the chunk's buffer, of message `i`'s payload. */
function payloadAt(c: SendChunk | ReceiveChunk, i: number): number {
  return i < c.firstCount ? c.first.byteOffset + i * c.slotSize + c.payloadOffset : c.second.byteOffset + (i - c.firstCount) * c.slotSize + c.payloadOffset
}

/** Writes seq and its checksum into the first `n` payloads of `c` (sequence from `seq`). */
function fill(c: SendChunk, n: number, seq: number, view: DataView): void {
  for (let i = 0; i < n; i++) {
    const at = payloadAt(c, i)
    view.setUint32(at, seq + i, true)
    view.setUint32(at + 4, checkOf(seq + i), true)
  }
}

/** The sequence number reply `i` of `r` carries, or a description of what is wrong with it. */
function seqOf(r: ReceiveChunk, i: number, view: DataView, size: number): number | string {
  if (r.isErrorAt(i)) return `error frame: ${r.errorAt(i)?.message}`
  if (r.lengthAt(i) !== size) return `length ${r.lengthAt(i)}, expected ${size}`
  const at = payloadAt(r, i)
  const seq = view.getUint32(at, true)
  if (view.getUint32(at + 4, true) !== checkOf(seq)) return `seq ${seq} has a bad checksum`
  return seq
}

/**
 * Streams `total` checksummed messages of `size` bytes through chunks of at most `maxSend` /
 * `maxReceive`, checking every reply in order. Waits with nextChunk when nothing is ready.
 */
async function stream(k: Kernel, total: number, maxSend: number, maxReceive: number, size = 8): Promise<{ got: number; wrong: string | undefined }> {
  let sent = 0
  let got = 0
  let idle = 0
  let view: DataView | undefined
  while (got < total) {
    if (sent < total) {
      const c = k.reserve(Math.min(maxSend, total - sent))
      if (c.count > 0) {
        view ??= new DataView(c.first.buffer)
        fill(c, c.count, sent, view)
        sent += c.commit(c.count, { size })
      }
    }
    let r = k.receiveChunk(maxReceive)
    if (r.count === 0) {
      if (++idle < 64) continue
      idle = 0
      // Every message sent is answered: no reply will come, only room (the kernel publishes its
      // replies before it releases the input slots). Waiting for a reply here hung under load.
      if (got === sent) {
        await k.nextReserve(1, { timeoutMs: 20_000 })
        continue
      }
      r = await k.nextChunk(maxReceive, { timeoutMs: 20_000 })
    }
    idle = 0
    view ??= new DataView(r.first.buffer)
    for (let i = 0; i < r.count; i++, got++) {
      const s = seqOf(r, i, view, size)
      if (s !== got) {
        r.release()
        return { got, wrong: `reply ${got}: ${s}` }
      }
    }
    r.release()
  }
  return { got, wrong: undefined }
}

const launchEcho = (t: Parameters<typeof launchOn>[0], capacity: number, extra: object = {}) =>
  launchOn(t, { handler: 'echo', input: bytes(), output: bytes(), capacity, slotSize: 64, ...extra }) as Promise<Kernel>

for (const capacity of [2, 4, 1024]) {
  test(`a checksummed stream of 1 M messages through chunks, capacity ${capacity}: every reply in order`, async (t) => {
    const k = await launchEcho(t, capacity)
    const started = Date.now()
    const { got, wrong } = await stream(k, 1_000_000, capacity, capacity, 8)
    t.is(wrong, undefined)
    t.is(got, 1_000_000)
    t.log(`capacity ${capacity}: ${((1e6 / (Date.now() - started)) * 1000 / 1e6).toFixed(2)} M msg/s`)
    const stats = k.stats()
    t.is(stats.sent, 1_000_000)
    t.is(stats.replied, 1_000_000)
    t.deepEqual((await within(k.terminate(), 10_000, 'terminate')).undelivered, [])
  })
}

test('random reserve/commit/receiveChunk/release sequences lose, duplicate and reorder nothing (with other sends between)', async (t) => {
  type Op =
    | { op: 'reserve'; n: number }
    | { op: 'commit'; take: number; size: number; old: boolean }
    | { op: 'receive'; n: number }
    | { op: 'release'; take: number }
    | { op: 'packed'; n: number }
    | { op: 'send' }
  // Mostly one size, so that runs of one header last a lap and more (where W4 elides).
  const size = fc.constantFrom(8, 8, 8, 8, 48)
  const ops = (cap: number) =>
    fc.array(
      fc.oneof(
        { weight: 4, arbitrary: fc.record({ op: fc.constant('reserve' as const), n: fc.integer({ min: 0, max: 2 * cap + 1 }) }) },
        { weight: 4, arbitrary: fc.record({ op: fc.constant('commit' as const), take: fc.nat({ max: 2 * cap + 1 }), size, old: fc.boolean() }) },
        { weight: 4, arbitrary: fc.record({ op: fc.constant('receive' as const), n: fc.integer({ min: 0, max: 2 * cap + 1 }) }) },
        { weight: 4, arbitrary: fc.record({ op: fc.constant('release' as const), take: fc.nat({ max: 2 * cap + 1 }) }) },
        { weight: 1, arbitrary: fc.record({ op: fc.constant('packed' as const), n: fc.integer({ min: 1, max: cap }) }) },
        { weight: 1, arbitrary: fc.record({ op: fc.constant('send' as const) }) },
      ),
      { maxLength: 150, size: 'max' },
    )
  for (const capacity of [2, 4, 16]) {
    const rt = await Runtime.open({ backend: 'cpu' })
    try {
      await fc.assert(
        fc.asyncProperty(ops(capacity), async (script) => {
          const k = (await rt.launch({ handler: 'echo', input: bytes(), output: bytes(), capacity, slotSize: 64 })) as Kernel
          k.receiveChunk(0) // replies stay in the ring from now on, even those that come before the first receive below
          try {
            await runScript(k, script as Op[])
          } finally {
            await within(k.terminate({ mode: 'abandon' }), 10_000, 'terminate')
          }
        }),
        { numRuns: 60 },
      )
    } finally {
      await within(rt.close(), 15_000, 'close')
    }
  }
  t.pass()

  /** Replays `script`, checking every reply against the model: the messages in send order. */
  async function runScript(k: Kernel, script: Op[]): Promise<void> {
    const expected: { seq: number; size: number; chunk: boolean }[] = []
    let seq = 0
    let next = 0 // index in `expected` of the next reply
    let chunk: SendChunk | undefined
    let chunkLive = false // no send or reserve since `chunk` was reserved
    const older: SendChunk[] = []
    let held: ReceiveChunk | undefined
    const check = (r: ReceiveChunk, upTo: number) => {
      const view = new DataView(r.first.buffer)
      for (let i = 0; i < upTo; i++) {
        const e = expected[next + i]
        if (!e) throw new Error(`reply ${next + i} was never sent`)
        const got = seqOf(r, i, view, e.size)
        if (got !== e.seq) throw new Error(`reply ${next + i}: expected seq ${e.seq} (${e.size} bytes), got ${got}`)
        if ((r.correlationIdAt(i) === 0) !== e.chunk) throw new Error(`reply ${next + i}: correlation id ${r.correlationIdAt(i)} for a ${e.chunk ? 'chunk' : 'per-message'} send`)
      }
    }
    const packedOf = (n: number, size: number) => {
      const p = new Uint8Array(n * size)
      const v = new DataView(p.buffer)
      for (let i = 0; i < n; i++) {
        v.setUint32(i * size, seq + i, true)
        v.setUint32(i * size + 4, checkOf(seq + i), true)
      }
      return p
    }
    for (const s of script) {
      switch (s.op) {
        case 'reserve':
          if (chunk) older.push(chunk)
          chunk = k.reserve(s.n)
          chunkLive = true
          if (chunk.count > s.n || chunk.count > k.capacity) throw new Error(`reserve(${s.n}) gave ${chunk.count}`)
          break
        case 'commit': {
          const target = s.old && older.length > 0 ? older[older.length - 1]! : chunk
          if (!target) break
          const j = Math.min(s.take, target.count)
          if (target !== chunk || !chunkLive) {
            let code: string | undefined
            try {
              target.commit(j, { size: s.size })
            } catch (e) {
              code = codeOf(e)
            }
            if (code !== 'ERR_RINGBRIDGE_INVALID_ARGUMENT') throw new Error(`committing a stale or committed chunk gave ${code ?? 'no error'}`)
            break
          }
          fill(target, j, seq, new DataView(target.first.buffer))
          if (target.commit(j, { size: s.size }) !== j) throw new Error('commit count')
          for (let i = 0; i < j; i++) expected.push({ seq: seq++, size: s.size, chunk: true })
          chunkLive = false
          break
        }
        case 'packed': {
          const size = 12
          const n = k.trySendPacked(packedOf(s.n, size), size, s.n)
          for (let i = 0; i < n; i++) expected.push({ seq: seq++, size, chunk: false })
          if (n > 0) chunkLive = false
          break
        }
        case 'send': {
          const one = packedOf(1, 8)
          if (k.trySend(one)) {
            expected.push({ seq: seq++, size: 8, chunk: false })
            chunkLive = false
          }
          break
        }
        case 'receive': {
          if (held) {
            let code: string | undefined
            try {
              k.receiveChunk(s.n)
            } catch (e) {
              code = codeOf(e)
            }
            if (code !== 'ERR_RINGBRIDGE_INVALID_ARGUMENT') throw new Error(`a second receiveChunk gave ${code ?? 'no error'}`)
            break
          }
          let r = k.receiveChunk(s.n)
          // Nothing ready yet while replies are due: wait for the kernel (it runs beside us).
          if (r.count === 0 && s.n > 0 && next < expected.length) r = await k.nextChunk(s.n, { timeoutMs: 10_000 })
          if (r.count > s.n) throw new Error(`receiveChunk(${s.n}) gave ${r.count}`)
          check(r, r.count)
          if (r.count > 0) held = r
          break
        }
        case 'release': {
          if (!held) break
          const j = Math.min(s.take, held.count)
          held.release(j)
          next += j
          held = undefined
          break
        }
      }
    }
    if (held) {
      held.release()
      next += held.count
    }
    // Everything sent comes back, in order, and nothing more.
    const end = Date.now() + 10_000
    while (next < expected.length) {
      const r = k.receiveChunk()
      check(r, r.count)
      next += r.count
      r.release()
      if (r.count === 0) {
        if (Date.now() > end) throw new Error(`only ${next} of ${expected.length} replies came back`)
        await sleep(1)
      }
    }
    await sleep(2)
    const extra = k.receiveChunk()
    if (extra.count !== 0) throw new Error(`${extra.count} replies more than sent`)
  }
})

test('a reserved chunk never committed sends nothing; the next reserve gets the same slots; the stale one cannot commit', async (t) => {
  const k = await launchEcho(t, 8)
  const a = k.reserve(5)
  t.is(a.count, 5)
  a.payload(0).fill(1)
  const b = k.reserve(3)
  t.is(b.count, 3)
  t.is(b.first.byteOffset, a.first.byteOffset, 'the same first slot')
  await sleep(30)
  t.is(k.stats().sent, 0)
  t.is(k.stats().processed, 0)
  t.is(k.receiveChunk().count, 0)
  const stale = t.throws(() => a.commit(1, { size: 8 }))
  t.is(codeOf(stale), 'ERR_RINGBRIDGE_INVALID_ARGUMENT')
  t.regex(stale!.message, /stale: a later reserve\(\) came after it.*reserve\(\) again/)
  // A per-message send makes the live chunk stale too.
  t.true(k.trySend(new Uint8Array(8)))
  const bySend = t.throws(() => b.commit(1, { size: 8 }))
  t.is(codeOf(bySend), 'ERR_RINGBRIDGE_INVALID_ARGUMENT')
  t.regex(bySend!.message, /stale: a message sent on this kernel/)
  const c = k.reserve(2)
  t.is(c.commit(1, { size: 8 }), 1)
  t.regex(t.throws(() => c.commit(1, { size: 8 }))!.message, /already committed/)
  const r = await k.nextChunk(8, { timeoutMs: 5000 })
  t.true(r.count >= 1)
  r.release()
  await until(() => k.stats().processed === 2, 5000, 'both messages processed')
  t.is(k.stats().sent, 2)
  await within(k.terminate(), 10_000, 'terminate')
})

test('a held reply chunk keeps its bytes while the kernel waits for room; release lets the rest through in order', async (t) => {
  const k = await launchEcho(t, 8)
  let seq = 0
  const send = (n: number) => {
    const c = k.reserve(n)
    t.is(c.count, n)
    fill(c, n, seq, new DataView(c.first.buffer))
    seq += c.commit(n, { size: 8 })
  }
  send(8)
  await until(() => k.stats().processed === 8, 5000, '8 processed')
  const held = k.receiveChunk(4)
  t.is(held.count, 4)
  const snapshot = Uint8Array.from(held.first)
  // The output ring is full (4 held, 4 unread): 8 more wait in the input ring.
  send(8)
  await sleep(50)
  t.is(k.stats().processed, 8, 'the kernel waits for room, not over the held slots')
  t.deepEqual(Uint8Array.from(held.first), snapshot)
  const second = t.throws(() => k.receiveChunk(4))
  t.is(codeOf(second), 'ERR_RINGBRIDGE_INVALID_ARGUMENT')
  t.regex(second!.message, /a receive chunk of 4 replies is still held; release\(\) it first/)
  t.is(codeOf(await t.throwsAsync(k.nextChunk(4))), 'ERR_RINGBRIDGE_INVALID_ARGUMENT')
  t.is(codeOf(t.throws(() => k.tryReceivePacked(new Uint8Array(64), 8))), 'ERR_RINGBRIDGE_INVALID_ARGUMENT')
  const view = new DataView(held.first.buffer)
  t.deepEqual([0, 1, 2, 3].map((i) => seqOf(held, i, view, 8)), [0, 1, 2, 3])
  held.release(2) // a partial release: replies 2 and 3 come again
  t.is(codeOf(t.throws(() => held.lengthAt(0))), 'ERR_RINGBRIDGE_INVALID_ARGUMENT')
  const got: (number | string)[] = []
  while (got.length < 14) {
    const r = await k.nextChunk(16, { timeoutMs: 5000 })
    for (let i = 0; i < r.count; i++) got.push(seqOf(r, i, view, 8))
    r.release()
  }
  t.deepEqual(got, Array.from({ length: 14 }, (_, i) => i + 2))
  await within(k.terminate(), 10_000, 'terminate')
})

test('terminate drain with chunks in flight and one held: nothing lost, no hang; reserve and commit then throw CLOSED', async (t) => {
  const k = await launchEcho(t, 16)
  let seq = 0
  for (let round = 0; round < 3; round++) {
    const c = k.reserve(16)
    fill(c, c.count, seq, new DataView(c.first.buffer))
    seq += c.commit(c.count, { size: 8 })
    await until(() => k.stats().processed === seq || k.stats().depth.outputRing === 16, 5000, 'kernel progress')
  }
  const held = k.receiveChunk(5)
  const view = new DataView(held.first.buffer)
  const got: number[] = []
  for (let i = 0; i < held.count; i++) got.push(seqOf(held, i, view, 8) as number)
  const pendingChunk = k.reserve(4)
  const done = k.terminate()
  t.is(codeOf(t.throws(() => k.reserve(1))), 'ERR_RINGBRIDGE_CLOSED')
  t.is(codeOf(t.throws(() => pendingChunk.commit(0))), 'ERR_RINGBRIDGE_CLOSED')
  await sleep(30)
  held.release() // the drain waited for these slots
  const report = await within(done, 10_000, 'terminate drain')
  t.deepEqual(report.undelivered, [])
  // What stayed in the ring is in a chunk; what the drain moved out is in the reply queue.
  const rest = k.receiveChunk()
  for (let i = 0; i < rest.count; i++) got.push(seqOf(rest, i, view, 8) as number)
  rest.release()
  for (const r of k.tryReceiveMany()) got.push(new DataView(r.buffer, r.byteOffset).getUint32(0, true))
  t.deepEqual(got, Array.from({ length: seq }, (_, i) => i))
  t.is(codeOf(await t.throwsAsync(k.nextChunk(4))), 'ERR_RINGBRIDGE_CLOSED')
})

test('terminate abandon with chunks in flight: replies and undelivered add up to what was sent, no hang', async (t) => {
  const k = await launchEcho(t, 1024)
  let seq = 0
  for (let round = 0; round < 4; round++) {
    const c = k.reserve(1024)
    fill(c, c.count, seq, new DataView(c.first.buffer))
    seq += c.commit(c.count, { size: 8 })
    k.receiveChunk(100).release()
  }
  const replied = k.stats().replied
  const report = await within(k.terminate({ mode: 'abandon' }), 10_000, 'terminate abandon')
  const rest = k.receiveChunk()
  const restCount = rest.count
  rest.release()
  const queued = k.tryReceiveMany().length
  t.is(replied + restCount + queued + report.undelivered.length, seq)
  t.is(codeOf(t.throws(() => k.reserve(1))), 'ERR_RINGBRIDGE_CLOSED')
})

test('header stamping: after a full lap of one header commits write none; a size, type id or per-message send restamps', async (t) => {
  // Observed from outside: a header clobbered in a reserved slot goes out as it is when the
  // commit elides it, and is rewritten when the commit must stamp.
  const k = await launchEcho(t, 4)
  const lengthOfNext = async (size: number, clobber: boolean, typeId?: number) => {
    const c = k.reserve(1)
    t.is(c.count, 1)
    if (clobber) new DataView(c.first.buffer).setUint32(c.first.byteOffset, 3, true) // length field := 3
    c.commit(1, typeId === undefined ? { size } : { size, typeId })
    const r = await k.nextChunk(1, { timeoutMs: 5000 })
    const out = [r.lengthAt(0), r.typeIdAt(0)]
    r.release()
    return out
  }
  t.deepEqual(await lengthOfNext(48, true), [48, 1], 'first lap: stamped')
  for (let i = 0; i < 3; i++) await lengthOfNext(48, false)
  t.deepEqual(await lengthOfNext(48, true), [3, 1], 'after a lap of 48: not written')
  t.deepEqual(await lengthOfNext(40, true), [40, 1], 'a new size restamps')
  t.deepEqual(await lengthOfNext(40, true), [40, 1], 'still within the lap of 40')
  for (let i = 0; i < 2; i++) await lengthOfNext(40, false)
  t.deepEqual(await lengthOfNext(40, true), [3, 1], 'after a lap of 40')
  t.deepEqual(await lengthOfNext(40, true, 9), [40, 9], 'a new type id restamps')
  for (let i = 0; i < 3; i++) await lengthOfNext(40, false, 9)
  t.deepEqual(await lengthOfNext(40, true, 9), [3, 9], 'after a lap of type 9')
  t.true(k.trySend(new Uint8Array(40)))
  const r = await k.nextChunk(1, { timeoutMs: 5000 })
  r.release()
  t.deepEqual(await lengthOfNext(40, true, 9), [40, 9], 'a per-message send ends the run')
  await within(k.terminate(), 10_000, 'terminate')
})

test('header stamping counts: the input ring writes each slot once per run of one header', (t) => {
  const sab = new SharedArrayBuffer(896 + 4 * 64)
  const ring = new InputRing(sab, { slotsOffset: 896, capacity: 4, slotSize: 64 }, new ControlBlockView(sab, 0))
  const words = new Uint32Array(sab)
  const stamp = (n: number, size: number, typeId = 1) => {
    const before = ring.headersStamped
    ring.commitChunk(n, size, typeId)
    return ring.headersStamped - before
  }
  t.is(stamp(3, 48), 3)
  t.is(stamp(3, 48), 1, 'position 3 only: positions 4 and 5 reuse slots 0 and 1')
  t.is(stamp(2, 48), 0)
  t.is(stamp(4, 48), 0)
  t.deepEqual([0, 1, 2, 3].map((s) => words[(896 + s * 64) / 4]), [48, 48, 48, 48])
  t.is(stamp(2, 20), 2, 'a new size')
  t.is(stamp(4, 20), 2)
  t.is(stamp(4, 20), 0)
  ring.stageMessage(1, 77, { encode: () => 5 }, undefined)
  t.is(stamp(1, 20), 1, 'a per-message stage ended the run')
  t.is(stamp(4, 20), 3)
  t.is(stamp(4, 20), 0)
  ring.stageFrames(new Uint8Array(64), 0, 1, 64) // the send queue's flush
  t.is(stamp(1, 20), 1, 'frames from the send queue ended the run')
  t.is(stamp(4, 20), 3)
  t.is(stamp(4, 20), 0)
  t.is(stamp(0, 20), 0)
  t.deepEqual([0, 1, 2, 3].map((s) => [words[(896 + s * 64) / 4], words[(896 + s * 64) / 4 + 1], words[(896 + s * 64) / 4 + 2]]), [
    [20, 1, 0],
    [20, 1, 0],
    [20, 1, 0],
    [20, 1, 0],
  ])
})

test('chunk calls check their arguments: code and message', async (t) => {
  const k = await launchEcho(t, 8)
  const bad = (f: () => unknown, code: string, message: RegExp) => {
    const e = t.throws(f)
    t.is(codeOf(e), code)
    t.regex(e!.message, message)
  }
  for (const max of [-1, 1.5, 2 ** 32 + 1, NaN, '3' as unknown as number]) bad(() => k.reserve(max), 'ERR_RINGBRIDGE_INVALID_ARGUMENT', /reserve max: expected an integer from 0 to 2\^32/)
  for (const max of [-1, 0.5]) bad(() => k.receiveChunk(max), 'ERR_RINGBRIDGE_INVALID_ARGUMENT', /receiveChunk max: expected an integer from 0 to 2\^32/)
  t.is(k.reserve(0).count, 0)
  const c = k.reserve(4)
  t.is(c.count, 4)
  t.is(c.maxPayload, 48)
  t.is(c.payloadOffset, 16)
  bad(() => c.commit(5), 'ERR_RINGBRIDGE_INVALID_ARGUMENT', /commit count: expected an integer count from 0 to the chunk's 4 slots, got number 5/)
  bad(() => c.commit(-1), 'ERR_RINGBRIDGE_INVALID_ARGUMENT', /got number -1/)
  bad(() => c.commit(1.5), 'ERR_RINGBRIDGE_INVALID_ARGUMENT', /got number 1.5/)
  bad(() => c.commit(1, { size: 49 }), 'ERR_RINGBRIDGE_MESSAGE_TOO_LARGE', /size 49 exceeds the slot payload of 48 bytes/)
  bad(() => c.commit(1, { size: -2 }), 'ERR_RINGBRIDGE_INVALID_ARGUMENT', /commit size: expected an integer from 0 to 48/)
  bad(() => c.commit(1, { typeId: 65536 }), 'ERR_RINGBRIDGE_INVALID_ARGUMENT', /commit typeId: expected an integer from 0 to 65535/)
  bad(() => c.set(new Uint8Array(100), 50), 'ERR_RINGBRIDGE_MESSAGE_TOO_LARGE', /size 50 exceeds/)
  bad(() => c.payload(4), 'ERR_RINGBRIDGE_INVALID_ARGUMENT', /chunk index: expected an integer from 0 to 3, got number 4/)
  // Nothing was sent by the failed commits; set() then commit() uses set's size.
  t.is(c.set(new Uint8Array(30).fill(9), 10), 3)
  t.is(c.commit(3), 3)
  const r = await k.nextChunk(8, { timeoutMs: 5000 })
  await until(() => r.count === 3 || k.stats().processed === 3, 5000, 'processed')
  t.true(r.count >= 1)
  t.is(r.lengthAt(0), 10)
  t.deepEqual([...r.payload(0)], new Array(10).fill(9))
  bad(() => r.lengthAt(r.count), 'ERR_RINGBRIDGE_INVALID_ARGUMENT', /chunk index: expected an integer from 0/)
  bad(() => r.release(r.count + 1), 'ERR_RINGBRIDGE_INVALID_ARGUMENT', /release count: expected an integer count from 0/)
  r.release()
  bad(() => r.release(), 'ERR_RINGBRIDGE_INVALID_ARGUMENT', /already released/)
  bad(() => r.typeIdAt(0), 'ERR_RINGBRIDGE_INVALID_ARGUMENT', /it was released/)
  await within(k.terminate(), 10_000, 'terminate')
  bad(() => k.reserve(1), 'ERR_RINGBRIDGE_CLOSED', /reserve: the kernel is terminated/)
})

test('error frames come through a receive chunk in place, with their error', async (t) => {
  // A 40-byte payload echoed into 32-byte output slots: the kernel answers REPLY_TOO_LARGE.
  const k = (await launchOn(t, { handler: 'echo', input: bytes(), output: bytes(), capacity: 4, slotSize: 64, outputSlotSize: 32 })) as Kernel
  const c = k.reserve(2)
  c.commit(1, { size: 8 })
  const d = k.reserve(1)
  d.commit(1, { size: 40 })
  const got: [boolean, number, string | undefined][] = []
  while (got.length < 2) {
    const r = await k.nextChunk(2, { timeoutMs: 5000 })
    for (let i = 0; i < r.count; i++) got.push([r.isErrorAt(i), r.flagsAt(i), r.errorAt(i)?.code])
    r.release()
  }
  t.deepEqual(got, [
    [false, 0, undefined],
    [true, 1, 'ERR_RINGBRIDGE_KERNEL_ERROR'],
  ])
  await within(k.terminate(), 10_000, 'terminate')
})

test('chunks on a JS handler kernel (cpu: worker) and beside request()', async (t) => {
  const k = (await launchOn(t, { input: bytes(), output: bytes(), capacity: 4, slotSize: 64, cpu: (m: Uint8Array) => m })) as Kernel
  const { got, wrong } = await stream(k, 20_000, 3, 4)
  t.is(wrong, undefined)
  t.is(got, 20_000)
  await within(k.terminate(), 10_000, 'terminate')
  // Sending by chunk does not disturb request() on a kernel whose replies it does not read by chunk.
  const k2 = await launchEcho(t, 8)
  const c = k2.reserve(2)
  c.commit(2, { size: 4 })
  const reply = await k2.request(Uint8Array.of(1, 2, 3), { timeoutMs: 5000 })
  t.deepEqual([...reply], [1, 2, 3])
  t.is((await k2.receiveBatch(2, { timeoutMs: 5000 })).length + k2.tryReceiveMany().length, 2)
  await within(k2.terminate(), 10_000, 'terminate')
})

test('example chunk runs and checks its replies (npm run example -- examples/chunk)', async (t) => {
  const { stdout } = await promisify(execFile)(process.execPath, [join(__dirname, '..', 'examples', 'chunk.js')], { timeout: 60_000 })
  t.log(stdout.trim().split('\n').slice(-1)[0])
  t.regex(stdout, /wrong replies: 0/)
})

test("README's chunk section is the tested example, verbatim", (t) => {
  const root = join(__dirname, '..')
  const source = readFileSync(join(root, 'examples/chunk.ts'), 'utf8')
  const cut = source.slice(source.indexOf('// snippet-start\n') + '// snippet-start\n'.length, source.indexOf('  // snippet-end')).trimEnd()
  const dedented = cut.split('\n').map((l) => (l.startsWith('  ') ? l.slice(2) : l)).join('\n')
  const block = /<!-- snippet: examples\/chunk\.ts -->\n```ts\n([\s\S]*?)\n```/.exec(readFileSync(join(root, 'README.md'), 'utf8'))
  t.truthy(block, 'README lacks the chunk snippet block')
  t.is(block![1], dedented)
})

for (const transport of ['hybrid', 'mapped', 'dma'] as const) {
  gpuTest(`cuda ${transport}: ${GPU_MESSAGES} checksummed messages through chunks, every reply in order`, async (t) => {
    const rt = await Runtime.open({ backend: 'cuda' })
    t.teardown(() => within(rt.close(), 30_000, 'close'))
    if (rt.backend !== 'cuda') throw new Error(`expected the cuda backend, got ${rt.backend}: ${rt.backendReason}`)
    for (const capacity of [4, 65_536]) {
      const total = capacity === 4 ? Math.min(GPU_MESSAGES, 200_000) : GPU_MESSAGES
      const k = (await rt.launch({ handler: 'echo', input: bytes(), output: bytes(), capacity, slotSize: 64, transport })) as Kernel
      t.is(k.transport, transport)
      const started = Date.now()
      const { got, wrong } = await stream(k, total, capacity, capacity, 48)
      t.is(wrong, undefined)
      t.is(got, total)
      t.log(`${transport} capacity ${capacity}: ${total} in ${Date.now() - started} ms`)
      t.deepEqual((await k.terminate()).undelivered, [])
      t.is(k.stats().errors.kernel, 0)
    }
  })
}

// Replies that the event-loop pump moved into the reply queue before the first receiveChunk
// cannot go back into the ring. That first call used to hand out the later replies as if they were the first
// (a silent gap in the stream); it now says where the earlier ones are, once, and the next
// call goes on in order.
test('a chunk-only program finds every reply in its first receiveChunk, however the event loop turns fall', async (t) => {
  // reserve() before any reader keeps replies in the ring (as receiveChunk(0) does): commits
  // and turns of the event loop between them and the first receiveChunk move none into the
  // reply queue. This used to depend on timing, and failed on a slow machine.
  const k = await launchEcho(t, 16)
  let seq = 0
  for (let round = 0; round < 3; round++) {
    const c = k.reserve(5) // 15 in all: the output ring (16) holds them
    fill(c, c.count, seq, new DataView(c.first.buffer))
    seq += c.commit(c.count, { size: 8 })
    await until(() => k.stats().depth.outputRing === seq, 5000, 'replies in the ring')
    await sleep(20)
    t.is(k.stats().depth.replyQueue, 0)
  }
  const r = k.receiveChunk()
  const view = new DataView(r.first.buffer)
  t.deepEqual(Array.from({ length: r.count }, (_, i) => seqOf(r, i, view, 8)), Array.from({ length: seq }, (_, i) => i))
  r.release()
  // A queue reader coming first instead: replies go through the reply queue as before.
  const k2 = await launchEcho(t, 16)
  const c = k2.reserve(2)
  fill(c, 2, 0, new DataView(c.first.buffer))
  c.commit(2, { size: 8 })
  const got = await k2.receiveBatch(2, { timeoutMs: 5000 })
  while (got.length < 2) got.push(await k2.receive({ timeoutMs: 5000 }))
  t.deepEqual(got.map((b) => new DataView(b.buffer, b.byteOffset).getUint32(0, true)), [0, 1])
  await within(k.terminate(), 10_000, 'terminate')
  await within(k2.terminate(), 10_000, 'terminate')
})

// A reserve() keeps replies in the ring only while the program uses nothing but chunks. A
// program that sent one message by chunk and then streamed with send(), reading replies later,
// hung: the replies stayed in the full output ring, the kernel stopped taking input, and the
// sends waited for room for ever. Any other send ends the keep.
test('one chunk, then awaited send()s through a small ring and queue, replies read afterwards: nothing hangs', async (t) => {
  const k = (await launchOn(t, { handler: 'echo', input: u32, output: u32, capacity: 16, sendQueue: { capacity: 16 } })) as RingKernel<number, number>
  const c = k.reserve(1)
  new DataView(c.first.buffer).setUint32(c.first.byteOffset + c.payloadOffset, 0, true)
  c.commit(1, { size: 4 })
  for (let i = 1; i < 200; i++) await within(k.send(i), 5000, `send ${i}`)
  const got: number[] = []
  while (got.length < 200) got.push(...(await k.receiveBatch(1024, { timeoutMs: 5000 })))
  t.deepEqual(got, Array.from({ length: 200 }, (_, i) => i))
  await within(k.terminate(), 10_000, 'terminate')
})

test('nextReserve waits for a free input slot: resolves when the kernel frees one; timeout, abort, a second waiter and terminate each say so', async (t) => {
  const k = await launchEcho(t, 4)
  await within(k.deactivate(), 5000, 'deactivate')
  const full = k.reserve(4)
  t.is(full.count, 4)
  fill(full, 4, 0, new DataView(full.first.buffer))
  full.commit(4, { size: 8 })
  t.is(k.reserve(1).count, 0, 'the ring is full')
  t.is(codeOf(await t.throwsAsync(k.nextReserve(2, { timeoutMs: 50 }))), 'ERR_RINGBRIDGE_TIMEOUT')
  const aborter = new AbortController()
  const aborted = k.nextReserve(2, { signal: aborter.signal })
  aborter.abort()
  t.is((await t.throwsAsync(aborted))!.name, 'AbortError')
  const waiting = k.nextReserve(2, { timeoutMs: 10_000 })
  const second = await t.throwsAsync(k.nextReserve(1))
  t.is(codeOf(second), 'ERR_RINGBRIDGE_INVALID_ARGUMENT')
  t.regex(second!.message, /another nextReserve\(\) is waiting for room already/)
  t.true(await pendingAfter(waiting, 50), 'no room while paused')
  await within(k.activate(), 5000, 'activate')
  const room = await within(waiting, 10_000, 'nextReserve')
  t.true(room.count >= 1 && room.count <= 2, `${room.count} slots`)
  fill(room, room.count, 4, new DataView(room.first.buffer))
  const n = room.commit(room.count, { size: 8 })
  const got: number[] = []
  while (got.length < 4 + n) {
    const r = await k.nextChunk(8, { timeoutMs: 5000 })
    const view = new DataView(r.first.buffer)
    for (let i = 0; i < r.count; i++) got.push(seqOf(r, i, view, 8) as number)
    r.release()
  }
  t.deepEqual(got, Array.from({ length: 4 + n }, (_, i) => i))
  // Terminating ends a wait for room: nothing could be reserved any more.
  await within(k.deactivate(), 5000, 'deactivate')
  const again = k.reserve(4)
  again.commit(again.count, { size: 8 })
  const last = k.nextReserve(1, { timeoutMs: 10_000 })
  const done = k.terminate({ mode: 'abandon' })
  t.is(codeOf(await t.throwsAsync(last)), 'ERR_RINGBRIDGE_CLOSED')
  await within(done, 10_000, 'terminate')
  t.is(codeOf(await t.throwsAsync(k.nextReserve(1))), 'ERR_RINGBRIDGE_CLOSED')
})

test('nextReserve waits behind queued sends: they go first, in order', async (t) => {
  const k = (await launchOn(t, { handler: 'echo', input: u32, output: u32, capacity: 2, sendQueue: { capacity: 8 } })) as RingKernel<number, number>
  await within(k.deactivate(), 5000, 'deactivate')
  const sends = [0, 1, 2, 3].map((v) => k.send(v))
  t.deepEqual(await Promise.all(sends), ['sent', 'sent', 'queued', 'queued'])
  const waiting = k.nextReserve(1, { timeoutMs: 10_000 })
  await within(k.activate(), 5000, 'activate')
  const c = await within(waiting, 10_000, 'nextReserve')
  t.is(k.stats().depth.sendQueue, 0, 'the queued sends went first')
  new DataView(c.first.buffer).setUint32(c.first.byteOffset + c.payloadOffset, 4, true)
  c.commit(1, { size: 4 })
  const got: number[] = []
  while (got.length < 5) got.push(...(await k.receiveBatch(8, { timeoutMs: 5000 })))
  t.deepEqual(got, [0, 1, 2, 3, 4])
  await within(k.terminate(), 10_000, 'terminate')
})

test('replies queued before the first receiveChunk are reported, not skipped; taken first, the rest follow in order', async (t) => {
  const k = await launchEcho(t, 16)
  const c = k.reserve(4)
  fill(c, 4, 0, new DataView(c.first.buffer))
  c.commit(4, { size: 8 })
  await until(() => k.stats().processed === 4, 5000, '4 processed')
  // A reader that is not chunks: the pump moves the replies into the reply queue.
  t.deepEqual(k.tryReceiveMany(0), [])
  await until(() => k.stats().depth.replyQueue === 4, 5000, 'the pump queued the 4 replies')
  const e = t.throws(() => k.receiveChunk(8))
  t.is(codeOf(e), 'ERR_RINGBRIDGE_INVALID_ARGUMENT')
  t.regex(e!.message, /4 replies arrived before the first receiveChunk and went to the reply queue: take them first with tryReceiveMany\(\)/)
  const early = k.tryReceiveMany()
  t.deepEqual(early.map((b) => new DataView(b.buffer, b.byteOffset).getUint32(0, true)), [0, 1, 2, 3])
  const d = k.reserve(4)
  fill(d, 4, 4, new DataView(d.first.buffer))
  d.commit(4, { size: 8 })
  const r = await k.nextChunk(8, { timeoutMs: 5000 })
  const view = new DataView(r.first.buffer)
  t.deepEqual(Array.from({ length: r.count }, (_, i) => seqOf(r, i, view, 8)), [4, 5, 6, 7].slice(0, r.count))
  r.release()
  await within(k.terminate(), 10_000, 'terminate')
})
