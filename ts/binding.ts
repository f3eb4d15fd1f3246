/**
 * The native module, loaded once. Only modules inside `ts/` import it; users see the facade.
 *
 * `./native` is napi-rs's generated loader: it picks `ringbridge.<platform>.node` next to it or
 * the platform package (`ringbridge-linux-x64-gnu`, ...), an optional dependency of the root
 * package. When nothing loads, its own error blames an npm bug whatever the cause; this module
 * replaces that with one that names this platform, the supported ones and what each load attempt
 * said (the loader's errors stay on `cause`).
 * @internal
 * @module
 */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

type Native = typeof import('./native')

/** The targets the package ships binaries for, when `package.json` cannot be read. */
const FALLBACK_TARGETS = ['linux-x64-gnu', 'linux-arm64-gnu']
/** The oldest glibc the `-gnu` binaries load on (they are linked against glibc 2.17). */
const GLIBC_FLOOR = '2.17'

/** `linux-x64-gnu` → `linux-x64 (glibc 2.17 or newer)`. */
function describeTarget(abi: string): string {
  const m = /^(\w+)-(\w+)(?:-(gnu|musl|msvc|gnueabihf|musleabihf))?$/.exec(abi)
  if (!m) return abi
  const [, platform, arch, libc] = m
  if (libc === 'gnu' || libc === 'gnueabihf') return `${platform}-${arch} (glibc ${GLIBC_FLOOR} or newer)`
  if (libc === 'musl' || libc === 'musleabihf') return `${platform}-${arch} (musl)`
  return `${platform}-${arch}`
}

/** Rust target → napi-rs's platform-arch-abi (`aarch64-unknown-linux-gnu` → `linux-arm64-gnu`). */
function abiOfTriple(triple: string): string | undefined {
  const m = /^(x86_64|aarch64)-unknown-linux-(gnu|musl)$/.exec(triple)
  return m ? `linux-${m[1] === 'x86_64' ? 'x64' : 'arm64'}-${m[2]}` : undefined
}

/**
 * The platform packages: the root's `optionalDependencies` (`ringbridge-linux-x64-gnu` →
 * `linux-x64-gnu`; a packed package has them), else `napi.targets` (a checkout).
 */
function supportedTargets(): { name: string; version: string; targets: string[] } {
  try {
    const pkg = JSON.parse(readFileSync(join(__dirname, '..', 'package.json'), 'utf8')) as {
      name?: string
      version?: string
      optionalDependencies?: Record<string, string>
      napi?: { targets?: string[] }
    }
    const name = pkg.name ?? 'ringbridge'
    let targets = Object.keys(pkg.optionalDependencies ?? {})
      .filter((dep) => dep.startsWith(`${name}-`))
      .map((dep) => dep.slice(name.length + 1))
    if (targets.length === 0) targets = (pkg.napi?.targets ?? []).map(abiOfTriple).filter((t): t is string => !!t)
    return { name, version: pkg.version ?? '', targets: targets.length > 0 ? targets : FALLBACK_TARGETS }
  } catch {
    return { name: 'ringbridge', version: '', targets: FALLBACK_TARGETS }
  }
}

/** `glibc 2.36`, `musl` or `` (not Linux), as napi-rs's loader tells them apart. */
function libcOf(): string {
  if (process.platform !== 'linux') return ''
  try {
    const report = process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined
    const glibc = report?.header?.glibcVersionRuntime
    if (glibc) return `glibc ${glibc}`
  } catch {
    // fall through to the filesystem check
  }
  try {
    if (readFileSync('/usr/bin/ldd', 'utf8').includes('musl')) return 'musl'
  } catch {
    // unknown
  }
  return 'musl or unknown libc'
}

/** The messages of an error and its `cause` chain (napi-rs chains one error per attempt). */
function attemptMessages(err: unknown): string[] {
  const out: string[] = []
  const seen = new Set<unknown>()
  let e: unknown = (err as { cause?: unknown } | null)?.cause ?? err
  while (e && !seen.has(e) && out.length < 8) {
    seen.add(e)
    const message = e instanceof Error ? e.message : String(e)
    out.push(message.split('\n')[0] ?? message)
    e = (e as { cause?: unknown }).cause
  }
  return out
}

/** The error `require('ringbridge')` throws when no native binary loads on this machine. */
function nativeLoadError(err: unknown): Error {
  const { name, version, targets } = supportedTargets()
  const libc = libcOf()
  const abi = libc.startsWith('glibc') ? 'gnu' : libc === 'musl' ? 'musl' : ''
  const here = `${process.platform}-${process.arch}${libc ? ` (${libc})` : ''}`
  const hereAbi = `${process.platform}-${process.arch}${abi ? `-${abi}` : ''}`
  const supported = targets.map(describeTarget).join(', ')
  const attempts = attemptMessages(err)
  const detail = attempts.length > 0 ? ` Load attempts: ${attempts.map((m) => `[${m}]`).join(' ')}` : ''
  const backends = 'Every backend needs it, the CPU backend included: there is no pure-JavaScript fallback.'
  let message: string
  if (targets.includes(hereAbi)) {
    const pkg = `${name}-${hereAbi}`
    message =
      `${name}: the native binary for ${here} did not load. It comes in the package ${pkg}, an optional ` +
      `dependency of ${name}: check that node_modules/${pkg} exists (installs with --omit=optional, or ` +
      `a lockfile made on another platform, leave it out; \`npm install ${pkg}${version ? `@${version}` : ''}\` ` +
      `adds it) and that this system meets its requirements (${describeTarget(hereAbi)}). ${backends}${detail}`
  } else {
    message =
      `${name}: no native binary for this platform: ${here}. Binaries are published for ${supported}. ` +
      `${backends}${detail}`
  }
  const error = new Error(message)
  ;(error as { code?: string }).code = 'ERR_RINGBRIDGE_NO_NATIVE_BINARY'
  // The loader's own error only wraps the attempts (`cause`) in its misleading text: keep the attempts.
  const loaderCause = (err as { cause?: unknown } | null)?.cause
  error.cause = err instanceof Error && /^Cannot find native binding/.test(err.message) && loaderCause ? loaderCause : err
  return error
}

function load(): Native {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require('./native') as Native
  } catch (err) {
    throw nativeLoadError(err)
  }
}

const native: Native = load()

export = native
