/**
 * Bounded waits: the one place `{ timeoutMs, signal }` is checked ({@link waitLimit}) and armed
 * ({@link bound}), for every wait of a kernel that takes them (`send`, `request`, `receive`) and
 * the life-cycle waits (a timeout alone). Also the waiter a settled wait resolves.
 * @internal
 * @module
 */
import { AbortError, badOption } from './errors'
import type { WaitOptions } from './types'

/** The longest timer Node keeps: a longer `setTimeout` fires after 1 ms instead (with a warning). */
export const MAX_TIMER_MS = 2 ** 31 - 1

/** What a wait ends with: a value, or the error to reject with. */
export type Entry<T> = { ok: true; value: T } | { ok: false; error: Error }

/** One pending promise: how to settle it, and how to disarm its bound once it settles. */
export interface Waiter<T> {
  resolve: (v: T) => void
  reject: (e: Error) => void
  /** Clears the wait's timer and abort listener ({@link bound}'s return). */
  disarm?: () => void
  /** `performance.now()` at send, for the latency histogram (requests only). */
  started?: number
}

/** Settles `w` with `entry`, disarming its bound first. */
export function settleWaiter<T>(w: Waiter<T>, entry: Entry<T>): void {
  w.disarm?.()
  if (entry.ok) w.resolve(entry.value)
  else w.reject(entry.error)
}

/** A checked {@link WaitOptions}. */
export interface WaitLimit {
  timeoutMs: number | undefined
  signal: AbortSignal | undefined
}

/** Checks a wait's options (`ERR_RINGBRIDGE_INVALID_ARGUMENT` for a bad one). */
export function waitLimit(options: WaitOptions | undefined): WaitLimit {
  if (options === undefined) return { timeoutMs: undefined, signal: undefined }
  if (options === null || typeof options !== 'object') badOption('options', 'an object { timeoutMs?, signal? }', options)
  const t = options.timeoutMs
  if (t !== undefined && (typeof t !== 'number' || !(t >= 0) || t > MAX_TIMER_MS)) badOption('timeoutMs', `a number of milliseconds from 0 to ${MAX_TIMER_MS} (about 24.8 days)`, t)
  const signal = options.signal
  if (signal !== undefined && !(signal instanceof AbortSignal)) badOption('signal', 'an AbortSignal', signal)
  return { timeoutMs: t, signal }
}

/**
 * `ERR_RINGBRIDGE_ABORTED` for `what`, the signal's reason as `cause`: an {@link AbortError}
 * (a {@link RingbridgeError} named `AbortError`, as Node's own cancellations are). Every
 * aborted wait (send, request, receive, nextChunk) makes its error here.
 */
export function abortedError(what: string, signal: AbortSignal): AbortError {
  return new AbortError(`${what}: aborted`, { cause: signal.reason })
}

/**
 * Arms a wait's limit: `onLimit('timeout')` after `timeoutMs`, `onLimit('abort')` when `signal`
 * aborts — whichever comes first, once (the other is disarmed then). Returns the disarm
 * function, for the wait to call when it ends otherwise; no timer or listener outlives it.
 */
export function bound(limit: WaitLimit, onLimit: (why: 'timeout' | 'abort') => void): () => void {
  const { timeoutMs, signal } = limit
  let timer: ReturnType<typeof setTimeout> | undefined
  const disarm = () => {
    if (timer !== undefined) clearTimeout(timer)
    timer = undefined
    signal?.removeEventListener('abort', onAbort)
  }
  const onAbort = () => {
    disarm()
    onLimit('abort')
  }
  if (timeoutMs !== undefined) {
    timer = setTimeout(() => {
      timer = undefined
      disarm()
      onLimit('timeout')
    }, timeoutMs)
  }
  signal?.addEventListener('abort', onAbort, { once: true })
  return disarm
}
