/**
 * Launching a kernel, before any message moves: checks the launch options of every stage
 * (every bad input gets a clear error before anything reaches the native side), sizes the
 * SharedArrayBuffers, constructs the native kernel (or route) and maps its control blocks,
 * refusing any that does not carry the magic, version and ring shapes asked for (L1).
 * @internal
 * @module
 */
import { join } from 'node:path'

import native = require('./binding')
import type { Schema } from './codec'
import { cudaHeader } from './cuda'
import { RingbridgeError, RingbridgeRangeError, RingbridgeTypeError, badOption, describe, fromNative } from './errors'
import { FRAME_HEADER_BYTES, MAGIC, MAX_CAPACITY, MAX_REPLIES, MAX_SLOT_SIZE, MIN_SLOT_SIZE, REGION_PAGE, TRANSPORT_NAMES, VERSION, multiFrameBytes, quotedList } from './protocol'
import { WorkerRunner } from './handler'
import type { Runner } from './host'
import { ControlBlockView, InputRing, OutputRing } from './ring'
import type { LaunchOptions } from './types'
import { MAX_TIMER_MS } from './wait'

/** The native kernel: one kernel, or a route's stages. */
export type NativeKernel = InstanceType<typeof native.NativeKernel>

/** Slot size for a schema of variable size (`bytes()`) when none is given. */
const DEFAULT_VARIABLE_SLOT = 256
const nextPow2 = (n: number) => 2 ** Math.ceil(Math.log2(Math.max(n, 1)))

/** True for an integer power of two from `min` to `max` (numbers past 2^32 included: never wrapped). */
const isPow2In = (v: unknown, min: number, max: number): v is number =>
  typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max && 2 ** Math.round(Math.log2(v)) === v

/**
 * A ring capacity as given, checked against the spec's limits before anything reaches the
 * native side (whose u32 fields would otherwise see 2^32 + 8 as 8).
 */
function checkCapacity(name: string, v: unknown): void {
  if (v !== undefined && !isPow2In(v, 1, MAX_CAPACITY)) badRange(name, `a power of two from 1 to ${MAX_CAPACITY}`, v)
}

/** `badOption` for an integer out of its range (a RangeError; a wrong type stays a TypeError). */
function badRange(name: string, expected: string, got: unknown): never {
  if (typeof got !== 'number' || !Number.isInteger(got)) badOption(name, expected, got)
  throw new RingbridgeRangeError('ERR_RINGBRIDGE_INVALID_ARGUMENT', `${name}: expected ${expected}, got ${describe(got)}`)
}

function slotFor(schema: Schema<unknown>, given: number | undefined, name: string): number {
  if (given !== undefined) {
    if (!isPow2In(given, MIN_SLOT_SIZE, MAX_SLOT_SIZE)) badRange(name, `a power of two from ${MIN_SLOT_SIZE} to ${MAX_SLOT_SIZE} bytes, header included`, given)
    return given
  }
  const payload = schema.size ?? Math.min(schema.maxSize, DEFAULT_VARIABLE_SLOT - FRAME_HEADER_BYTES)
  return Math.max(MIN_SLOT_SIZE, nextPow2(payload + FRAME_HEADER_BYTES))
}

/**
 * The output slot of a variable-size output schema when none is given: the input's `slotSize`
 * when that is given, so a reply as large as the request it answers fits (an echo of 4 KiB
 * messages with `slotSize: 4096` used to get 256-byte output slots, and every reply over 240
 * bytes came back as a REPLY_TOO_LARGE error frame). Otherwise the schema decides (slotFor).
 */
function variableOutputSlot(options: LaunchOptions<any, any>): number | undefined {
  return options.output?.size === undefined ? options.slotSize : undefined
}

/**
 * A built-in handler's message shapes against the launch's schemas, where both are fixed: a
 * mismatch is an error at launch, never replies that decode to garbage (or fail) at run time.
 */
function checkBuiltinSchemas(handler: string, input: Schema<unknown>, output: Schema<unknown>): void {
  const mismatch = (expected: string) => {
    throw new RingbridgeTypeError('ERR_RINGBRIDGE_INVALID_ARGUMENT', `schemas for the built-in '${handler}' handler: expected ${expected}, got input ${input.kind} of ${input.size ?? 'variable'} bytes and output ${output.kind} of ${output.size ?? 'variable'} bytes`)
  }
  if (handler === 'echo' && input.size !== undefined && output.size !== undefined && input.size !== output.size) {
    mismatch('an output of the input\'s size (echo replies with the request\'s bytes)')
  }
  if (handler === 'saxpy' && input.size !== undefined) {
    const n = (input.size - 4) / 8
    if (!Number.isInteger(n) || n < 0) mismatch('an input of 4 + 8n bytes (a: f32, x: n × f32, y: n × f32)')
    if (output.size !== undefined && output.size !== 4 * n) mismatch(`an output of ${4 * n} bytes (r: ${n} × f32)`)
  }
}

