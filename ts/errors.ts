/**
 * Errors thrown by ringbridge. Every error carries a stable `code` (`ERR_RINGBRIDGE_*`, listed
 * in `docs/errors.md`); assert on the code, never on the message text.
 * @module
 */

/**
 * Every error code, in `docs/errors.md` order. A literal list, so that it also makes the
 * {@link RingbridgeErrorCode} union; `errors.spec.ts` checks it against the native list
 * (`ErrorCode::ALL`) and the doc table, so none of the three can drift.
 * @example
 * ```ts
 * ERROR_CODES.includes('ERR_RINGBRIDGE_TIMEOUT') // true
 * ```
 */
export const ERROR_CODES = [
  'ERR_RINGBRIDGE_INVALID_ARGUMENT',
  'ERR_RINGBRIDGE_INVALID_MESSAGE',
  'ERR_RINGBRIDGE_MESSAGE_TOO_LARGE',
  'ERR_RINGBRIDGE_FULL',
  'ERR_RINGBRIDGE_OVERFLOW',
  'ERR_RINGBRIDGE_CLOSED',
  'ERR_RINGBRIDGE_KERNEL_ERROR',
  'ERR_RINGBRIDGE_BACKEND_UNAVAILABLE',
  'ERR_RINGBRIDGE_UNKNOWN_HANDLER',
  'ERR_RINGBRIDGE_TIMEOUT',
  'ERR_RINGBRIDGE_PROTOCOL',
  'ERR_RINGBRIDGE_RESOURCE_EXHAUSTED',
  'ERR_RINGBRIDGE_OS',
  'ERR_RINGBRIDGE_CUDA',
  'ERR_RINGBRIDGE_COMPILE',
  'ERR_RINGBRIDGE_ABORTED',
] as const

/**
 * A stable error code.
 * @example
 * ```ts
 * const code: RingbridgeErrorCode = 'ERR_RINGBRIDGE_CLOSED'
 * ```
 */
export type RingbridgeErrorCode = (typeof ERROR_CODES)[number]

/**
 * An error raised by ringbridge at run time (closed kernel, full queue, kernel error…). A
 * cancelled wait (`ERR_RINGBRIDGE_ABORTED`) is its subclass `AbortError`, named `AbortError`
 * as Node's own cancellations are.
 * @example
 * ```ts
 * try {
 *   await kernel.request(1, { timeoutMs: 10 })
 * } catch (e) {
 *   if (e instanceof RingbridgeError && e.code === 'ERR_RINGBRIDGE_TIMEOUT') console.log('slow kernel')
 * }
 * ```
 */
export class RingbridgeError extends Error {
  /** The stable code. */
  readonly code: RingbridgeErrorCode
  /** Extra facts (sizes, limits, kernel error codes), when there are any. */
  readonly details?: Readonly<Record<string, unknown>>

  constructor(code: RingbridgeErrorCode, message: string, options?: { cause?: unknown; details?: Record<string, unknown> }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'RingbridgeError'
    this.code = code
    if (options?.details) this.details = options.details
  }
}

/**
 * A cancelled wait (`ERR_RINGBRIDGE_ABORTED`: its `AbortSignal` aborted): a
 * {@link RingbridgeError} named `AbortError`, as Node names its own cancellations, so code that
 * tells a cancellation from a failure by `e.name === 'AbortError'` needs nothing of ours. `cause`
 * is the signal's reason.
 * @example
 * ```ts
 * const ac = new AbortController()
 * setTimeout(() => ac.abort(new Error('user left')), 100)
 * try {
 *   await kernel.request(1, { signal: ac.signal })
 * } catch (e) {
 *   if ((e as Error).name === 'AbortError') console.log('cancelled:', (e as Error).cause) // e.code: ERR_RINGBRIDGE_ABORTED
 *   else throw e
 * }
 * ```
 */
export class AbortError extends RingbridgeError {
  /** Always `ERR_RINGBRIDGE_ABORTED`. */
  declare readonly code: 'ERR_RINGBRIDGE_ABORTED'

  /** `message` names the call; `options.cause` is the signal's reason. */
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_RINGBRIDGE_ABORTED', message, options)
    this.name = 'AbortError'
  }
}

/**
 * A value of the wrong type (a message field, an option).
 * @example
 * ```ts
 * try {
 *   await kernel.send('not a number' as never)
 * } catch (e) {
 *   if (e instanceof RingbridgeTypeError) console.log(e.code) // ERR_RINGBRIDGE_INVALID_MESSAGE
 * }
 * ```
 */
export class RingbridgeTypeError extends TypeError {
  /** The stable code. */
  readonly code: RingbridgeErrorCode
  /**
   * @param options.cause what led to it (a module that failed to load, say), as `error.cause`.
   */
  constructor(code: RingbridgeErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'RingbridgeTypeError'
    this.code = code
  }
}

/**
 * A value out of range (an integer field, a capacity, a message size).
 * @example
 * ```ts
 * try {
 *   await kernel.send(new Uint8Array(1 << 20))
 * } catch (e) {
 *   if (e instanceof RingbridgeRangeError) console.log(e.code) // ERR_RINGBRIDGE_MESSAGE_TOO_LARGE
 * }
 * ```
 */
export class RingbridgeRangeError extends RangeError {
  /** The stable code. */
  readonly code: RingbridgeErrorCode
  constructor(code: RingbridgeErrorCode, message: string) {
    super(message)
    this.name = 'RingbridgeRangeError'
    this.code = code
  }
}

/**
 * Any error ringbridge throws.
 * @example
 * ```ts
 * function report(e: AnyRingbridgeError) {
 *   console.error(e.code, e.message, e.details)
 * }
 * ```
 */
export type AnyRingbridgeError = RingbridgeError | RingbridgeTypeError | RingbridgeRangeError

const KNOWN = new Set<string>(ERROR_CODES)

/** Rethrows an error from the native binding as a {@link RingbridgeError} (keeping it as `cause`). */
export function fromNative(err: unknown): Error {
  const e = err as { code?: unknown; message?: unknown }
  if (e && typeof e.code === 'string' && KNOWN.has(e.code)) {
    const code = e.code as RingbridgeErrorCode
    const message = String(e.message)
    if (code === 'ERR_RINGBRIDGE_INVALID_ARGUMENT') return new RingbridgeRangeError(code, message)
    return new RingbridgeError(code, message, { cause: err })
  }
  return err instanceof Error ? err : new Error(String(err))
}

/** Throws a TypeError with `ERR_RINGBRIDGE_INVALID_ARGUMENT` naming the option and what was expected. */
export function badOption(name: string, expected: string, got: unknown): never {
  throw new RingbridgeTypeError('ERR_RINGBRIDGE_INVALID_ARGUMENT', `${name}: expected ${expected}, got ${describe(got)}`)
}

/** A short description of a value for error messages. */
export function describe(v: unknown): string {
  if (v === null) return 'null'
  if (Array.isArray(v)) return `an array of length ${v.length}`
  switch (typeof v) {
    case 'string':
      return `the string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v)}`
    case 'number':
    case 'bigint':
    case 'boolean':
      return `${typeof v} ${String(v)}`
    case 'undefined':
      return 'undefined'
    case 'function':
      return 'a function'
    case 'symbol':
      return `a symbol (${String(v)})`
    default:
      return v instanceof Uint8Array ? `a Uint8Array of ${v.length} bytes` : `an object (${Object.prototype.toString.call(v)})`
  }
}
