// Devices of a runtime (runs in CI on the cpu backend; the GPU suite covers cuda in gpu.spec):
// `Runtime.open({ devices })` and `launch({ device })` accept only devices that exist here.
import test from 'ava'

import { Runtime, u32 } from '../index'
import { codeOf, within } from './helpers'

test('the cpu backend has one device, 0; other devices are refused, saying what exists', async (t) => {
  const rt = await Runtime.open({ backend: 'cpu' })
  t.teardown(() => within(rt.close(), 15_000, 'close'))
  t.deepEqual(rt.devices, [0])
  t.deepEqual((await Runtime.open({ backend: 'cpu', devices: [0] })).devices, [0])
  const k = await rt.launch({ handler: 'echo', input: u32, output: u32, device: 0 })
  t.is(k.device, 0)
  t.is(await k.request(5), 5)
  const one = await t.throwsAsync(Runtime.open({ backend: 'cpu', devices: [1] }))
  t.is(codeOf(one), 'ERR_RINGBRIDGE_INVALID_ARGUMENT')
  t.regex(one!.message, /devices: 1 is not a device of the cpu backend here \(1 present: 0\)/)
  t.regex((await t.throwsAsync(Runtime.open({ backend: 'cpu', devices: [] })))!.message, /devices: expected 'all' or a non-empty array/)
  t.regex((await t.throwsAsync(Runtime.open({ backend: 'cpu', devices: [0, 0] })))!.message, /devices: expected distinct device ordinals/)
  t.regex((await t.throwsAsync(Runtime.open({ backend: 'cpu', devices: 'gpu0' as never })))!.message, /devices: expected 'all' or a non-empty array/)
  const launch = await t.throwsAsync(rt.launch({ handler: 'echo', input: u32, output: u32, device: 1 }))
  t.is(codeOf(launch), 'ERR_RINGBRIDGE_INVALID_ARGUMENT')
  t.regex(launch!.message, /device: expected one of this runtime's devices \(0\)/)
})