function checkSchema(s: unknown, name: string): void {
  const schema = s as Schema<unknown> | undefined
  if (!schema || typeof schema !== 'object' || typeof schema.encode !== 'function' || typeof schema.decode !== 'function') {
    badOption(name, 'a schema (u32, struct({...}), bytes(), …)', s)
  }
}

/** One stage's validated launch: the native options, the region layout, what runs it. */
export interface StageShape {
  shape: Parameters<typeof native.regionLayout>[0]
  layout: ReturnType<typeof native.regionLayout>
  jsHandler: boolean
  isolation: 'process' | 'thread'
  producers: 'single' | 'shared'
  typeId: number
  timeoutMs: number
}

/** Validates one kernel's launch options; `where` names a route's stage in every error. */
export function stageShape(options: LaunchOptions<unknown, unknown>, backend: string, device: number, where: string): StageShape {
  try {
    return checkStage(options, backend, device)
  } catch (e) {
    if (where !== '' && e instanceof Error) e.message = where + e.message
    throw e
  }
}

/** Validates one kernel's launch options (every public entry point's bad input gets a clear error). */
function checkStage(options: LaunchOptions<unknown, unknown>, backend: string, device: number): StageShape {
  if (options === null || typeof options !== 'object') badOption('launch options', 'an object { handler, input, output, … }', options)
  if (options.cpu !== undefined && typeof options.cpu !== 'function') badOption('cpu', 'a function (msg, ctx) => reply, or { filename, export? } naming a module that exports one', options.cpu)
  const jsHandler = backend === 'cpu' && options.cpu !== undefined
  if (jsHandler && options.handler !== undefined) badOption('handler', 'nothing: the cpu handler replaces the built-in handler', options.handler)
  if (backend !== 'cpu' && options.cpu !== undefined && options.source === undefined) {
    badOption('source', `a CUDA handler (source, entry) for the ${backend} backend: the cpu handler runs on the cpu backend only`, options.source)
  }
  const user = !jsHandler && (options.source !== undefined || options.entry !== undefined)
  if (jsHandler) {
    if (options.isolation === 'process') badOption('isolation', "'thread' (a JS handler runs in a worker thread of this process)", options.isolation)
  } else if (user) {
    if (typeof options.source !== 'string' || options.source.trim() === '') badOption('source', 'the CUDA C source of the handler', options.source)
    if (typeof options.entry !== 'string') badOption('entry', 'the name of the handler function in source', options.entry)
    if (options.handler !== undefined) badOption('handler', 'nothing: a user kernel (source, entry) replaces the built-in handler', options.handler)
  } else if (typeof options.handler !== 'string') {
    badOption('handler', `a built-in handler name (${native.builtinHandlers().join(', ')}), or source and entry`, options.handler)
  }
  checkSchema(options.input, 'input')
  checkSchema(options.output, 'output')
  const schemaHeader = user ? cudaHeader(options.input, options.output) : undefined
  const maxReplies = options.maxReplies
  if (maxReplies !== undefined) {
    if (!Number.isInteger(maxReplies) || maxReplies < 1 || maxReplies > MAX_REPLIES) badOption('maxReplies', `an integer from 1 to ${MAX_REPLIES}`, maxReplies)
    if (!user && !jsHandler) badOption('maxReplies', 'a user handler (source and entry): built-in handlers answer once', maxReplies)
  }
  const multiBytes = user && maxReplies !== undefined ? multiFrameBytes(maxReplies, options.output.size ?? 0) : 0
  const capacity = options.capacity ?? 1024
  const typeId = options.typeId ?? 1
  if (!Number.isInteger(typeId) || typeId < 0 || typeId > 0xffff) {
    throw new RingbridgeRangeError('ERR_RINGBRIDGE_INVALID_ARGUMENT', `typeId: expected an integer from 0 to 65535, got ${String(typeId)}`)
  }
  const timeoutMs = options.timeoutMs ?? 10_000
  if (options.spinMicros !== undefined && (typeof options.spinMicros !== 'number' || !(options.spinMicros >= 0) || options.spinMicros > 1e6)) {
    badOption('spinMicros', 'a number of microseconds from 0 to 1000000', options.spinMicros)
  }
  if (typeof timeoutMs !== 'number' || !(timeoutMs > 0) || timeoutMs > MAX_TIMER_MS) badOption('timeoutMs', `a number of milliseconds above 0, at most ${MAX_TIMER_MS}`, timeoutMs)
  checkCapacity('capacity', capacity)
  checkCapacity('outputCapacity', options.outputCapacity)
  const transport = options.transport ?? 'auto'
  if (!TRANSPORT_NAMES.includes(transport)) badOption('transport', quotedList(TRANSPORT_NAMES), transport)
  for (const [name, v] of [['blocks', options.blocks], ['threads', options.threads]] as const) {
    if (v !== undefined && (!Number.isInteger(v) || v < 1 || v > 0xffffffff)) badOption(name, 'a positive integer below 2^32', v)
  }
  if (options.device !== undefined && (!Number.isInteger(options.device) || options.device < 0 || options.device > 0xffffffff)) badOption('device', 'a device ordinal (a non-negative integer)', options.device)
  const producers = options.producers ?? 'single'
  if (producers !== 'single' && producers !== 'shared') badOption('producers', "'single' or 'shared'", producers)
  if (producers === 'shared' && options.isolation === 'process') badOption('isolation', "'thread' with producers 'shared' (worker threads attach to a SharedArrayBuffer)", options.isolation)
  const isolation = jsHandler || producers === 'shared' ? 'thread' : (options.isolation ?? (backend === 'cuda' ? 'process' : 'thread'))
  if (isolation !== 'process' && isolation !== 'thread') badOption('isolation', "'process' or 'thread'", isolation)
  const shape = {
    backend,
    isolation,
    hostCommand: isolation === 'process' ? [process.execPath, join(__dirname, 'kernel-host.js')] : undefined,
    transport,
    blocks: options.blocks,
    threads: options.threads,
    handler: jsHandler ? 'external' : (options.handler ?? 'user'),
    device,
    source: user ? options.source : undefined,
    entry: user ? options.entry : undefined,
    schemaHeader,
    inputCapacity: capacity,
    inputSlotSize: slotFor(options.input, options.slotSize, 'slotSize'),
    outputCapacity: options.outputCapacity ?? capacity,
    outputSlotSize: multiBytes > 0 && options.outputSlotSize === undefined ? Math.max(MIN_SLOT_SIZE, nextPow2(multiBytes + FRAME_HEADER_BYTES)) : slotFor(options.output, options.outputSlotSize ?? variableOutputSlot(options), 'outputSlotSize'),
    maxReplies: user ? maxReplies : undefined,
  }
  let layout
  try {
    layout = native.regionLayout(shape)
  } catch (e) {
    throw fromNative(e)
  }
  for (const [schema, slot, name] of [[options.input, shape.inputSlotSize, 'input'], [options.output, shape.outputSlotSize, 'output']] as const) {
    if (schema.size !== undefined && schema.size > slot - FRAME_HEADER_BYTES) {
      throw new RingbridgeRangeError(
        'ERR_RINGBRIDGE_MESSAGE_TOO_LARGE',
        `${name} schema of ${schema.size} bytes exceeds the slot payload of ${slot - FRAME_HEADER_BYTES} bytes (slot size ${slot})`,
      )
    }
  }
  if (!user && !jsHandler) checkBuiltinSchemas(options.handler!, options.input, options.output)
  return { shape, layout, jsHandler, isolation, producers, typeId, timeoutMs }
}

