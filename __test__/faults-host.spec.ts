// Fault suite of the kernel host (`isolation: 'process'` on the CPU backend, no GPU needed),
// through the public API: kill -9 of the host with requests in flight, SIGSTOP then SIGCONT,
// SIGSTOP then terminate() or dispose(), a Ctrl-C / service stop sent to the application's
// whole process group while messages are in flight, and a parent that exits or is killed.
// Each test is bounded in time and checks that every promise settles, with its own reply or a
// clear error, and that nothing is lost or delivered twice.
//
// Serial: several tests measure the event loop's gaps, which other tests in this process
// would widen.
import test from 'ava'
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'

import { Runtime, u32, type RingKernel } from '../index'
import { codeOf, sleep, until, within } from './helpers'

const INDEX = JSON.stringify(require.resolve('../index'))

/** The state letter of `/proc/<pid>/stat` (`R`, `S`, `T`, `Z`…), or undefined once gone. */
function procState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 1).trim()[0]
  } catch {
    return undefined
  }
}

/** Gone, or a zombie nobody has reaped yet (a container's init may not): not serving either way. */
const gone = (pid: number) => {
  const s = procState(pid)
  return s === undefined || s === 'Z' || s === 'X'
}

/** Never leave a stopped process behind, whatever a test's outcome. */
function reapOnTeardown(t: { teardown(fn: () => void): void }, pid: number): void {
  t.teardown(() => {
    try {
      process.kill(pid, 'SIGKILL')
    } catch {
      // gone already
    }
  })
}

type Outcome = { i: number; ok: true; value: number } | { i: number; ok: false; error: unknown }

/** Sends request `i` for every `i` in `[from, to)` and records how each settles. */
function requests(k: RingKernel<number, number>, from: number, to: number, onReply?: () => void): Promise<Outcome>[] {
  return Array.from({ length: to - from }, (_, j) =>
    k.request(from + j).then(
      (value): Outcome => {
        onReply?.()
        return { i: from + j, ok: true, value }
      },
      (error): Outcome => ({ i: from + j, ok: false, error }),
    ),
  )
}

/** Tracks the largest gap between ticks of a 5 ms interval: how long the event loop was blocked. */
function loopWatch(): { stop(): number } {
  let last = Date.now()
  let max = 0
  const timer = setInterval(() => {
    const now = Date.now()
    max = Math.max(max, now - last)
    last = now
  }, 5)
  return {
    stop() {
      clearInterval(timer)
      return Math.max(max, Date.now() - last)
    },
  }
}

async function open(t: { teardown(fn: () => Promise<unknown>): void }): Promise<Runtime> {
  const rt = await Runtime.open({ backend: 'cpu' })
  t.teardown(() => within(rt.close(), 15_000, 'runtime close'))
  return rt
}

const launchHost = (rt: Runtime, capacity = 64) => rt.launch({ handler: 'echo', input: u32, output: u32, capacity, isolation: 'process' })

test.serial('kill -9 of a kernel host with requests in flight settles each with its reply or the death; the next launch works', async (t) => {
  const rt = await open(t)
  const k = await launchHost(rt)
  const pid = k.hostPid!
  const N = 50_000
  let replied = 0
  const outcomes = requests(k, 0, N, () => replied++)
  await until(() => replied >= 1000, 10_000, '1000 replies before the kill')
  process.kill(pid, 'SIGKILL')
  const settled = await within(Promise.all(outcomes), 10_000, 'every request settles after kill -9 of the host')
  let ok = 0
  for (const o of settled) {
    if (o.ok) {
      ok++
      if (o.value !== o.i) t.fail(`request ${o.i} got the reply ${o.value}`)
    } else if (codeOf(o.error) !== 'ERR_RINGBRIDGE_KERNEL_ERROR' || !/kernel host process died \(signal: 9 \(SIGKILL\)\)/.test((o.error as Error).message)) {
      t.fail(`request ${o.i}: ${String(o.error)}`)
    }
  }
  t.true(ok >= 1000 && ok < N, `${ok} of ${N} replied before the kill`)
  t.is(k.stats().replied, ok, 'no reply counted twice')
  t.is(k.state, 'terminated')
  const report = await within(k.terminate(), 10_000, 'terminate after the kill')
  t.is(codeOf(report.fault), 'ERR_RINGBRIDGE_KERNEL_ERROR')
  t.regex(report.fault!.message, new RegExp(`pid ${pid}\\b`))
  await until(() => gone(pid), 5000, 'the killed host to go')

  const again = await launchHost(rt)
  t.deepEqual(await within(Promise.all([again.request(1), again.request(2)]), 10_000, 'the next launch answers'), [1, 2])
})

