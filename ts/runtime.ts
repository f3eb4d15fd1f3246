/**
 * `Runtime`: picks a backend once and launches ring kernels on it.
 * @module
 */
import native from './binding'
import { RingKernel, type LaunchOptions } from './kernel'
import { RingbridgeError, RingbridgeRangeError, badOption, fromNative } from './errors'

/**
 * Backend names: `auto` picks CUDA when it works here and the CPU backend otherwise.
 * @example
 * ```ts
 * const rt = await Runtime.open({ backend: 'auto' satisfies BackendName })
 * ```
 */
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
 */
export class Runtime {
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
    if (!['auto', 'cpu', 'cuda'].includes(name as string)) badOption('backend', "'auto', 'cpu' or 'cuda'", name)
    let choice: string[]
    try {
      choice = native.chooseBackend(name)
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
    const kernel = new RingKernel(options, this.backend, device)
    this.#kernels.add(kernel)
    return kernel
  }

  /** Kernels launched and not yet terminated. */
  get kernels(): RingKernel<any, any>[] {
    return [...this.#kernels].filter((k) => !k.closed)
  }

  /** Terminates every kernel (draining each) and refuses new launches. Idempotent. */
  async close(): Promise<void> {
    this.#closed = true
    await Promise.all([...this.#kernels].map((k) => k.terminate()))
    this.#kernels.clear()
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
