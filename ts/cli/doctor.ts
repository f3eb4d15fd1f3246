/**
 * `ringbridge doctor`: what this host offers and why — platform and binary, driver, NVRTC
 * (where found, or every place looked at), GPUs, each transport, the kernel cache directory,
 * and a kernel host started and stopped. Text, or one JSON object with `--json`.
 * @internal
 * @module
 */
import { spawnSync } from 'node:child_process'
import { accessSync, constants, existsSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import native from '../binding'
import { Runtime, bytes } from '../../index'

type Backend = 'auto' | 'cuda' | 'cpu'

/** One check's outcome. */
interface Check {
  ok: boolean
  /** Why it chose what it chose, or why it failed. */
  reason: string
}

interface TransportCheck extends Check {
  name: string
  /** False when it was not tried (no cuda backend here). */
  probed: boolean
  /** The transport `auto` picked, for the `auto` row. */
  chose?: string
  roundTripUs?: number
}

interface KernelHostCheck extends Check {
  backend: string
  pid?: number
  roundTripMs?: number
  processed?: number
}

/** The `--json` object. */
export interface DoctorReport {
  ok: boolean
  asked: Backend
  platform: { os: string; arch: string; node: string; glibc: string | null; ringbridge: string }
  binary: { path: string | null; target: string | null; override: string | null }
  driver: { present: boolean; cudaVersion: string | null; error: string | null }
  nvrtc: ReturnType<typeof native.nvrtcLookup> & { pythonSiteDirs: string[]; pythonError: string | null }
  gpus: { ordinal: number; name: string; sm: string; sms: number; memoryBytes: number; memoryGiB: number }[]
  backends: { cpu: Check; cuda: Check; auto: Check & { chose: string | null } }
  transports: TransportCheck[]
  cache: { dir: string | null; rule: string; exists: boolean; writable: boolean }
  kernelHost: KernelHostCheck
}

const errText = (e: unknown) => (e instanceof Error ? e.message : String(e))

/** Runs the checks; prints text or JSON; resolves with the exit code. */
export async function doctor(options: { backend: Backend; json: boolean }): Promise<number> {
  const report = await collect(options.backend)
  if (options.json) console.log(JSON.stringify(report, null, 2))
  else console.log(text(report))
  return report.ok ? 0 : 1
}

/** Every check, in the order printed. */
export async function collect(asked: Backend): Promise<DoctorReport> {
  const root = path.resolve(__dirname, '..', '..')
  let version = 'unknown'
  try {
    version = (JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string }).version
  } catch {}
  const header = (process.report?.getReport?.() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header
  const platform = { os: process.platform, arch: process.arch, node: process.version, glibc: header?.glibcVersionRuntime ?? null, ringbridge: version }

  // The binary: the .node file this process loaded (napi's loader requires exactly one).
  const nodeFile = Object.keys(require.cache).find((k) => k.endsWith('.node') && path.basename(k).startsWith('ringbridge')) ?? null
  const target = (native as unknown as { __napiBindingTarget?: string }).__napiBindingTarget ?? null
  const binary = { path: nodeFile, target, override: process.env.NAPI_RS_NATIVE_LIBRARY_PATH ?? null }

  const d = native.cudaDriverReport()
  const driver = { present: d.present, cudaVersion: d.cudaVersion ?? null, error: d.error ?? null }
  const gpus = d.gpus.map((g) => ({ ...g, memoryGiB: Math.round((g.memoryBytes / 2 ** 30) * 10) / 10 }))

  const python = pythonSiteDirs()
  const nvrtc = { ...native.nvrtcLookup(python.dirs), pythonSiteDirs: python.dirs, pythonError: python.error }

  const backends = {
    cpu: await cpuWorks(),
    cuda: cudaWorks(),
    auto: { ok: false, reason: '', chose: null as string | null },
  }
  try {
    const [name, reason] = native.chooseBackend('auto')
    backends.auto = { ok: true, reason: reason!, chose: name! }
  } catch (e) {
    backends.auto = { ok: false, reason: errText(e), chose: null }
  }

  const transports = await probeTransports(backends.cuda)
  const cache = cacheDir()
  const kernelHost = await kernelHostCheck()

  // The asked-for backend works when its own checks pass: cpu needs its echo and the kernel
  // host; cuda needs the backend and one transport; auto needs either.
  const cpuOk = backends.cpu.ok && kernelHost.ok
  const cudaOk = backends.cuda.ok && transports.some((t) => t.ok && t.name !== 'auto')
  const ok = asked === 'cpu' ? cpuOk : asked === 'cuda' ? cudaOk : cpuOk || cudaOk
  return { ok, asked, platform, binary, driver, nvrtc, gpus, backends, transports, cache, kernelHost }
}

/** `python3`'s site-packages (the lazily asked, doctor-only part of the NVRTC lookup). */
function pythonSiteDirs(): { dirs: string[]; error: string | null } {
  const r = spawnSync('python3', ['-c', 'import json, site; print(json.dumps(site.getsitepackages() + [site.getusersitepackages()]))'], {
    encoding: 'utf8',
    timeout: 5000,
  })
  if (r.error) return { dirs: [], error: `python3 not run: ${r.error.message}` }
  if (r.status !== 0) return { dirs: [], error: `python3 exited with ${r.status}: ${r.stderr.trim().split('\n').pop() ?? ''}` }
  try {
    const dirs = JSON.parse(r.stdout) as unknown
    return { dirs: Array.isArray(dirs) ? dirs.filter((x): x is string => typeof x === 'string') : [], error: null }
  } catch (e) {
    return { dirs: [], error: `python3 printed no JSON: ${errText(e)}` }
  }
}

async function cpuWorks(): Promise<Check> {
  let rt: Runtime | undefined
  try {
    rt = await Runtime.open({ backend: 'cpu' })
    const k = await rt.launch({ handler: 'echo', input: bytes(), output: bytes(), capacity: 16, slotSize: 64 })
    const r = await k.request(new Uint8Array([1, 2, 3]), { timeoutMs: 10_000 })
    if (r.length !== 3 || r[2] !== 3) throw new Error('the echo kernel returned a wrong reply')
    await k.terminate()
    return { ok: true, reason: 'echo kernel answered a request (thread isolation)' }
  } catch (e) {
    return { ok: false, reason: errText(e) }
  } finally {
    await rt?.close().catch(() => {})
  }
}

function cudaWorks(): Check {
  try {
    const [, reason] = native.chooseBackend('cuda')
    return { ok: true, reason: reason! }
  } catch (e) {
    return { ok: false, reason: errText(e) }
  }
}

/**
 * Each transport, set up for real: an echo kernel launched over it in a kernel host (a GPU
 * fault ends that process, not this one), one request, terminate. `auto` last, with its choice.
 */
async function probeTransports(cuda: Check): Promise<TransportCheck[]> {
  const names = ['hybrid', 'mapped', 'dma', 'managed', 'auto'] as const
  if (!cuda.ok) return names.map((name) => ({ name, ok: false, probed: false, reason: 'not probed: the cuda backend is unavailable (above)' }))
  let rt: Runtime
  try {
    rt = await Runtime.open({ backend: 'cuda' })
  } catch (e) {
    return names.map((name) => ({ name, ok: false, probed: false, reason: `not probed: ${errText(e)}` }))
  }
  const out: TransportCheck[] = []
  for (const name of names) {
    try {
      const k = await rt.launch({ handler: 'echo', input: bytes(), output: bytes(), capacity: 16, slotSize: 64, transport: name, isolation: 'process' })
      const t = performance.now()
      const r = await k.request(new Uint8Array([7]), { timeoutMs: 10_000 })
      const us = (performance.now() - t) * 1000
      await k.terminate()
      if (r.length !== 1 || r[0] !== 7) throw new Error('the echo kernel returned a wrong reply')
      out.push({ name, ok: true, probed: true, reason: k.transportReason, roundTripUs: Math.round(us * 10) / 10, ...(name === 'auto' ? { chose: k.transport } : {}) })
    } catch (e) {
      out.push({ name, ok: false, probed: true, reason: errText(e) })
    }
  }
  await rt.close().catch(() => {})
  return out
}

/** The kernel cache directory, with the rule that chose it (nvrtc.rs `cache_dir`). */
function cacheDir(): DoctorReport['cache'] {
  const dir = native.kernelCacheDir() ?? null
  const env = process.env
  const rule =
    env.RINGBRIDGE_CACHE_DIR !== undefined
      ? env.RINGBRIDGE_CACHE_DIR === ''
        ? 'RINGBRIDGE_CACHE_DIR is empty: cache off'
        : 'RINGBRIDGE_CACHE_DIR'
      : env.XDG_CACHE_HOME !== undefined
        ? '$XDG_CACHE_HOME/ringbridge'
        : env.HOME !== undefined
          ? '$HOME/.cache/ringbridge'
          : 'no RINGBRIDGE_CACHE_DIR, XDG_CACHE_HOME or HOME: cache off'
  let exists = false
  let writable = false
  if (dir !== null) {
    exists = existsSync(dir)
    // Writable now, or creatable: the nearest existing ancestor is writable.
    let probe = dir
    while (!existsSync(probe) && path.dirname(probe) !== probe) probe = path.dirname(probe)
    try {
      accessSync(probe, constants.W_OK)
      writable = true
    } catch {}
  }
  return { dir, rule, exists, writable }
}

/** An echo kernel in a kernel host process on the cpu backend: started, one request, stopped. */
async function kernelHostCheck(): Promise<KernelHostCheck> {
  let rt: Runtime | undefined
  try {
    rt = await Runtime.open({ backend: 'cpu' })
    const t = performance.now()
    const k = await rt.launch({ handler: 'echo', input: bytes(), output: bytes(), capacity: 16, slotSize: 64, isolation: 'process' })
    const pid = k.hostPid
    const r = await k.request(new Uint8Array([42]), { timeoutMs: 10_000 })
    if (r.length !== 1 || r[0] !== 42) throw new Error('the echo kernel returned a wrong reply')
    const report = await k.terminate()
    const ms = performance.now() - t
    return { ok: true, backend: 'cpu', reason: `started (pid ${pid}), answered one request, terminated (${report.mode}, ${report.processed} processed)`, pid, roundTripMs: Math.round(ms * 10) / 10, processed: report.processed }
  } catch (e) {
    return { ok: false, backend: 'cpu', reason: errText(e) }
  } finally {
    await rt?.close().catch(() => {})
  }
}

const mark = (ok: boolean) => (ok ? 'ok  ' : 'FAIL')

/** The text report. */
export function text(r: DoctorReport): string {
  const L: string[] = []
  const p = r.platform
  L.push(`ringbridge ${p.ringbridge} doctor`)
  L.push('')
  L.push(`platform     ${p.os}-${p.arch}, Node.js ${p.node}${p.glibc ? `, glibc ${p.glibc}` : ''}`)
  L.push(`binary       ${r.binary.path ?? '(no .node file found in require.cache)'}${r.binary.target ? ` (${r.binary.target})` : ''}`)
  if (r.binary.override) L.push(`             NAPI_RS_NATIVE_LIBRARY_PATH=${r.binary.override}`)
  L.push(`driver       ${r.driver.present ? `CUDA ${r.driver.cudaVersion ?? '?'}${r.driver.error ? ` (${r.driver.error})` : ''}` : 'not found (libcuda.so.1 could not be loaded)'}`)
  const n = r.nvrtc
  if (n.loaded) {
    L.push(`nvrtc        ${n.version ?? '?'} from ${n.path ?? '?'}${n.foundByLookup ? ` (${n.source})` : ' (found by the dynamic loader by name)'}`)
  } else {
    L.push(`nvrtc        not found: looked for ${n.names.join(', ')} in`)
    for (const pl of n.places) L.push(`               ${pl.dir}  [${pl.source}${pl.exists ? '' : ', missing'}]`)
    L.push('             then by name through the dynamic loader (its cache)')
    for (const f of n.failures) L.push(`             failed to load ${f}`)
  }
  const pyFound = n.extraPlaces.filter((x) => x.files.length > 0)
  for (const x of pyFound) L.push(`             python3 site has ${x.files.join(', ')}: the library does not search there; set LD_LIBRARY_PATH=${x.dir}`)
  if (!n.loaded && n.extraPlaces.length > 0) L.push(`             also not in python3's site-packages: ${n.extraPlaces.map((x) => x.dir).join(', ')}`)
  if (n.pythonError) L.push(`             (${n.pythonError})`)
  if (r.gpus.length === 0) L.push('gpus         none')
  for (const g of r.gpus) L.push(`gpu ${g.ordinal}        ${g.name}, ${g.sm}, ${g.sms} SMs, ${g.memoryGiB} GiB`)
  L.push('')
  L.push('backends')
  L.push(`  ${mark(r.backends.cpu.ok)} cpu      ${r.backends.cpu.reason}`)
  L.push(`  ${mark(r.backends.cuda.ok)} cuda     ${r.backends.cuda.reason}`)
  L.push(`       auto     -> ${r.backends.auto.chose ?? '?'}: ${r.backends.auto.reason}`)
  L.push('transports (cuda)')
  for (const t of r.transports) {
    L.push(`  ${t.probed ? mark(t.ok) : 'skip'} ${t.name.padEnd(8)} ${t.reason}${t.roundTripUs !== undefined ? ` (one request ${t.roundTripUs} us)` : ''}`)
  }
  L.push('')
  const c = r.cache
  L.push(`kernel cache ${c.dir ?? 'off'}  [${c.rule}${c.dir ? `${c.exists ? ', exists' : ', not created yet'}${c.writable ? ', writable' : ', NOT writable'}` : ''}]`)
  const h = r.kernelHost
  L.push(`kernel host  ${mark(h.ok)} ${h.backend}: ${h.reason}${h.roundTripMs !== undefined ? ` in ${h.roundTripMs} ms` : ''}`)
  L.push('')
  L.push(`${r.ok ? 'ok' : 'FAIL'}: backend '${r.asked}' ${r.ok ? 'works here' : 'cannot work here'}`)
  return L.join('\n')
}