test.serial('a kernel host ignores SIGINT, SIGTERM, SIGHUP and SIGTTOU and leads a process group of its own', async (t) => {
  const rt = await open(t)
  const k = await launchHost(rt)
  const pid = k.hostPid!
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const ignored = BigInt('0x' + /^SigIgn:\s*([0-9a-f]+)$/m.exec(status)![1])
  for (const [n, name] of [[1, 'SIGHUP'], [2, 'SIGINT'], [15, 'SIGTERM'], [22, 'SIGTTOU']] as const) {
    t.not(ignored & (1n << BigInt(n - 1)), 0n, `${name} is not ignored (SigIgn ${ignored.toString(16)})`)
  }
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const group = Number(stat.slice(stat.lastIndexOf(')') + 1).trim().split(/\s+/)[2])
  t.is(group, pid, 'the host leads its own process group')
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.kill(pid, signal)
  await sleep(100)
  t.deepEqual(await within(Promise.all([k.request(1), k.request(2)]), 10_000, 'replies after the signals'), [1, 2])
  t.deepEqual((await within(k.terminate(), 10_000, 'terminate')).undelivered, [])
  await until(() => gone(pid), 5000, 'the host to exit after terminate')
})

test.serial('SIGSTOP then SIGCONT of a kernel host: messages continue, nothing lost or duplicated', async (t) => {
  const rt = await open(t)
  const k = await launchHost(rt)
  const pid = k.hostPid!
  reapOnTeardown(t, pid)
  const N = 20_000
  let replied = 0
  const outcomes = requests(k, 0, N, () => replied++)
  await until(() => replied >= 2000, 10_000, '2000 replies before the stop')
  process.kill(pid, 'SIGSTOP')
  await until(() => procState(pid) === 'T', 5000, 'the host to be stopped')
  await sleep(100)
  const frozen = k.stats().processed
  await sleep(700)
  t.is(k.stats().processed, frozen, 'a stopped host handles nothing')
  t.true(replied < N, 'messages were in flight while the host was stopped')
  process.kill(pid, 'SIGCONT')
  const settled = await within(Promise.all(outcomes), 30_000, 'every request settles after SIGCONT')
  for (const o of settled) {
    if (!o.ok) t.fail(`request ${o.i}: ${String(o.error)}`)
    else if (o.value !== o.i) t.fail(`request ${o.i} got the reply ${o.value}`)
  }
  const stats = k.stats()
  t.is(stats.replied, N)
  t.is(stats.lateReplies, 0, 'no reply without a waiting request (a duplicate)')
  const report = await within(k.terminate(), 10_000, 'terminate after SIGCONT')
  t.deepEqual(report.undelivered, [])
  t.is(report.fault, undefined)
  t.is(k.stats().processed, N)
  await until(() => gone(pid), 5000, 'the host to exit after terminate')
})

test.serial('terminate() of a stopped kernel host keeps the event loop running and settles with an error naming the host', async (t) => {
  const rt = await open(t)
  const k = await launchHost(rt)
  const pid = k.hostPid!
  reapOnTeardown(t, pid)
  t.deepEqual(await within(Promise.all([k.request(1), k.request(2)]), 10_000, 'replies before the stop'), [1, 2])
  process.kill(pid, 'SIGSTOP')
  await until(() => procState(pid) === 'T', 5000, 'the host to be stopped')
  const inFlight = requests(k, 100, 120)
  const watch = loopWatch()
  const started = Date.now()
  const report = await within(k.terminate(), 15_000, 'terminate of a stopped host')
  const took = Date.now() - started
  const maxGap = watch.stop()
  t.is(codeOf(report.fault), 'ERR_RINGBRIDGE_TIMEOUT', String(report.fault))
  t.regex(report.fault!.message, new RegExp(`pid ${pid}\\b`))
  t.regex(report.fault!.message, /stopped/)
  t.is(report.undelivered.length, 20, 'the stopped host took none of the 20 in flight')
  for (const o of await within(Promise.all(inFlight), 5000, 'the requests in flight settle')) {
    if (o.ok) t.fail(`request ${o.i} answered by a stopped host`)
    else t.true(['ERR_RINGBRIDGE_TIMEOUT', 'ERR_RINGBRIDGE_CLOSED'].includes(codeOf(o.error)!), `request ${o.i}: ${String(o.error)}`)
  }
  t.true(maxGap < 400, `the event loop was blocked for ${maxGap} ms`)
  t.true(took < 5000, `terminate took ${took} ms to give up on the stopped host`)
  await until(() => gone(pid), 5000, 'the stopped host to be killed')
  const again = await launchHost(rt)
  t.is(await within(again.request(9), 10_000, 'the next launch answers'), 9)
})

