/**
 * The kernel side of the protocol in JavaScript, for handlers written in JS (`cpu:` on the cpu
 * backend): runs in a worker thread over the kernel's SharedArrayBuffer, the same rings and
 * steps as the native dispatch loop (spec §5, K1–K8): take a batch of input frames, answer each
 * with one output frame (a reply, or an error frame), publish the output tail, then release the
 * input, then ring the host if it waits. Sleeps with the D1 handshake on `kernel_sleeping`; the
 * host wakes it with `Atomics.notify`.
 * @internal
 * @module
 */
import { extname } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { parentPort, workerData } from 'node:worker_threads'

import { schemaFrom, type SchemaDescriptor } from './codec'
import { describe } from './errors'
import { FaultLog, faultText, type FaultText } from './handler'
import { FIRST_HANDLER_CODE, FLAG, FRAME, FRAME_HEADER_BYTES, KERNEL_ERROR, STATE, TERMINATE, readCorrelationId, writeErrorRecord, writeFrameHeader } from './protocol'
import { ControlBlockView } from './ring'

/** Where the kernel's rings lie in its buffer. */
export interface RingShape {
  base: number
  inputOffset: number
  outputOffset: number
  inCapacity: number
  inSlot: number
  outCapacity: number
  outSlot: number
}

/**
 * Where the worker gets its handler: the source text of a function (rebuilt with `new
 * Function`), or a module file to load (an absolute path) and the export to take from it.
 */
export type HandlerSpec = { source: string } | { filename: string; export: string | undefined }

/** What the host hands the worker. */
export interface WorkerKernelData extends RingShape {
  buffer: SharedArrayBuffer
  input: SchemaDescriptor
  output: SchemaDescriptor
  handler: HandlerSpec
  /** The {@link FaultLog}'s buffer: the handler's exceptions, for the host to read. */
  faults: SharedArrayBuffer
}

/**
 * What the worker posts to the host: `bell` (a doorbell), `{ ready }` once the handler is built
 * (before the first message), `{ loadError }` when it could not be (the worker then ends,
 * its kernel terminated), `{ fault }` with the first handler exception's text.
 */
export type WorkerReport = 'bell' | { ready: true } | { loadError: string; cause?: FaultText } | { fault: string }

/** `import()` as Node runs it: TypeScript would compile a literal `import()` to `require` here. */
// eslint-disable-next-line @typescript-eslint/no-implied-eval
const importModule = new Function('specifier', 'return import(specifier)') as (specifier: string) => Promise<unknown>

/**
 * Loads a handler module and takes its export: `require` for `.js`/`.cjs` (and `import()` when
 * that says ERR_REQUIRE_ESM), `import()` for `.mjs`; export `name` (default `default`, then the
 * module itself if it is a function). Throws a {@link ModuleHandlerError} naming the file, the
 * export and what was found when that is not a function.
 */
export async function loadHandlerModule(filename: string, name: string | undefined): Promise<Function> {
  const path = filename.startsWith('file:') ? fileURLToPath(filename) : filename
  let mod: unknown
  if (extname(path) === '.mjs') mod = await importModule(pathToFileURL(path).href)
  else {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      mod = require(path)
    } catch (e) {
      if ((e as { code?: unknown })?.code !== 'ERR_REQUIRE_ESM') throw e
      mod = await importModule(pathToFileURL(path).href)
    }
  }
  const exportName = name ?? 'default'
  const exports = (mod !== null && (typeof mod === 'object' || typeof mod === 'function') ? mod : {}) as Record<string, unknown>
  let fn = exports[exportName]
  if (fn === undefined && exportName === 'default' && typeof mod === 'function') fn = mod
  if (typeof fn !== 'function') {
    const names = Object.keys(exports).filter((k) => k !== '__esModule')
    const has = names.length === 0 ? 'it exports nothing' : `its exports: ${names.slice(0, 20).join(', ')}${names.length > 20 ? ', …' : ''}`
    throw new ModuleHandlerError(`cpu: expected export "${exportName}" of ${path} to be a function (msg, ctx) => reply, found ${describe(fn)} (${has})`)
  }
  return fn as Function
}

