/**
 * Handlers written in JavaScript (`cpu:` on the cpu backend): they run in a worker thread, off
 * the main thread, over the kernel's rings (`ts/worker-kernel.ts` is the kernel side), so a
 * message flow can be developed and tested without a GPU.
 * @module
 */
import { isAbsolute, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'

import { describeSchema, type Schema } from './codec'
import { RingbridgeError, RingbridgeTypeError, badOption, describe } from './errors'
import { KERNEL_ERROR, STATE, TERMINATE } from './protocol'
import type { ControlBlockView } from './ring'
import type { LaunchOptions } from './types'
import type { HandlerSpec, RingShape, WorkerKernelData, WorkerReport } from './worker-kernel'

/**
 * What a JS handler knows of its message besides the payload.
 * @example
 * ```ts
 * cpu: (m, ctx: HandlerContext) => {
 *   ctx.state.count = (ctx.state.count ?? 0) + 1
 *   return m.key < 256 ? { total: ctx.state.count } : ctx.fail(404, m.key)
 * }
 * ```
 */
export interface HandlerContext {
  /** The request's correlation id. */
  correlationId: bigint
  /** The request's type id. */
  typeId: number
  /** An object kept for the kernel's life: per-kernel state (the worker's, not the caller's). */
  state: Record<string, any>
  /**
   * Rejects this message with an error frame (code >= 256, detail a u32): the matching
   * `request()` rejects with `ERR_RINGBRIDGE_KERNEL_ERROR` — as a CUDA handler's error return.
   * (The handler runs in a worker, where the names of its module are not in scope, so the
   * error is reached through `ctx`. Throwing any object with a numeric `kernelCode` >= 256 and
   * an optional `detail` does the same.)
   */
  fail(code: number, detail?: number): never
  /** Emits a reply now, besides (or instead of) the returned one: a handler may answer a
   * message several times. `request()` resolves with the first reply of its id; later ones go to
   * `receive()`. */
  reply(value: unknown): void
  /** Answers this message later: returns a function to call once with the reply — from a
   * later message's handler call, say — so replies may leave in another order than messages
   * came. Return `undefined` from this call to send nothing now. */
  defer(): (value: unknown) => void
}

/**
 * A JS handler: takes a message, returns its reply (or `undefined` for none now; see
 * `ctx.reply` and `ctx.defer` for several or later replies); calls `ctx.fail` to answer with an
 * error frame. It runs in a worker thread, rebuilt there from its source text, so it must not
 * use variables of the module that defines it (keep state in `ctx.state`). A handler that
 * needs imports or module state is given as a module file instead:
 * `cpu: { filename, export }` ({@link LaunchOptions.cpu}).
 * @example
 * ```ts
 * const double: JsHandler<number, number> = (x) => x * 2
 * const kernel = await runtime.launch({ input: u32, output: u32, cpu: double })
 * ```
 */
export type JsHandler<TIn, TOut> = (msg: TIn, ctx: HandlerContext) => TOut | undefined

/** An exception's text, as the worker saw it. */
export interface FaultText {
  name: string
  message: string
  stack: string | undefined
}

/** The text of `e` (an Error or anything thrown). */
export function faultText(e: unknown): FaultText {
  if (e instanceof Error) return { name: e.name, message: e.message, stack: e.stack }
  const m = (e as { message?: unknown } | null)?.message
  return { name: 'Error', message: typeof m === 'string' ? m : String(e), stack: undefined }
}

/** Entries of a {@link FaultLog}: the last this many handler exceptions can be looked up. */
export const FAULT_ENTRIES = 32
/** Bytes of one entry: 16 of header (sequence, length, correlation id), then JSON text. */
export const FAULT_ENTRY_BYTES = 2048
const FAULT_HEADER_BYTES = 16

/**
 * The handler's exceptions by correlation id, in shared memory: the worker writes an entry
 * (a seqlock: the sequence word is odd while it writes) before it publishes the error frame
 * that answers the message, so the host that reads the frame finds the text at once — a
 * `postMessage` would come a turn of the event loop later. A ring of {@link FAULT_ENTRIES}:
 * an old entry is overwritten by newer faults (its text is then no longer found).
 */
export class FaultLog {
  readonly buffer: SharedArrayBuffer
  readonly #seq: Int32Array
  readonly #dv: DataView
  /** Writer only: the next entry to fill. */
  #next = 0

  constructor(buffer: SharedArrayBuffer = new SharedArrayBuffer(FAULT_ENTRIES * FAULT_ENTRY_BYTES)) {
    this.buffer = buffer
    this.#seq = new Int32Array(buffer)
    this.#dv = new DataView(buffer)
  }

  /** Records the exception that answered the message of `correlation` (worker side). */
  write(correlation: bigint, fault: FaultText): void {
    const at = (this.#next++ % FAULT_ENTRIES) * FAULT_ENTRY_BYTES
    const room = FAULT_ENTRY_BYTES - FAULT_HEADER_BYTES
    const encoder = new TextEncoder()
    const f = { ...fault }
    let bytes = encoder.encode(JSON.stringify(f))
    // Too long: the stack goes first, then the message's tail.
    if (bytes.length > room && f.stack !== undefined) {
      f.stack = f.stack.slice(0, Math.max(0, f.stack.length - (bytes.length - room) - 16))
      bytes = encoder.encode(JSON.stringify(f))
    }
    while (bytes.length > room) {
      f.stack = undefined
      f.message = f.message.slice(0, Math.max(0, f.message.length - (bytes.length - room) - 16)) + '…'
      bytes = encoder.encode(JSON.stringify(f))
    }
    const seq = at / 4
    Atomics.add(this.#seq, seq, 1) // odd: being written
    this.#dv.setUint32(at + 4, bytes.length, true)
    this.#dv.setBigUint64(at + 8, correlation, true)
    new Uint8Array(this.buffer, at + FAULT_HEADER_BYTES, bytes.length).set(bytes)
    Atomics.add(this.#seq, seq, 1) // even: complete
  }

  /** The exception recorded for `correlation`, if it is still in the log (host side). */
  read(correlation: number): FaultText | undefined {
    for (let i = 0; i < FAULT_ENTRIES; i++) {
      const at = i * FAULT_ENTRY_BYTES
      const before = Atomics.load(this.#seq, at / 4)
      if (before === 0 || (before & 1) !== 0) continue
      if (this.#dv.getBigUint64(at + 8, true) !== BigInt(correlation)) continue
      const length = Math.min(this.#dv.getUint32(at + 4, true), FAULT_ENTRY_BYTES - FAULT_HEADER_BYTES)
      const text = new TextDecoder().decode(new Uint8Array(this.buffer, at + FAULT_HEADER_BYTES, length).slice())
      if (Atomics.load(this.#seq, at / 4) !== before) continue
      try {
        return JSON.parse(text) as FaultText
      } catch {
        continue
      }
    }
    return undefined
  }
}

/** @internal How long `join` waits for the worker to see terminate. */
const JOIN_LIMIT_MS = 5000

/** @internal Where a module handler's checked `{ filename, export }` rides on its stand-in function. */
const MODULE_HANDLER = Symbol('ringbridge.moduleHandler')

/** @internal A checked `cpu: { filename, export }`: an absolute path, and the export's name if given. */
export interface ModuleHandlerSpec {
  filename: string
  export: string | undefined
}

/**
 * @internal Checks `cpu: { filename, export? }` (`ERR_RINGBRIDGE_INVALID_ARGUMENT` naming what
 * was expected): `filename` an absolute path or a `file:` URL (a string or a URL), `export` a
 * non-empty string.
 */
export function moduleHandlerSpec(value: object): ModuleHandlerSpec {
  const { filename, export: name } = value as { filename?: unknown; export?: unknown }
  let path: string | undefined
  const fromUrl = (u: URL) => (u.protocol === 'file:' ? fileURLToPath(u) : undefined)
  if (filename instanceof URL) path = fromUrl(filename)
  else if (typeof filename === 'string' && filename.startsWith('file:')) {
    try {
      path = fromUrl(new URL(filename))
    } catch {
      path = undefined
    }
  } else if (typeof filename === 'string' && isAbsolute(filename)) path = filename
  if (path === undefined) badOption('cpu.filename', 'an absolute path or a file: URL of the handler module (a relative path is not resolved: use path.join(__dirname, …) or new URL(…, import.meta.url))', filename)
  if (name !== undefined && (typeof name !== 'string' || name === '')) badOption('cpu.export', 'the name of the module\'s export that is the handler (default: default)', name)
  return { filename: path, export: name }
}

/**
 * @internal Launch options with a `cpu: { filename, export? }` checked and replaced by a
 * stand-in function that carries it (launch's checks take a function; {@link WorkerRunner}
 * loads the module). Other options are returned as they are.
 */
export function withModuleHandler<T>(options: T): T {
  const o = options as LaunchOptions<unknown, unknown> | null | undefined
  const cpu = o?.cpu as unknown
  if (cpu === null || typeof cpu !== 'object') return options
  const spec = moduleHandlerSpec(cpu)
  const standIn = Object.assign(
    function moduleHandler(): never {
      throw new Error(`the handler of ${spec.filename} runs in its worker only`)
    },
    { [MODULE_HANDLER]: spec },
  )
  return { ...o, cpu: standIn } as T
}

/** The module a handler stands in for, if it is a module handler's stand-in. */
function moduleOf(handler: unknown): ModuleHandlerSpec | undefined {
  if (typeof handler === 'function' && MODULE_HANDLER in handler) return (handler as unknown as { [MODULE_HANDLER]: ModuleHandlerSpec })[MODULE_HANDLER]
  if (handler !== null && typeof handler === 'object') return moduleHandlerSpec(handler)
  return undefined
}

/**
 * @internal The host's handle on a worker-thread kernel: wake (D2 as `Atomics.notify`), join.
 */
export class WorkerRunner {
  readonly #worker: Worker
  readonly #cb: ControlBlockView
  #lastFault: string | undefined
  #joined = false
  readonly #faults = new FaultLog()
  /**
   * Settles once the worker has built its handler (loaded its module): rejects with the
   * launch error when it could not (`ERR_RINGBRIDGE_INVALID_ARGUMENT` naming the file, the
   * export and what was found), or when the worker ended first.
   */
  readonly ready: Promise<void>

  constructor(buffer: SharedArrayBuffer, shape: RingShape, input: Schema<unknown>, output: Schema<unknown>, handler: NonNullable<LaunchOptions<any, any>['cpu']>, cb: ControlBlockView, onBell: () => void) {
    const module = moduleOf(handler)
    let spec: HandlerSpec
    if (module !== undefined) spec = { filename: module.filename, export: module.export }
    else {
      const source = handler.toString()
      try {
        // The worker rebuilds the handler the same way; a method shorthand or native function
        // does not survive that, so say so here rather than fail every message there.
        // eslint-disable-next-line @typescript-eslint/no-implied-eval
        if (typeof new Function(`return (${source})`)() !== 'function') throw new Error('not a function')
      } catch {
        throw new RingbridgeTypeError('ERR_RINGBRIDGE_INVALID_ARGUMENT', `cpu: expected a self-contained function or arrow function (it is rebuilt from its source in a worker), got ${describe(source.slice(0, 80))}`)
      }
      spec = { source }
    }
    this.#cb = cb
    const data: WorkerKernelData = {
      buffer,
      ...shape,
      input: describeSchema(input),
      output: describeSchema(output),
      handler: spec,
      faults: this.#faults.buffer,
    }
    this.#worker = new Worker(join(__dirname, 'worker-kernel.js'), { workerData: data })
    let settle: { resolve: () => void; reject: (e: Error) => void } | undefined
    this.ready = new Promise<void>((resolve, reject) => (settle = { resolve, reject }))
    // Nobody may await it (a kernel disposed at once): never an unhandled rejection.
    this.ready.catch(() => undefined)
    const ended = (e: Error) => {
      settle?.reject(e)
      settle = undefined
      this.#worker.unref()
    }
    this.#worker.on('message', (m: WorkerReport) => {
      if (m === 'bell') onBell()
      else if (typeof m !== 'object' || m === null) return
      else if ('ready' in m) {
        settle?.resolve()
        settle = undefined
        // Like the native kernel thread, an idle worker does not keep the process alive.
        this.#worker.unref()
      } else if ('loadError' in m) {
        this.#lastFault = m.loadError
        ended(new RingbridgeTypeError('ERR_RINGBRIDGE_INVALID_ARGUMENT', m.loadError, m.cause ? { cause: errorOf(m.cause) } : undefined))
      } else if ('fault' in m) this.#lastFault = String(m.fault)
    })
    // A worker that died or exited without TERMINATED writes nothing more: take over its
    // status words (spec §12), so every waiter sees the fault instead of hanging.
    const takeOver = (why: string) => {
      if (settle !== undefined) ended(new RingbridgeError('ERR_RINGBRIDGE_KERNEL_ERROR', `cpu: ${why.replace(' while its kernel ran', '')} before its handler was ready`))
      if (this.#cb.load32('state') === STATE.terminated) return
      if (this.#cb.load32('error_code') === KERNEL_ERROR.none) this.#cb.store32('error_code', KERNEL_ERROR.handlerFault)
      this.#cb.store32('state', STATE.terminated)
      this.#lastFault ??= why
      onBell()
    }
    this.#worker.on('error', (e) => takeOver(`the handler's worker thread failed: ${e.message}`))
    this.#worker.on('exit', (code) => takeOver(`the handler's worker thread exited (code ${code}) while its kernel ran`))
    // Until the handler is ready the worker keeps the process alive: a launch awaits it.
  }

  /**
   * `error` with the handler's own exception added, when it is the HANDLER_FAULT error frame of
   * a message whose exception the fault log still holds: its text joins the message, and the
   * exception (rebuilt: name, message, the worker's stack) is the `cause`. Else `error` itself.
   */
  explain(error: Error): Error {
    const e = error as RingbridgeError
    const d = e?.details
    if (e?.code !== 'ERR_RINGBRIDGE_KERNEL_ERROR' || d?.kernelCode !== KERNEL_ERROR.handlerFault || typeof d.correlationId !== 'number') return error
    const fault = this.#faults.read(d.correlationId)
    if (fault === undefined) return error
    return new RingbridgeError('ERR_RINGBRIDGE_KERNEL_ERROR', `${e.message}: ${fault.name}: ${fault.message}`, { cause: errorOf(fault), details: { ...d, handlerError: fault.message } })
  }

  /** The first message of a handler exception that was not a `ctx.fail`, if any. */
  get lastFault(): string | undefined {
    return this.#lastFault
  }

  /**
   * D2: wakes a worker asleep on `kernel_sleeping`. The word is cleared before the notify: a
   * worker between its D1 re-check and its `Atomics.wait` is not a waiter yet, so a bare notify
   * would miss it, while `Atomics.wait` on a word that no longer holds 1 returns at once.
   */
  wake(): void {
    const i = this.#cb.index32('kernel_sleeping')
    Atomics.compareExchange(this.#cb.u32, i, 1, 0)
    Atomics.notify(this.#cb.u32, i)
  }

  /** Stops the worker (abandon, unless a terminate command was given) and waits, bounded. */
  join(): void {
    if (this.#joined) return
    this.#joined = true
    if (this.#cb.load32('terminate') === TERMINATE.none) this.#cb.store32('terminate', TERMINATE.abandon)
    const tick = new Int32Array(new SharedArrayBuffer(4))
    const deadline = Date.now() + JOIN_LIMIT_MS
    while (this.#cb.load32('state') !== STATE.terminated && Date.now() < deadline) {
      this.wake()
      Atomics.wait(tick, 0, 0, 1)
    }
    void this.#worker.terminate()
  }
}

/** An Error rebuilt from the worker's text of one: its name, message and stack. */
function errorOf(f: FaultText): Error {
  const e = new Error(f.message)
  e.name = f.name
  if (f.stack !== undefined) e.stack = f.stack
  return e
}