test.serial('dispose() of a stopped kernel host returns within a second and rejects what waited, naming the host', async (t) => {
  const rt = await open(t)
  const k = await launchHost(rt)
  const pid = k.hostPid!
  reapOnTeardown(t, pid)
  t.is(await within(k.request(1), 10_000, 'a reply before the stop'), 1)
  process.kill(pid, 'SIGSTOP')
  await until(() => procState(pid) === 'T', 5000, 'the host to be stopped')
  const inFlight = requests(k, 100, 110)
  const started = Date.now()
  k.dispose()
  const took = Date.now() - started
  t.true(took < 1000, `dispose() blocked for ${took} ms`)
  for (const o of await within(Promise.all(inFlight), 5000, 'the requests in flight settle')) {
    if (o.ok) t.fail(`request ${o.i} answered by a stopped host`)
    else {
      t.is(codeOf(o.error), 'ERR_RINGBRIDGE_TIMEOUT', String(o.error))
      t.regex((o.error as Error).message, new RegExp(`pid ${pid}\\b.*stopped|stopped.*pid ${pid}\\b`))
    }
  }
  t.is(codeOf(k.fault), 'ERR_RINGBRIDGE_TIMEOUT')
  await until(() => gone(pid), 5000, 'the stopped host to be killed')
})

/** Runs `script` in a child `node` leading a process group of its own; resolves its first line
 * starting with `READY`, the child and a promise of its exit and whole stdout. */
function startParent(script: string, ms: number) {
  const child = spawn(process.execPath, ['-e', script], { detached: true, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  const ready = new Promise<string>((resolve) => {
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString()
      const line = stdout.split('\n').find((l) => l.startsWith('READY'))
      if (line) resolve(line)
    })
  })
  const timer = setTimeout(() => child.kill('SIGKILL'), ms)
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve) =>
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, stderr })
    }),
  )
  return { child, ready: within(ready, ms, 'the parent process to be ready'), exit }
}

/** A parent that streams requests (100 per ms) to a kernel host and, on `signal`, stops
 * streaming, sends a last burst of 5120 (its work in hand) and terminates with drain, then prints
 * what became of every request. */
const drainingParent = (signal: string) => `
  const rb = require(${INDEX})
  ;(async () => {
    const rt = await rb.Runtime.open({ backend: 'cpu' })
    const k = await rt.launch({ handler: 'echo', input: rb.u32, output: rb.u32, capacity: 64, isolation: 'process' })
    let sent = 0, ok = 0, wrong = 0
    const errors = []
    const all = []
    const send = (n) => {
      for (let j = 0; j < n; j++) {
        const i = sent++
        all.push(k.request(i).then((v) => (v === i ? ok++ : wrong++), (e) => errors.push(String(e))))
      }
    }
    const sender = setInterval(() => {
      send(100)
      if (sent === 1000) process.stdout.write('READY ' + k.hostPid + '\\n')
    }, 1)
    process.on(${JSON.stringify(signal)}, async () => {
      clearInterval(sender)
      send(5120)
      const inFlight = sent - ok - wrong - errors.length
      const report = await k.terminate({ mode: 'drain' })
      await Promise.all(all)
      await rt.close()
      process.stdout.write(JSON.stringify({ sent, inFlight, ok, wrong, errors: errors.slice(0, 3), errorCount: errors.length, undelivered: report.undelivered.length, fault: report.fault ? String(report.fault) : null, hostPid: k.hostPid }) + '\\n')
      process.exit(0)
    })
  })()`

