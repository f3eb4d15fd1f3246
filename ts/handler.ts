/**
 * Handlers written in JavaScript (`cpu:` on the cpu backend): they run in a worker thread, off
 * the main thread, over the kernel's rings (`ts/worker-kernel.ts` is the kernel side), so a
 * message flow can be developed and tested without a GPU.
 * @module
 */
import { join } from 'node:path'
import { Worker } from 'node:worker_threads'

import { describeSchema, type Schema } from './codec'
import { RingbridgeTypeError, describe } from './errors'
import { KERNEL_ERROR, STATE, TERMINATE } from './protocol'
import type { ControlBlockView } from './ring'
import type { RingShape, WorkerKernelData } from './worker-kernel'

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
 * use variables of the module that defines it (keep state in `ctx.state`).
 * @example
 * ```ts
 * const double: JsHandler<number, number> = (x) => x * 2
 * const kernel = await runtime.launch({ input: u32, output: u32, cpu: double })
 * ```
 */
export type JsHandler<TIn, TOut> = (msg: TIn, ctx: HandlerContext) => TOut | undefined

/** @internal How long `join` waits for the worker to see terminate. */
const JOIN_LIMIT_MS = 5000

/**
 * @internal The host's handle on a worker-thread kernel: wake (D2 as `Atomics.notify`), join.
 */
export class WorkerRunner {
  readonly #worker: Worker
  readonly #cb: ControlBlockView
  #lastFault: string | undefined
  #joined = false

  constructor(buffer: SharedArrayBuffer, shape: RingShape, input: Schema<unknown>, output: Schema<unknown>, handler: Function, cb: ControlBlockView, onBell: () => void) {
    const source = handler.toString()
    try {
      // The worker rebuilds the handler the same way; a method shorthand or native function
      // does not survive that, so say so here rather than fail every message there.
      // eslint-disable-next-line @typescript-eslint/no-implied-eval
      if (typeof new Function(`return (${source})`)() !== 'function') throw new Error('not a function')
    } catch {
      throw new RingbridgeTypeError('ERR_RINGBRIDGE_INVALID_ARGUMENT', `cpu: expected a self-contained function or arrow function (it is rebuilt from its source in a worker), got ${describe(source.slice(0, 80))}`)
    }
    this.#cb = cb
    const data: WorkerKernelData = {
      buffer,
      ...shape,
      input: describeSchema(input),
      output: describeSchema(output),
      handler: source,
    }
    this.#worker = new Worker(join(__dirname, 'worker-kernel.js'), { workerData: data })
    this.#worker.on('message', (m: unknown) => {
      if (m === 'bell') onBell()
      else if (m !== null && typeof m === 'object' && 'fault' in m) this.#lastFault = String((m as { fault: unknown }).fault)
    })
    // A worker that died or exited without TERMINATED writes nothing more: take over its
    // status words (spec §12), so every waiter sees the fault instead of hanging.
    const takeOver = (why: string) => {
      if (this.#cb.load32('state') === STATE.terminated) return
      if (this.#cb.load32('error_code') === KERNEL_ERROR.none) this.#cb.store32('error_code', KERNEL_ERROR.handlerFault)
      this.#cb.store32('state', STATE.terminated)
      this.#lastFault ??= why
      onBell()
    }
    this.#worker.on('error', (e) => takeOver(`the handler's worker thread failed: ${e.message}`))
    this.#worker.on('exit', (code) => takeOver(`the handler's worker thread exited (code ${code}) while its kernel ran`))
    // Like the native kernel thread, an idle worker does not keep the process alive.
    this.#worker.unref()
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
