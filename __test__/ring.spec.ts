// The host's ring ends on their own (ts/ring.ts), over a SharedArrayBuffer laid out as a region:
// the batch paths of the struct stream (InputRing.stageMany, OutputRing.takePlain) against the
// per-message path they replace, at positions past 2^32 and near 2^53, across the wrap; and the
// send queue of runs in front of the input ring (ts/send-queue.ts) against a list of messages.
import test from 'ava'
import fc from 'fast-check'

import { BatchPath, bool, f64, i16, struct, u32, u8, type Schema } from '../ts/codec'
import { CONTROL_BLOCK_BYTES, FLAG, FRAME_HEADER_BYTES, readFrameHeader, writeFrameHeader } from '../ts/protocol'
import { ControlBlockView, InputRing, OutputRing } from '../ts/ring'
import { SendQueue, run, type Queued } from '../ts/send-queue'
import { codeOf } from './helpers'

const Msg = struct({ seq: u32, pad: u8, neg: i16, value: f64, ok: bool })
type Msg = { seq: number; pad: number; neg: number; value: number; ok: boolean }
const SLOT = 48 // 16 B header + 24 B payload, rounded up to 16

/** A region of one ring of `capacity` slots whose indices (head and tail of both rings) start at `position`. */
function region(capacity: number, position: number) {
  const sab = new SharedArrayBuffer(CONTROL_BLOCK_BYTES + capacity * SLOT)
  const cb = new ControlBlockView(sab, 0)
  for (const name of ['input_head', 'input_tail', 'output_head', 'output_tail']) Atomics.store(cb.u64, cb.index64(name), BigInt(position))
  const place = { slotsOffset: CONTROL_BLOCK_BYTES, capacity, slotSize: SLOT }
  return { sab, cb, input: new InputRing(sab, place, cb), output: new OutputRing(sab, place, cb), slots: () => new Uint8Array(sab, CONTROL_BLOCK_BYTES) }
}

// The last leaves room for the most a property stages (12 batches of up to 64).
const POSITIONS = [0, 3, 2 ** 31 - 2, 2 ** 32 - 3, 2 ** 40 + 5, Number.MAX_SAFE_INTEGER - 12 * 64]
const message = (k: number): Msg => ({ seq: k >>> 0, pad: k & 0xff, neg: -(k & 0x7fff), value: k / 3, ok: (k & 1) === 1 })

test('stageMany writes the bytes stageMessage writes, frame by frame, across the wrap and past 2^32', (t) => {
  fc.assert(
    fc.property(fc.constantFrom(2, 4, 8, 64), fc.constantFrom(...POSITIONS), fc.array(fc.integer({ min: 0, max: 64 }), { minLength: 1, maxLength: 12 }), fc.integer({ min: 0, max: 2 ** 52 }), (capacity, position, sizes, firstId) => {
      const batch = region(capacity, position)
      const single = region(capacity, position)
      let id = firstId
      for (const size of sizes) {
        const count = Math.min(size, capacity)
        const messages = Array.from({ length: count }, (_, i) => message(id + i))
        batch.input.stageMany(7, id, Msg, messages, count, new BatchPath())
        for (let i = 0; i < count; i++) single.input.stageMessage(7, id + i, Msg, messages[i]!)
        t.is(batch.input.next, single.input.next)
        t.deepEqual(batch.slots(), single.slots())
        // The last frame staged is where the position says, with its id.
        if (count > 0) {
          const last = readFrameHeader(batch.input.view, batch.input.slotAt(batch.input.next - 1))
          t.is(last.correlationId, id + count - 1)
          t.is(last.length, Msg.size)
          t.is(last.typeId, 7)
        }
        id += count
        batch.input.published = single.input.published = batch.input.next
        // Consumed at once, so the next batch has the ring's room.
        Atomics.store(batch.cb.u64, batch.cb.index64('input_head'), BigInt(batch.input.next))
        Atomics.store(single.cb.u64, single.cb.index64('input_head'), BigInt(single.input.next))
      }
    }),
    { numRuns: 150 },
  )
})

test('stageMany: a bad message stages nothing of its batch and is named by its index; chunks reserved before are stale', (t) => {
  const { input } = region(8, 2 ** 32 - 2)
  const before = input.next
  const generation = input.generation
  const messages: unknown[] = [message(1), message(2), { seq: 3, pad: 300, neg: 0, value: 0, ok: true }, message(4)]
  const e = t.throws(() => input.stageMany(1, 10, Msg as Schema<unknown>, messages, 4, new BatchPath()))
  t.is(codeOf(e), 'ERR_RINGBRIDGE_INVALID_MESSAGE')
  t.regex(e!.message, /^messages\[2\]\.pad: 300 is out of range for u8/)
  t.is(input.next, before, 'next did not move')
  t.true(input.generation > generation)
  input.stageMany(1, 10, Msg, [message(1)], 1, new BatchPath())
  t.is(input.next, before + 1)
})

test('the input ring refuses positions past 2^53 - 1 on every write path, staging nothing', (t) => {
  const limit = Number.MAX_SAFE_INTEGER
  const { input } = region(8, limit - 3)
  const stageMany = (n: number) => input.stageMany(1, 0, Msg, Array.from({ length: n }, (_, k) => message(k)), n, new BatchPath())
  for (const [what, write] of [
    ['stageMany', stageMany],
    ['stageRaw', (n: number) => input.stageRaw(1, 0, new Uint8Array(Msg.size * n), Msg.size, n)],
    ['stageFrames', (n: number) => input.stageFrames(new Uint8Array(SLOT * n), 0, n, SLOT)],
    ['commitChunk', (n: number) => input.commitChunk(n, Msg.size, 1)],
  ] as const) {
    const e = t.throws(() => write(4), undefined, what)
    t.is(codeOf(e), 'ERR_RINGBRIDGE_PROTOCOL', what)
    t.regex(e!.message, /2\^53/, what)
    t.is(input.next, limit - 3, `${what} staged nothing`)
  }
  stageMany(3)
  t.is(input.next, limit, 'the last three positions below 2^53 - 1 are usable')
  const e = t.throws(() => input.stageMessage(1, 0, Msg, message(0)))
  t.is(codeOf(e), 'ERR_RINGBRIDGE_PROTOCOL')
})