/** A handler module whose export is not a function (the launch fails with its message). */
export class ModuleHandlerError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'ModuleHandlerError'
  }
}

const MAX_BATCH = 1024
const SLEEP_MS = 50

/** Builds the handler the host described: from its source text, or from its module. */
async function buildHandler(spec: HandlerSpec): Promise<Function> {
  // eslint-disable-next-line @typescript-eslint/no-implied-eval
  if ('source' in spec) return new Function(`return (${spec.source})`)() as Function
  return loadHandlerModule(spec.filename, spec.export)
}

/** Builds the handler, says so (or why not: the kernel is then terminated), and runs. */
async function main(d: WorkerKernelData): Promise<void> {
  let handler: Function
  try {
    handler = await buildHandler(d.handler)
  } catch (e) {
    const cb = new ControlBlockView(d.buffer, d.base)
    const text = faultText(e)
    const where = 'filename' in d.handler ? d.handler.filename : 'the cpu handler'
    const loadError = e instanceof ModuleHandlerError ? e.message : `cpu: cannot load ${where}: ${text.name}: ${text.message}`
    // Terminated before anyone waits on the worker's exit event: a join sees it at once.
    if (cb.load32('error_code') === KERNEL_ERROR.none) cb.store32('error_code', KERNEL_ERROR.handlerFault)
    cb.store32('state', STATE.terminated)
    parentPort!.postMessage({ loadError, cause: text } satisfies WorkerReport)
    parentPort!.postMessage('bell' satisfies WorkerReport)
    return
  }
  parentPort!.postMessage({ ready: true } satisfies WorkerReport)
  run(d, handler as (msg: unknown, ctx: object) => unknown)
}