/**
 * What `launchRoute` accepts beyond each stage's own checks (it has checked there are two
 * stages or more): stages fed by a kernel take no
 * host-side role (a JS handler, shared producers), and each stage's output ring is the next
 * one's input ring (the native side checks the ring shapes again, before anything runs).
 */
export function checkRoute(list: readonly LaunchOptions<any, any>[], stages: readonly StageShape[]): void {
  stages.forEach((st, i) => {
    if (st.jsHandler) badOption(`route stage ${i}: cpu`, 'a built-in or CUDA handler: a route\'s kernels talk to each other without JavaScript', list[i]!.cpu)
    if (st.producers === 'shared') badOption(`route stage ${i}: producers`, "'single' (shared producers are not available for routes)", st.producers)
    if (st.isolation !== stages[0]!.isolation) badOption(`route stage ${i}: isolation`, `'${stages[0]!.isolation}', as stage 0: a route's stages share one runner`, st.isolation)
    const next = stages[i + 1]
    if (next === undefined) return
    const [o, n] = [st.shape, next.shape]
    if (o.outputCapacity !== n.inputCapacity || o.outputSlotSize !== n.inputSlotSize) {
      throw new RingbridgeRangeError(
        'ERR_RINGBRIDGE_INVALID_ARGUMENT',
        `route stage ${i}'s output ring (${o.outputCapacity} slots of ${o.outputSlotSize} B) must be stage ${i + 1}'s input ring (${n.inputCapacity} slots of ${n.inputSlotSize} B): give outputCapacity/outputSlotSize or capacity/slotSize so they match`,
      )
    }
    const [out, inp] = [list[i]!.output as Schema<unknown>, list[i + 1]!.input as Schema<unknown>]
    if (out.size !== undefined && inp.size !== undefined && out.size !== inp.size) {
      throw new RingbridgeTypeError('ERR_RINGBRIDGE_INVALID_ARGUMENT', `route stage ${i}'s output schema (${out.size} bytes) is not stage ${i + 1}'s input schema (${inp.size} bytes)`)
    }
  })
}

