// The packed streaming path: raw payloads packed back to back, one publish per call.
import test from 'ava'

import { bytes } from '../index'
import { codeOf, launchOn, within } from './helpers'

test('trySendPacked / tryReceivePacked stream 200 000 payloads in order, byte for byte', async (t) => {
  const k = await launchOn(t, { handler: 'echo', input: bytes(48), output: bytes(48), capacity: 1024, slotSize: 64 })
  const SIZE = 48
  const TOTAL = 200_000
  const BATCH = 512
  const out = new Uint8Array(SIZE * 4096)
  const packed = new Uint8Array(SIZE * BATCH)
  const view = new DataView(packed.buffer)
  let sent = 0
  let got = 0
  const deadline = Date.now() + 60_000
  while (got < TOTAL) {
    if (sent < TOTAL) {
      const n = Math.min(BATCH, TOTAL - sent)
      for (let i = 0; i < n; i++) {
        view.setUint32(i * SIZE, sent + i, true)
        view.setUint32(i * SIZE + 44, (sent + i) ^ 0xa5a5a5a5, true)
      }
      sent += k.trySendPacked(packed, SIZE, n)
    }
    const r = k.tryReceivePacked(out, SIZE)
    const ov = new DataView(out.buffer)
    for (let i = 0; i < r; i++, got++) {
      if (ov.getUint32(i * SIZE, true) !== got || ov.getUint32(i * SIZE + 44, true) !== (got ^ 0xa5a5a5a5) >>> 0) {
        t.fail(`reply ${got} is wrong`)
        return
      }
    }
    if (r === 0) await new Promise((res) => setImmediate(res))
    if (Date.now() > deadline) t.fail(`stalled at ${got} of ${TOTAL}`)
  }
  t.is(got, TOTAL)
  t.is(k.stats().replied, TOTAL)
  await within(k.terminate(), 10_000, 'terminate')
})

test('packed calls check their arguments', async (t) => {
  const k = await launchOn(t, { handler: 'echo', input: bytes(), output: bytes(), slotSize: 64 })
  t.is(codeOf(t.throws(() => k.trySendPacked(new Uint8Array(100), 49))), 'ERR_RINGBRIDGE_MESSAGE_TOO_LARGE')
  t.is(codeOf(t.throws(() => k.trySendPacked(new Uint8Array(10), 4, 3))), 'ERR_RINGBRIDGE_INVALID_ARGUMENT')
  t.is(codeOf(t.throws(() => k.trySendPacked([1, 2] as unknown as Uint8Array, 1))), 'ERR_RINGBRIDGE_INVALID_ARGUMENT')
  t.is(codeOf(t.throws(() => k.tryReceivePacked(new Uint8Array(8), 0))), 'ERR_RINGBRIDGE_INVALID_ARGUMENT')
  // A reply longer than the packed size is an error, not a truncation.
  t.is(k.trySendPacked(new Uint8Array(16), 16), 1)
  const out = new Uint8Array(64)
  let error: unknown
  const end = Date.now() + 5000
  while (!error && Date.now() < end) {
    try {
      if (k.tryReceivePacked(out, 8) === 0) await new Promise((r) => setTimeout(r, 1))
    } catch (e) {
      error = e
    }
  }
  t.is(codeOf(error), 'ERR_RINGBRIDGE_PROTOCOL')
  await within(k.terminate(), 10_000, 'terminate')
})