function run(d: WorkerKernelData, handler: (msg: unknown, ctx: object) => unknown): void {
  const cb = new ControlBlockView(d.buffer, d.base)
  const u32 = cb.u32
  const u64 = cb.u64
  const ix = {
    inHead: cb.index64('input_head'),
    inTail: cb.index64('input_tail'),
    outHead: cb.index64('output_head'),
    outTail: cb.index64('output_tail'),
    processed: cb.index64('messages_processed'),
    state: cb.index32('state'),
    active: cb.index32('active'),
    terminate: cb.index32('terminate'),
    sleeping: cb.index32('kernel_sleeping'),
    waiting: cb.index32('host_waiting'),
    errorCode: cb.index32('error_code'),
    errorCount: cb.index32('error_count'),
  }
  const dv = new DataView(d.buffer)
  const input = schemaFrom(d.input)
  const output = schemaFrom(d.output)
  const faults = new FaultLog(d.faults)
  const state: Record<string, unknown> = {}
  const fail = (code: number, detail = 0): never => {
    if (!Number.isInteger(code) || code < FIRST_HANDLER_CODE || code > 0xffffffff) throw new RangeError(`ctx.fail: code ${code} is not an integer from ${FIRST_HANDLER_CODE} to 4294967295`)
    throw Object.assign(new Error(`handler error ${code}`), { kernelCode: code, detail })
  }
  let reportedFault = false
  const bell = () => parentPort!.postMessage('bell')
  const setState = (s: number) => {
    if ((Atomics.load(u32, ix.state) >>> 0) !== s) {
      Atomics.store(u32, ix.state, s)
      bell()
    }
  }
  const recordError = (code: number) => {
    if (Atomics.load(u32, ix.errorCode) === KERNEL_ERROR.none) Atomics.store(u32, ix.errorCode, code)
    Atomics.add(u32, ix.errorCount, 1)
  }
  /** D1: announce sleep, re-check, wait for the host's notify (bounded). */
  const sleep = (ready: () => boolean, ms: number) => {
    Atomics.store(u32, ix.sleeping, 1)
    if (!ready()) Atomics.wait(u32, ix.sleeping, 1, ms)
    Atomics.store(u32, ix.sleeping, 0)
  }
  let head = Number(Atomics.load(u64, ix.inHead))
  let outTail = Number(Atomics.load(u64, ix.outTail))
  let processed = Number(Atomics.load(u64, ix.processed))
  let published = outTail
  /** The command the `terminate` word holds (§9): a value that is neither DRAIN nor ABANDON is NONE. */
  const command = (): number => cb.terminateCommand()
  const abandoned = () => command() === TERMINATE.abandon

  /** P4 on the output ring, then K7: ring the host if it waits (seq_cst store, then load). */
  const publishOutput = () => {
    if (published === outTail) return
    Atomics.store(u64, ix.outTail, BigInt(outTail))
    published = outTail
    if (Atomics.load(u32, ix.waiting) !== 0) bell()
  }

  /**
   * K5–K7 after a batch: P4 on the output ring, C4 on the input ring, then one K7 check of
   * `host_waiting` after both stores. The check must come after the input release: a host
   * waiting for input room (WAIT_INPUT, H7) stores its bits and then re-reads the input head;
   * ringing before the head store let the host look, see no room, and sleep on a head that
   * moved a moment later (a lost wake-up that cost a second per gap). Seq_cst stores and
   * loads on both sides make it the store-then-load handshake of loom's `h7_k7_*` models.
   */
  const finishBatch = () => {
    const outMoved = published !== outTail
    if (outMoved) {
      Atomics.store(u64, ix.outTail, BigInt(outTail))
      published = outTail
    }
    const inMoved = Number(Atomics.load(u64, ix.inHead)) !== head
    if (inMoved) Atomics.store(u64, ix.inHead, BigInt(head))
    if ((outMoved || inMoved) && Atomics.load(u32, ix.waiting) !== 0) bell()
  }

  /**
   * Reserves the next output slot (P2), waiting while the ring is full — after publishing what
   * is staged, so the host can make room — and writes one frame with `write`. False when the
   * kernel is abandoned meanwhile (the frame is dropped: nobody will read it).
   */
  const emit = (write: (out: number) => void): boolean => {
    while (outTail - Number(Atomics.load(u64, ix.outHead)) >= d.outCapacity) {
      publishOutput()
      if (abandoned()) return false
      sleep(() => outTail - Number(Atomics.load(u64, ix.outHead)) < d.outCapacity || abandoned(), 1)
    }
    write(d.base + d.outputOffset + (outTail % d.outCapacity) * d.outSlot)
    outTail++
    return true
  }

  const emitReply = (value: unknown, typeId: number, correlation: bigint): boolean =>
    emit((out) => {
      let written: number
      try {
        written = output.encode(dv, out + FRAME_HEADER_BYTES, value, d.outSlot - FRAME_HEADER_BYTES, 'reply')
      } catch (e) {
        // A reply that does not fit its schema is the handler's fault, answered as such.
        reportFault(e, correlation)
        writeError(out, KERNEL_ERROR.handlerFault, 0, typeId, correlation)
        return
      }
      writeFrameHeader(dv, out, written, typeId, 0, correlation)
    })

  const writeError = (out: number, code: number, detail: number, typeId: number, correlation: bigint) => {
    const length = writeErrorRecord(dv, out + FRAME_HEADER_BYTES, code, detail)
    writeFrameHeader(dv, out, length, typeId, FLAG.error, correlation)
    recordError(code)
  }

  /**
   * Records a handler exception for the message of `correlation` — in the fault log, before its
   * error frame is written, so the host finds it with the frame — and posts the first one's
   * text (`kernel.handlerFault`).
   */
  const reportFault = (e: unknown, correlation: bigint) => {
    const text = faultText(e)
    faults.write(correlation, text)
    if (reportedFault) return
    reportedFault = true
    parentPort!.postMessage({ fault: text.message } satisfies WorkerReport)
  }

  /**
   * K3 for the input frame at `position`: decode, run the handler, emit what it answers — a
   * reply, nothing, several (`ctx.reply`), later (`ctx.defer`), or an error frame. The input is
   * decoded into a fresh value first, so its slot may be released before a deferred answer.
   * False when the kernel was abandoned while waiting for output room.
   */
  const serve = (position: number): boolean => {
    const slot = d.base + d.inputOffset + (position % d.inCapacity) * d.inSlot
    const length = dv.getUint32(slot + FRAME.length, true)
    const typeId = dv.getUint16(slot + FRAME.typeId, true)
    const correlation = readCorrelationId(dv, slot)
    const error = (code: number, detail: number) => emit((out) => writeError(out, code, detail, typeId, correlation))
    if (length > d.inSlot - FRAME_HEADER_BYTES) return error(KERNEL_ERROR.badFrame, length)
    if (dv.getUint16(slot + FRAME.flags, true) & FLAG.error) {
      // §3.4: an error frame is not a message for the handler (a shared producer's skip frame,
      // §15, or an earlier stage's error): copied to the output unchanged, no error counted,
      // as the native dispatch and the CUDA kernel do.
      if (length > d.outSlot - FRAME_HEADER_BYTES) return error(KERNEL_ERROR.replyTooLarge, length)
      const frame = FRAME_HEADER_BYTES + length
      return emit((out) => new Uint8Array(d.buffer, out, frame).set(new Uint8Array(d.buffer, slot, frame)))
    }
    let msg: unknown
    try {
      msg = input.decode(dv, slot + FRAME_HEADER_BYTES, length)
    } catch {
      return error(KERNEL_ERROR.badPayload, length)
    }
    let ok = true
    const ctx = {
      correlationId: correlation,
      typeId,
      state,
      fail,
      reply: (value: unknown) => {
        ok = emitReply(value, typeId, correlation) && ok
      },
      defer: () => {
        let done = false
        return (value: unknown) => {
          if (done) throw new Error('a deferred reply is given once')
          done = true
          emitReply(value, typeId, correlation)
        }
      },
    }
    try {
      const reply = handler(msg, ctx)
      if (reply !== undefined) ok = emitReply(reply, typeId, correlation) && ok
    } catch (e) {
      const err = e as { kernelCode?: unknown; detail?: unknown }
      if (typeof err?.kernelCode === 'number' && err.kernelCode >= FIRST_HANDLER_CODE) {
        return error(err.kernelCode, typeof err.detail === 'number' ? err.detail >>> 0 : 0) && ok
      }
      reportFault(e, correlation)
      return error(KERNEL_ERROR.handlerFault, 0) && ok
    }
    return ok
  }
  setState(STATE.running)
  for (;;) {
    const terminate = command()
    if (terminate === TERMINATE.abandon) break
    if (Atomics.load(u32, ix.active) === 0 && terminate === TERMINATE.none) {
      setState(STATE.paused)
      sleep(() => Atomics.load(u32, ix.active) !== 0 || command() !== TERMINATE.none, SLEEP_MS)
      continue
    }
    setState(STATE.running)
    const tail = Number(Atomics.load(u64, ix.inTail))
    if (tail === head) {
      if (terminate === TERMINATE.drain) break
      sleep(() => Number(Atomics.load(u64, ix.inTail)) !== head || command() !== TERMINATE.none || Atomics.load(u32, ix.active) === 0, SLEEP_MS)
      continue
    }
    const batch = Math.min(tail - head, MAX_BATCH)
    // A message whose answer could not be emitted (abandoned while the output was full) is
    // not taken: it stays in the ring and terminate reports it as undelivered.
    let n = 0
    while (n < batch && serve(head + n)) n++
    head += n
    processed += n
    Atomics.store(u64, ix.processed, BigInt(processed))
    // P4 on output before C4 on input: the host never sees an input slot free before the
    // replies the handler gave for it.
    finishBatch()
  }
  publishOutput()
  Atomics.store(u32, ix.state, STATE.terminated)
  bell()
}

if (parentPort !== null && workerData !== undefined) void main(workerData as WorkerKernelData)