/**
 * Checks the launch options of one kernel (`options`) or of a route (an array: each stage, then
 * how they join): the shapes {@link RingKernel.open} launches.
 */
export function checkLaunch(options: LaunchOptions<any, any> | readonly LaunchOptions<any, any>[], backend: string, device: number): { list: readonly LaunchOptions<any, any>[]; stages: StageShape[] } {
  const route = Array.isArray(options)
  const list: readonly LaunchOptions<any, any>[] = route ? options : [options as LaunchOptions<any, any>]
  const stages = list.map((o, i) => stageShape(o, backend, route ? (o?.device ?? device) : device, route ? `route stage ${i}: ` : ''))
  if (route) checkRoute(list, stages)
  return { list, stages }
}

/**
 * The memory of each stage run in this process (`thread` isolation): a SharedArrayBuffer of
 * whole pages plus one, as the region starts at the first page boundary inside it (V8 does not
 * page-align it) and a GPU transport registers whole pages (spec §3.1). `undefined` for a stage
 * in a kernel host, whose shared memory the addon maps.
 */
export function stageMemory(stages: readonly StageShape[]): (SharedArrayBuffer | undefined)[] {
  return stages.map((st) => (st.isolation === 'thread' ? new SharedArrayBuffer(Math.ceil(st.layout.totalBytes / REGION_PAGE) * REGION_PAGE + REGION_PAGE) : undefined))
}

/**
 * Launches the native kernel (or route) off the JS thread (the addon's `launchAsync` /
 * `routeAsync`, on the libuv pool): in a kernel host under `process` isolation, or in this
 * process over `memory` (its regions are made over the SharedArrayBuffers first, on the JS
 * thread).
 */
export async function launchNativeAsync(memory: readonly (SharedArrayBuffer | undefined)[], stages: readonly StageShape[], route: boolean, doorbell: () => void): Promise<NativeKernel> {
  try {
    const memories = memory.map((sab) => (sab ? new Uint8Array(sab) : null))
    return await (route ? native.NativeKernel.routeAsync(memories, stages.map((st) => st.shape), doorbell) : native.NativeKernel.launchAsync(memories[0]!, stages[0]!.shape, doorbell))
  } catch (e) {
    throw fromNative(e)
  }
}

/** Each stage's buffer: the SharedArrayBuffer given, or the kernel host's shared memory. */
export function stageBuffers(n: NativeKernel, memory: readonly (SharedArrayBuffer | undefined)[]): ArrayBufferLike[] {
  try {
    return memory.map((sab, i) => sab ?? n.sharedMemory(i))
  } catch (e) {
    throw fromNative(e)
  }
}

/**
 * Every stage's control block, first to last, checked: the magic and version, and (L1) the ring
 * shapes the native side wrote are the ones JS lays its views out with. A disagreement (a number
 * the binding converted differently, issue #2) is refused here, not met later as a DataView
 * RangeError at the first frame past the real ring.
 */