for (const [signal, what, alsoHost] of [
  ['SIGINT', 'Ctrl-C (SIGINT to the process group)', false],
  ['SIGTERM', "a service manager's stop (SIGTERM to the group and to every process)", true],
  ['SIGHUP', 'a hang-up (SIGHUP to the group and to every process)', true],
] as const) {
  test.serial(`${what} leaves the kernel host to its parent: a drain delivers every message in flight`, async (t) => {
    const { child, ready, exit } = startParent(drainingParent(signal), 30_000)
    const hostPid = Number((await ready).split(' ')[1])
    t.true(Number.isInteger(hostPid) && hostPid > 0)
    reapOnTeardown(t, hostPid)
    process.kill(-child.pid!, signal)
    if (alsoHost) process.kill(hostPid, signal)
    const { code, signal: died, stdout, stderr } = await within(exit, 30_000, 'the parent to drain and exit')
    t.deepEqual({ code, died }, { code: 0, died: null }, stderr)
    const result = JSON.parse(stdout.split('\n').find((l) => l.startsWith('{'))!)
    t.true(result.inFlight >= 5120, `messages were in flight at the drain: ${JSON.stringify(result)}`)
    t.deepEqual(
      { ok: result.ok, wrong: result.wrong, errorCount: result.errorCount, undelivered: result.undelivered, fault: result.fault },
      { ok: result.sent, wrong: 0, errorCount: 0, undelivered: 0, fault: null },
      JSON.stringify(result),
    )
    t.is(result.hostPid, hostPid)
    await until(() => gone(hostPid), 5000, 'the host to exit after its parent terminated it')
  })
}

/** A parent that streams requests to a kernel host, then exits or waits to be killed. */
const streamingParent = (exitAfter: boolean) => `
  const rb = require(${INDEX})
  ;(async () => {
    const rt = await rb.Runtime.open({ backend: 'cpu' })
    const k = await rt.launch({ handler: 'echo', input: rb.u32, output: rb.u32, capacity: 64, isolation: 'process' })
    let sent = 0
    setInterval(() => {
      for (let j = 0; j < 10; j++) k.request(sent++).catch(() => {})
      if (sent === 1000) {
        process.stdout.write('READY ' + k.hostPid + '\\n')
        ${exitAfter ? 'process.exit(0)' : ''}
      }
    }, 1)
  })()`

test.serial('a parent that exits with requests in flight leaves no kernel host behind', async (t) => {
  const { ready, exit } = startParent(streamingParent(true), 30_000)
  const hostPid = Number((await ready).split(' ')[1])
  reapOnTeardown(t, hostPid)
  const { code, stderr } = await within(exit, 30_000, 'the parent to exit')
  t.is(code, 0, stderr)
  await until(() => gone(hostPid), 5000, `kernel host ${hostPid} to exit after its parent`)
  t.pass()
})

test.serial('a parent killed with SIGKILL with requests in flight leaves no kernel host behind', async (t) => {
  const { child, ready, exit } = startParent(streamingParent(false), 30_000)
  const hostPid = Number((await ready).split(' ')[1])
  reapOnTeardown(t, hostPid)
  t.false(gone(hostPid), 'the host serves while its parent runs')
  child.kill('SIGKILL')
  const { signal } = await within(exit, 10_000, 'the parent to die')
  t.is(signal, 'SIGKILL')
  await until(() => gone(hostPid), 5000, `kernel host ${hostPid} to exit after its parent was killed`)
  t.pass()
})

test.serial('launching and terminating kernel hosts keeps the event loop running', async (t) => {
  const rt = await open(t)
  // Warm: the first launch also loads code this process had not run yet.
  await (await launchHost(rt)).terminate()
  const watch = loopWatch()
  for (let i = 0; i < 4; i++) {
    const k = await within(launchHost(rt), 10_000, `launch ${i}`)
    t.is(await within(k.request(i), 10_000, `request ${i}`), i)
    await within(k.terminate(), 10_000, `terminate ${i}`)
  }
  const maxGap = watch.stop()
  t.true(maxGap < 60, `the event loop was blocked for ${maxGap} ms by a launch or terminate`)
})
