/**
 * `Runtime`: picks a backend once and launches ring kernels on it.
 * @module
 */
import native from './binding'
import { RingKernel } from './kernel'
import type { LaunchOptions } from './types'
import { RingbridgeError, RingbridgeRangeError, badOption, fromNative } from './errors'
import { BACKEND_NAMES, quotedList } from './protocol'

/**
 * Backend names: `auto` picks CUDA when it works here and the CPU backend otherwise.
 * @example
 * ```ts
 * const rt = await Runtime.open({ backend: 'auto' satisfies BackendName })
 * ```
 */
// Restates native's backend names; __test__/protocol.spec.ts checks the union against them.
export type BackendName = 'auto' | 'cpu' | 'cuda'

/**
 * Options of {@link Runtime.open}.
 * @example
 * ```ts
 * const options: RuntimeOptions = { backend: 'cpu' }
 * const rt = await Runtime.open(options)
 * ```
 */
export interface RuntimeOptions {
  /** Which backend runs kernels (default `auto`). */
  backend?: BackendName
  /**
   * The GPUs kernels may be launched on: `'all'` (default) or CUDA device ordinals. The cpu
   * backend has one device, 0.
   */
  devices?: 'all' | number[]
}

/**
 * The entry point: one runtime per process is typical; it owns the kernels it launched.
 * @hideconstructor
 * @example
 * ```ts
 * const rt = await Runtime.open() // GPU when present, CPU backend otherwise
 * console.log(rt.backend, rt.backendReason)
 * const k = await rt.launch({ handler: 'echo', input: bytes(), output: bytes() })
 * await rt.close()
 * ```
 * @example
 * A runtime is `AsyncDisposable`: `await using` closes it (terminating its kernels) when the
 * block ends.
 * ```ts
 * {
 *   await using rt = await Runtime.open()
 *   await using k = await rt.launch({ handler: 'echo', input: u32, output: u32 })
 *   console.log(await k.request(7)) // 7
 * } // k is terminated, then rt closed, however the block is left
 * ```
 */
export class Runtime implements AsyncDisposable {
  /** The backend kernels run on. */
  readonly backend: string
  /** Why it was chosen (for `auto`, why the others were not). */
  readonly backendReason: string
  /** The devices kernels may be launched on (`launch({ device })`); the first is the default. */
  readonly devices: readonly number[]
  readonly #kernels = new Set<RingKernel<any, any>>()
  #closed = false

  private constructor(backend: string, reason: string, devices: number[]) {
    this.backend = backend
    this.backendReason = reason
    this.devices = Object.freeze(devices)
  }

  /**
   * Opens a runtime on the requested backend.
   * @throws {RingbridgeError} `ERR_RINGBRIDGE_BACKEND_UNAVAILABLE` when `cuda` is requested and cannot run here.
   * @throws {RingbridgeTypeError} `ERR_RINGBRIDGE_INVALID_ARGUMENT` for an unknown backend name.
   */
  static async open(options?: RuntimeOptions): Promise<Runtime> {
    if (options !== undefined && (options === null || typeof options !== 'object')) badOption('Runtime.open options', 'an object { backend?, devices? }', options)
    const name = options?.backend ?? 'auto'
    if (!BACKEND_NAMES.includes(name as string)) badOption('backend', quotedList(BACKEND_NAMES), name)
    let choice: string[]
    try {
      // On the libuv pool: probing cuda loads the driver and compiles the ring kernel (NVRTC,
      // about a second on a cold cache).
      choice = await native.chooseBackendAsync(name)
    } catch (e) {
      throw fromNative(e)
    }
    let count = 1
    if (choice[0] === 'cuda') {
      try {
        count = native.cudaDeviceCount()
      } catch (e) {
        throw fromNative(e)
      }
    }
    return new Runtime(choice[0]!, choice[1]!, devicesOf(options?.devices, count, choice[0]!))
  }

  /** Names of the built-in handlers. */
  static builtinHandlers(): string[] {
    return native.builtinHandlers()
  }