export function controlBlocks(n: NativeKernel, buffers: readonly ArrayBufferLike[], stages: readonly StageShape[]): ControlBlockView[] {
  return buffers.map((buffer, i) => {
    const cb = new ControlBlockView(buffer, n.stageRegionOffset(i))
    if (cb.load32('magic') !== MAGIC || cb.load32('version') !== VERSION) {
      throw new RingbridgeError('ERR_RINGBRIDGE_PROTOCOL', 'the control block does not carry the expected magic and version')
    }
    const want = stages[i]!.shape
    const got = [cb.load32('input_capacity'), cb.load32('input_slot_size'), cb.load32('output_capacity'), cb.load32('output_slot_size')]
    const asked = [want.inputCapacity, want.inputSlotSize, want.outputCapacity, want.outputSlotSize]
    if (got.some((v, j) => v !== asked[j])) {
      throw new RingbridgeError('ERR_RINGBRIDGE_PROTOCOL', `the kernel's rings (capacity ${got[0]}, slot ${got[1]}; output ${got[2]}, ${got[3]}) are not the ones asked for (capacity ${asked[0]}, slot ${asked[1]}; output ${asked[2]}, ${asked[3]})`)
    }
    return cb
  })
}

/** Shared-input mode (`producers: 'shared'`): the producers' claim word and the buffer they attach to. */
export interface SharedInput {
  claim: SharedArrayBuffer
  buffer: SharedArrayBuffer
  base: number
  inputOffset: number
  /** `input_tail` at launch: what the producers claim from. */
  start: number
}

/** A launched kernel as JavaScript runs it: control blocks, the host's ring ends, the runner. */
export interface MappedKernel {
  /** Every stage's control block, first to last. */
  cbs: ControlBlockView[]
  /** The input ring's producer end (a route's first stage). */
  input: InputRing
  /** The output ring's consumer end (a route's last stage). */
  output: OutputRing
  shared: SharedInput | undefined
  /** Wakes and joins the kernel's runner: the native kernel, or the worker of a JS handler. */
  runner: Runner
  /** The worker of a JS handler (`cpu:`). */
  worker: WorkerRunner | undefined
}

/**
 * Maps a launched kernel in JavaScript: checks its control blocks ({@link controlBlocks}), lays
 * the host's ring ends over its memory, makes the shared producers' claim word, and starts the
 * worker of a JS handler. Throws on a disagreement; the caller stops the kernel then.
 */
export function mapKernel(n: NativeKernel, buffers: readonly ArrayBufferLike[], stages: readonly StageShape[], options: LaunchOptions<any, any>, doorbell: () => void): MappedKernel {
  const cbs = controlBlocks(n, buffers, stages)
  const first = stages[0]!
  const last = stages[stages.length - 1]!
  const buffer = buffers[0]!
  const base = n.stageRegionOffset(0)
  const outBase = n.stageRegionOffset(stages.length - 1)
  const { shape, layout } = first
  const input = new InputRing(buffer, { slotsOffset: base + layout.inputOffset, capacity: shape.inputCapacity, slotSize: shape.inputSlotSize }, cbs[0]!)
  const output = new OutputRing(buffers[buffers.length - 1]!, { slotsOffset: outBase + last.layout.outputOffset, capacity: last.shape.outputCapacity, slotSize: last.shape.outputSlotSize }, cbs[cbs.length - 1]!)
  let shared: SharedInput | undefined
  if (first.producers === 'shared') {
    const claim = new SharedArrayBuffer(8)
    const start = cbs[0]!.load64('input_tail')
    new BigUint64Array(claim)[0] = BigInt(start)
    shared = { claim, buffer: buffer as SharedArrayBuffer, base, inputOffset: layout.inputOffset, start }
  }
  if (first.jsHandler) {
    const ringShape = { base, inputOffset: layout.inputOffset, outputOffset: layout.outputOffset, inCapacity: shape.inputCapacity, inSlot: shape.inputSlotSize, outCapacity: shape.outputCapacity, outSlot: shape.outputSlotSize }
    const w = new WorkerRunner(buffer as SharedArrayBuffer, ringShape, options.input, options.output, options.cpu!, cbs[0]!, doorbell)
    return { cbs, input, output, shared, worker: w, runner: { wake: () => w.wake(), join: () => w.join(), joinAsync: async () => w.join() } }
  }
  return { cbs, input, output, shared, worker: undefined, runner: { wake: () => n.wake(), join: () => n.join(), joinAsync: () => n.joinAsync() } }
}

/** Stops a kernel whose launch failed after the native side started it. */
export function abortLaunch(n: NativeKernel): void {
  try {
    n.join()
  } catch {
    // The launch error is what the caller needs; a join error after it says nothing more.
  }
}
