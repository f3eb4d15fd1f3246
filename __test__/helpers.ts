// Shared by the ava specs: bounded waits, so a bug fails a test instead of hanging it.
import type { ExecutionContext } from 'ava'

import { Runtime, type LaunchOptions, type RingKernel } from '../index'

/** Resolves as `p`, or rejects naming `what` after `ms`. */
export async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms: ${what}`)), ms)
  })
  try {
    return await Promise.race([p, limit])
  } finally {
    clearTimeout(timer)
  }
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** Polls `cond` until it holds; fails with `what` after `ms`. */
export async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error(`still not true after ${ms} ms: ${what}`)
    await sleep(2)
  }
}

/** Whether `p` is still pending after `ms`. */
export async function pendingAfter(p: Promise<unknown>, ms: number): Promise<boolean> {
  const marker = Symbol('pending')
  const r = await Promise.race([p.then(() => 'settled', () => 'settled'), sleep(ms).then(() => marker)])
  return r === marker
}

/**
 * Runs `script` in a child `node -e`, bounded by `ms` (killed after), and gives its exit code,
 * its stdout and its pid.
 */
export async function runNode(script: string, ms: number): Promise<{ code: number | null; stdout: string; pid: number }> {
  const { spawn } = await import('node:child_process')
  let stdout = ''
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] })
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
  const code = await new Promise<number | null>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`the child process did not exit within ${ms} ms`))
    }, ms)
    // 'close', not 'exit': 'exit' may come before the last of stdout has been read.
    child.on('close', (c) => {
      clearTimeout(timer)
      resolve(c)
    })
  })
  return { code, stdout, pid: child.pid ?? -1 }
}

/** Whether process `pid` exists (signal 0 checks without sending). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

export const codeOf = (e: unknown) => (e as { code?: string } | undefined)?.code

/** Opens a CPU runtime closed at the test's end and launches one kernel on it. */
export async function launchOn<TIn, TOut>(t: ExecutionContext, options: LaunchOptions<TIn, TOut>): Promise<RingKernel<TIn, TOut>> {
  const rt = await Runtime.open({ backend: 'cpu' })
  t.teardown(() => within(rt.close(), 15_000, 'runtime close'))
  return rt.launch(options)
}

/** Receives exactly `n` replies, each wait bounded, naming the reply it waited for on failure. */
export async function receiveAll<T>(k: RingKernel<unknown, T>, n: number): Promise<T[]> {
  const got: T[] = []
  while (got.length < n) {
    try {
      got.push(...(await k.receiveBatch(n - got.length, { timeoutMs: 5000 })))
    } catch (e) {
      throw new Error(`waiting for reply ${got.length} of ${n}: ${(e as Error).message}`, { cause: e })
    }
  }
  return got
}