  /**
   * Launches a ring kernel running a built-in handler.
   * @throws {RingbridgeError} `ERR_RINGBRIDGE_UNKNOWN_HANDLER`; `ERR_RINGBRIDGE_CLOSED` after {@link Runtime.close}.
   * @throws {RingbridgeRangeError} `ERR_RINGBRIDGE_INVALID_ARGUMENT` for bad ring shapes; `ERR_RINGBRIDGE_MESSAGE_TOO_LARGE` when a schema does not fit its slot.
   * @throws {RingbridgeTypeError} `ERR_RINGBRIDGE_INVALID_ARGUMENT` for missing or mistyped options.
   */
  async launch<TIn, TOut>(options: LaunchOptions<TIn, TOut>): Promise<RingKernel<TIn, TOut>> {
    if (this.#closed) throw new RingbridgeError('ERR_RINGBRIDGE_CLOSED', 'launch: the runtime is closed')
    const device = options?.device ?? this.devices[0]!
    if (!this.devices.includes(device)) badOption('device', `one of this runtime's devices (${this.devices.join(', ')})`, device)
    // `kernel` is unset while `open` runs: a launch that fails stops its kernel (which calls back) first.
    let kernel: RingKernel<TIn, TOut> | undefined = undefined
    kernel = await RingKernel.open<TIn, TOut>(options, this.backend, device, () => kernel !== undefined && this.#kernels.delete(kernel))
    return this.#adopt(kernel, 'launch')
  }

  /**
   * Launches a route: kernels that hand messages to each other with no host hop (PROTOCOL.md
   * §14). Stage *i*'s output ring is stage *i+1*'s input ring — on one GPU the first kernel
   * writes the second's input slots itself — so its `output` schema and output ring shape must
   * be the next stage's `input` schema and input ring shape. The returned kernel sends to the
   * first stage and receives from the last: `request()` resolves with the last stage's reply
   * (an earlier stage's error frame travels on and rejects it), and `terminate()` stops the
   * stages in order, so a drain (or an abandon of the first stage) loses no message the route
   * took. Host-side options (queues, `timeoutMs`, `typeId`, `spinMicros`) are the first stage's.
   * Stages share one runner: with `isolation: 'process'`, one kernel host (a fault in any stage
   * ends the route).
   * @throws {RingbridgeTypeError} `ERR_RINGBRIDGE_INVALID_ARGUMENT` for fewer than two stages, a JS handler
   *   or shared producers in a stage, mismatched schemas or isolation (naming the stage).
   * @throws {RingbridgeRangeError} `ERR_RINGBRIDGE_INVALID_ARGUMENT` when a stage's output ring is not the next
   *   stage's input ring.
   * @example
   * ```ts
   * const f32x = array(f32, 16)
   * // echo forwards a, x, y; saxpy computes on the GPU that echo wrote to: no host hop between.
   * const route = await rt.launchRoute([
   *   { handler: 'echo', input: struct({ a: f32, xy: array(f32, 32) }), output: struct({ a: f32, xy: array(f32, 32) }) },
   *   { handler: 'saxpy', input: struct({ a: f32, xy: array(f32, 32) }), output: f32x },
   * ])
   * const y = await route.request({ a: 2, xy: new Array(32).fill(1) })
   * ```
   */
  async launchRoute<A, B, C>(stages: readonly [LaunchOptions<A, B>, LaunchOptions<B, C>]): Promise<RingKernel<A, C>>
  async launchRoute<A, B, C, D>(stages: readonly [LaunchOptions<A, B>, LaunchOptions<B, C>, LaunchOptions<C, D>]): Promise<RingKernel<A, D>>
  async launchRoute(stages: readonly LaunchOptions<any, any>[]): Promise<RingKernel<unknown, unknown>>
  async launchRoute(stages: readonly LaunchOptions<any, any>[]): Promise<RingKernel<unknown, unknown>> {
    if (this.#closed) throw new RingbridgeError('ERR_RINGBRIDGE_CLOSED', 'launchRoute: the runtime is closed')
    if (!Array.isArray(stages) || stages.length < 2) badOption('launchRoute stages', 'an array of at least two launch options', stages)
    for (const [i, o] of stages.entries()) {
      const device = o?.device ?? this.devices[0]!
      if (!this.devices.includes(device)) badOption(`route stage ${i}: device`, `one of this runtime's devices (${this.devices.join(', ')})`, device)
    }
    let kernel: RingKernel<unknown, unknown> | undefined = undefined
    kernel = await RingKernel.open<unknown, unknown>(stages, this.backend, stages[0]?.device ?? this.devices[0]!, () => kernel !== undefined && this.#kernels.delete(kernel))
    return this.#adopt(kernel, 'launchRoute')
  }

  /**
   * Keeps a launched kernel until it ends; one whose launch finished after `close()` began
   * (a kernel host starts off the JS thread) is stopped at once instead of outliving the runtime.
   */
  async #adopt<K extends RingKernel<any, any>>(kernel: K, what: string): Promise<K> {
    if (this.#closed) {
      await kernel.terminate({ mode: 'abandon' })
      throw new RingbridgeError('ERR_RINGBRIDGE_CLOSED', `${what}: the runtime was closed while the kernel launched (it was stopped)`)
    }
    this.#kernels.add(kernel)
    return kernel
  }

  /**
   * Kernels launched and not yet terminated. A kernel leaves this list (and the runtime's
   * keeping) when it ends, so launching and terminating kernels for the life of a process
   * holds no memory or descriptors for the ended ones.
   */
  get kernels(): RingKernel<any, any>[] {
    return [...this.#kernels].filter((k) => !k.closed)
  }

  /** Terminates every kernel (draining each) and refuses new launches. Idempotent. */
  async close(): Promise<void> {
    this.#closed = true
    await Promise.all([...this.#kernels].map((k) => k.terminate()))
    this.#kernels.clear()
  }

  /**
   * `await using`: {@link Runtime.close} (every kernel terminated, draining each). Idempotent.
   * @example
   * ```ts
   * async function main() {
   *   await using rt = await Runtime.open({ backend: 'cpu' })
   *   const k = await rt.launch({ handler: 'echo', input: u32, output: u32 })
   *   return k.request(1)
   * } // rt.close() here: k is terminated too
   * ```
   */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close()
  }
}

/** Resolves `devices` against the `count` devices the backend has. */
function devicesOf(devices: RuntimeOptions['devices'], count: number, backend: string): number[] {
  if (devices === undefined || devices === 'all') return Array.from({ length: count }, (_, i) => i)
  if (!Array.isArray(devices) || devices.length === 0) badOption('devices', "'all' or a non-empty array of device ordinals", devices)
  for (const d of devices) {
    if (!Number.isInteger(d) || d < 0 || d >= count) {
      throw new RingbridgeRangeError('ERR_RINGBRIDGE_INVALID_ARGUMENT', `devices: ${String(d)} is not a device of the ${backend} backend here (${count} present: ${count === 1 ? '0' : `0..${count - 1}`})`)
    }
  }
  if (new Set(devices).size !== devices.length) badOption('devices', 'distinct device ordinals', devices)
  return [...devices]
}