/** Writes reply frames at `output`'s positions from its `next` on: kinds 'plain', 'error', 'multi', 'short' (a length the schema refuses), 'long' (past the slot). */
function writeReplies(out: OutputRing, kinds: readonly string[], firstId: number): void {
  kinds.forEach((kind, i) => {
    const at = out.slotAt(out.next + i)
    const flags = kind === 'error' ? FLAG.error : kind === 'multi' ? FLAG.multi : 0
    const length = kind === 'short' ? Msg.size - 8 : kind === 'long' ? SLOT : Msg.size
    writeFrameHeader(out.view, at, length, 1, flags, firstId + i)
    if (kind === 'plain') Msg.encode(out.view, at + FRAME_HEADER_BYTES, message(firstId + i), SLOT - FRAME_HEADER_BYTES)
  })
}

test('takePlain takes the run of plain replies, stops at the first other frame, and leaves no hole in the array', (t) => {
  const kind = fc.constantFrom('plain', 'plain', 'plain', 'plain', 'error', 'multi', 'short', 'long', 'claimed')
  fc.assert(
    fc.property(fc.constantFrom(2, 4, 16), fc.constantFrom(...POSITIONS), fc.array(kind, { minLength: 1, maxLength: 16 }), fc.integer({ min: 0, max: 3 }), (capacity, position, kinds, already) => {
      kinds = kinds.slice(0, capacity)
      const { output } = region(capacity, position)
      const firstId = 1000
      writeReplies(output, kinds.map((k) => (k === 'claimed' ? 'plain' : k)), firstId)
      const claimedIds = new Set(kinds.flatMap((k, i) => (k === 'claimed' ? [firstId + i] : [])))
      const out: Msg[] = Array.from({ length: already }, (_, k) => message(-1 - k))
      const took = output.takePlain(Msg, out, kinds.length, claimedIds.size === 0 ? undefined : (id) => claimedIds.has(id))
      const run = kinds.findIndex((k) => k !== 'plain')
      const expected = run < 0 ? kinds.length : run
      t.is(took, expected)
      t.is(output.next, position + expected)
      t.is(out.length, already + expected)
      t.is(Object.keys(out).length, out.length, 'no holes')
      t.deepEqual(out.slice(already), Array.from({ length: expected }, (_, i) => message(firstId + i)))
    }),
    { numRuns: 300 },
  )
})

test('takePlain takes a whole ring in one call, wrapping past 2^32', (t) => {
  const capacity = 64
  const { output } = region(capacity, 2 ** 32 - 10)
  writeReplies(output, Array.from({ length: capacity }, () => 'plain'), 5)
  const out: Msg[] = []
  t.is(output.takePlain(Msg, out, capacity, undefined), capacity)
  t.deepEqual(out, Array.from({ length: capacity }, (_, i) => message(5 + i)))
  t.is(output.next, 2 ** 32 - 10 + capacity)
})

test('the send queue of runs: length, room, take and remove agree with a list of its messages', (t) => {
  const SIZE = 32
  const op = fc.oneof(
    fc.record({ kind: fc.constant('push' as const), count: fc.integer({ min: 1, max: 9 }) }),
    fc.record({ kind: fc.constant('take' as const), n: fc.integer({ min: 1, max: 12 }) }),
    fc.record({ kind: fc.constant('remove' as const), pick: fc.nat() }),
    fc.record({ kind: fc.constant('drain' as const) }),
  )
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 20 }), fc.array(op, { maxLength: 60 }), (capacity, ops) => {
      const q = new SendQueue({ capacity, policy: 'block' })
      const model: number[] = [] // ids, oldest first
      const frame = new Uint8Array(0)
      let nextId = 1
      // The messages of a run, as ids, checked against the frame offsets they claim.
      const ids = (r: Queued) => Array.from({ length: r.count }, (_, i) => {
        t.is(r.at + i * r.size, (r.id + i) * SIZE, 'frame i of a run is i frames after its first')
        return r.id + i
      })
      for (const o of ops) {
        if (o.kind === 'push') {
          const count = Math.min(o.count, q.room)
          if (count === 0) continue
          q.push(run(nextId, frame, nextId * SIZE, SIZE, count))
          for (let i = 0; i < count; i++) model.push(nextId++)
        } else if (o.kind === 'take') {
          const r = q.take(o.n)
          if (model.length === 0) t.is(r, undefined)
          else {
            t.true(r!.count >= 1 && r!.count <= o.n)
            t.deepEqual(ids(r!), model.splice(0, r!.count))
          }
        } else if (o.kind === 'remove') {
          // Only single messages are withdrawn (a send or a request): remove by id.
          const id = model.length === 0 ? -1 : model[o.pick % model.length]!
          const r = q.remove((x) => x.count === 1 && x.id === id)
          if (r !== undefined) model.splice(model.indexOf(id), 1)
        } else {
          t.deepEqual(q.drain().flatMap(ids), model.splice(0))
        }
        t.is(q.length, model.length)
        t.is(q.room, Math.max(0, capacity - model.length))
        t.is(q.full, model.length >= capacity)
      }
    }),
    { numRuns: 300 },
  )
})
