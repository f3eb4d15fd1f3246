// ts/protocol.ts is the one TS module that reads the protocol's numbers and names from the native
// module (protocol.rs). These tests catch drift between them and the few places TS must restate a
// name as a literal union type (a public type cannot be computed from a run-time list).
import test from 'ava'

import native from '../ts/binding'
import { KERNEL_ERROR_NAMES, type BackendName, type KernelState, type LaunchOptions } from '../index'
import {
  BACKEND_NAMES,
  CONSTANT_TABLE,
  ERROR_NAMES,
  FLAG,
  FRAME,
  FRAME_HEADER_BYTES,
  HANDLER,
  KERNEL_ERROR,
  MAX_REPLIES,
  PRODUCER,
  STATE,
  STATE_NAMES,
  TERMINATE,
  TRANSPORT_NAMES,
  WAIT,
  isSkipFrame,
  readErrorRecord,
  readFrameHeader,
  readMultiHeader,
  writeErrorRecord,
  writeFrameHeader,
} from '../ts/protocol'

/** `true` only when `T` and `U` are the same union (a compile-time check). */
type Same<T, U> = [T] extends [U] ? ([U] extends [T] ? true : false) : false

// Each union, spelled as a list the compiler holds to the union (both ways), so the run-time
// comparison with the native list below covers the type.
const transports = ['auto', 'hybrid', 'mapped', 'dma', 'managed'] as const
const transportsAreTheUnion: Same<(typeof transports)[number], NonNullable<LaunchOptions<unknown, unknown>['transport']>> = true
const backends = ['auto', 'cpu', 'cuda'] as const
const backendsAreTheUnion: Same<(typeof backends)[number], BackendName> = true
const states = ['launching', 'running', 'paused', 'terminated'] as const
const statesAreTheUnion: Same<(typeof states)[number], KernelState> = true

test('the transport union is the native list of transport names', (t) => {
  t.true(transportsAreTheUnion)
  t.deepEqual([...transports], [...TRANSPORT_NAMES])
})

test('the backend union is the native list of backend names', (t) => {
  t.true(backendsAreTheUnion)
  t.deepEqual([...backends], [...BACKEND_NAMES])
})

test('the kernel state union is the native STATE_* names, in value order', (t) => {
  t.true(statesAreTheUnion)
  t.deepEqual([...states], [...STATE_NAMES])
  for (const [i, s] of states.entries()) t.is(STATE[s], i)
})

test('KERNEL_ERROR_NAMES is kernel_error::NAMES, and each KERNEL_ERROR code names itself', (t) => {
  t.deepEqual([...KERNEL_ERROR_NAMES], native.protocolConstants().kernelErrorNames)
  t.is(KERNEL_ERROR_NAMES, ERROR_NAMES)
  t.true(Object.isFrozen(KERNEL_ERROR_NAMES))
  for (const [key, code] of Object.entries(KERNEL_ERROR)) {
    t.is(KERNEL_ERROR_NAMES[code], key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`))
  }
  t.is(Object.keys(KERNEL_ERROR).length, KERNEL_ERROR_NAMES.length)
})

test('every grouped constant comes from the table, and the table has no member of a group TS lacks', (t) => {
  const table = new Map(CONSTANT_TABLE)
  const groups = { STATE_: STATE, KERNEL_ERROR_: KERNEL_ERROR, TERMINATE_: TERMINATE, WAIT_: WAIT, FLAG_: FLAG, PRODUCER_: PRODUCER, HANDLER_: HANDLER }
  for (const [prefix, group] of Object.entries(groups)) {
    const screaming = (k: string) => prefix + k.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()
    for (const [k, v] of Object.entries(group)) t.is(table.get(screaming(k)), v, screaming(k))
    const named = [...table.keys()].filter((n) => n.startsWith(prefix))
    t.deepEqual(named.sort(), Object.keys(group).map(screaming).sort(), prefix)
  }
  t.is(table.get('FRAME_HEADER_BYTES'), FRAME_HEADER_BYTES)
})

test('maxReplies is bounded by the core check, and launch validation uses that bound', async (t) => {
  t.true(Number.isInteger(MAX_REPLIES) && MAX_REPLIES > 1)
  const { Runtime, u32 } = await import('../index')
  const rt = await Runtime.open({ backend: 'cpu' })
  try {
    const launch = (maxReplies: number) => rt.launch({ source: '__device__ unsigned f() { return 0; }', entry: 'f', input: u32, output: u32, maxReplies })
    const err = await t.throwsAsync(launch(MAX_REPLIES + 1))
    t.regex(err!.message, new RegExp(`an integer from 1 to ${MAX_REPLIES}\\b`))
  } finally {
    await rt.close()
  }
})

test('the frame header, error record and multi-reply codecs round-trip at the native offsets', (t) => {
  const view = new DataView(new ArrayBuffer(64))
  writeFrameHeader(view, 16, 8, 0xbeef, FLAG.error, 2 ** 40 + 7)
  t.is(view.getUint32(16 + FRAME.length, true), 8)
  t.is(view.getUint16(16 + FRAME.typeId, true), 0xbeef)
  t.is(view.getUint16(16 + FRAME.flags, true), FLAG.error)
  t.deepEqual(readFrameHeader(view, 16), { length: 8, typeId: 0xbeef, flags: FLAG.error, correlationId: 2 ** 40 + 7 })
  const payload = 16 + FRAME_HEADER_BYTES
  writeErrorRecord(view, payload, KERNEL_ERROR.skipped, 3)
  t.deepEqual(readErrorRecord(view, payload, 8), { code: KERNEL_ERROR.skipped, detail: 3 })
  t.deepEqual(readErrorRecord(view, payload, 4), { code: 0, detail: 0 })
  t.true(isSkipFrame(view, payload, 8, FLAG.error))
  t.false(isSkipFrame(view, payload, 8, 0))
  view.setUint32(payload, 2, true)
  t.deepEqual(readMultiHeader(view, payload, 8 + 2 * 4, 4), { count: 2, fits: true })
  t.deepEqual(readMultiHeader(view, payload, 8 + 3 * 4, 4), { count: 2, fits: false })
})
