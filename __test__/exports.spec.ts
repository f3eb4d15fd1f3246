// The package as a user installs it: `npm pack` (no build scripts), unpacked into a temporary
// project's node_modules, then (1) TypeScript consumers compile against the packed .d.ts under
// strict settings (commonjs without esModuleInterop, nodenext from a .cts and a .mts, bundler),
// (2) `require` and `import` hand out the same API, internals are not importable, and
// `ringbridge/kernel-host` does nothing on import, (3) the README's ESM and CJS examples run
// from the installed copy.
import { execFile, spawnSync } from 'node:child_process'
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'

import test, { type ExecutionContext } from 'ava'

const run = promisify(execFile)
const root = path.resolve(__dirname, '..')
const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as Record<string, any>
const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc')

let dir = ''
let consumer = ''

test.before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'ringbridge-exports-'))
  // --ignore-scripts: pack what is built; `prepare` would rebuild the addon.
  const { stdout } = await run('npm', ['pack', '--ignore-scripts', '--silent', '--pack-destination', dir], { cwd: root, timeout: 120_000 })
  const tarball = path.join(dir, stdout.trim().split('\n').pop()!)
  consumer = path.join(dir, 'consumer')
  const installed = path.join(consumer, 'node_modules', 'ringbridge')
  mkdirSync(installed, { recursive: true })
  await run('tar', ['-xzf', tarball, '-C', installed, '--strip-components=1'])
  // What npm install would add beside it, from this checkout (no network): @types/node for the
  // type checks, and the package's own dependencies, if any.
  mkdirSync(path.join(consumer, 'node_modules', '@types'), { recursive: true })
  symlinkSync(path.join(root, 'node_modules', '@types', 'node'), path.join(consumer, 'node_modules', '@types', 'node'))
  for (const dep of Object.keys(pkg.dependencies ?? {})) {
    const from = path.join(root, 'node_modules', dep)
    const to = path.join(consumer, 'node_modules', dep)
    if (existsSync(from) && !existsSync(to)) {
      mkdirSync(path.dirname(to), { recursive: true })
      symlinkSync(from, to)
    }
  }
  // The root package carries no binary: npm installs this platform's package beside it (the
  // release writes it into optionalDependencies, scripts/pack.sh shows how). Made here from the
  // checkout's npm/<abi>/package.json and its built .node.
  const abi = `${process.platform}-${process.arch}-gnu`
  const built = path.join(root, 'ts', `ringbridge.${abi}.node`)
  const platformPkg = path.join(consumer, 'node_modules', `ringbridge-${abi}`)
  if (existsSync(built) && existsSync(path.join(root, 'npm', abi, 'package.json'))) {
    mkdirSync(platformPkg, { recursive: true })
    copyFileSync(path.join(root, 'npm', abi, 'package.json'), path.join(platformPkg, 'package.json'))
    copyFileSync(built, path.join(platformPkg, `ringbridge.${abi}.node`))
  }
  writeFileSync(path.join(consumer, 'package.json'), JSON.stringify({ name: 'consumer', private: true }))
})

test.after.always(() => {
  if (dir) rmSync(dir, { recursive: true, force: true })
})

/** Writes `files` and a tsconfig into a fresh folder of the consumer project; runs `tsc --noEmit`. */
async function typecheck(name: string, compilerOptions: Record<string, unknown>, files: Record<string, string>) {
  const project = path.join(consumer, name)
  mkdirSync(project, { recursive: true })
  for (const [file, text] of Object.entries(files)) writeFileSync(path.join(project, file), text)
  const tsconfig = {
    compilerOptions: { strict: true, noEmit: true, skipLibCheck: false, target: 'ES2022', types: ['node'], ...compilerOptions },
    files: Object.keys(files),
  }
  writeFileSync(path.join(project, 'tsconfig.json'), JSON.stringify(tsconfig, null, 2))
  const r = spawnSync(process.execPath, [tsc, '-p', project], { encoding: 'utf8', timeout: 120_000 })
  return { code: r.status, output: `${r.stdout}${r.stderr}`.replaceAll(project + path.sep, '') }
}

/**
 * Errors the packed types still have, each waiting on a change outside this test. The list must
 * shrink to nothing: an error not in it fails a test, and so does an entry that no longer occurs
 * (then delete it).
 * - ts/launch.ts default-imports ./binding, an `export =` module (`import native from
 *   './binding'`); the import is kept in launch.d.ts, so every consumer without esModuleInterop /
 *   allowSyntheticDefaultImports gets TS1259. The fix: `import native = require('./binding')` in
 *   ts/launch.ts (same JavaScript; checked by hand against the packed launch.d.ts).
 */
const PENDING: { where: string[]; error: RegExp }[] = [
]

/** Fails on any error not in PENDING for this project, and on a PENDING error that went away. */
function expectClean(t: ExecutionContext, name: string, r: { code: number | null; output: string }) {
  const pending = PENDING.filter((p) => p.where.includes(name))
  const errors = r.output.split('\n').filter((l) => /error TS\d+/.test(l))
  t.deepEqual(errors.filter((l) => !pending.some((p) => p.error.test(l))), [], 'unexpected type errors')
  for (const p of pending) t.true(errors.some((l) => p.error.test(l)), `fixed: delete ${p.error} from PENDING`)
  if (pending.length === 0) t.is(r.code, 0, r.output)
}

/** A consumer's use of the API: values, types, generics, errors. */
const USE = `
const Pair = struct({ key: u32, n: u32 })
type Pair = Infer<typeof Pair>
export async function roundTrip(p: Pair): Promise<Pair> {
  const runtime: Runtime = await Runtime.open({ backend: 'cpu' } satisfies RuntimeOptions)
  const kernel = await runtime.launch({ handler: 'echo', input: Pair, output: Pair })
  const reply: Pair = await kernel.request(p)
  const report: TerminateReport<Pair> = await kernel.terminate()
  void report
  await runtime.close()
  return reply
}
export function isOurs(e: unknown): boolean {
  return e instanceof RingbridgeError && e.code === 'ERR_RINGBRIDGE_TIMEOUT' && ERROR_CODES.includes(e.code)
}
export const floats = array(f32, 4)
`
const IMPORTS = `{ ERROR_CODES, Runtime, RingbridgeError, array, f32, struct, u32, type Infer, type RuntimeOptions, type TerminateReport }`

test('types: commonjs consumer, strict, esModuleInterop off, moduleResolution node10', async (t) => {
  const r = await typecheck('cjs-no-interop', { module: 'commonjs', moduleResolution: 'node', esModuleInterop: false }, {
    'index.ts': `import ${IMPORTS} from 'ringbridge'\nimport * as all from 'ringbridge'\nimport required = require('ringbridge')\n${USE}\nexport const same: typeof all.Runtime = required.Runtime\n`,
  })
  expectClean(t, 'cjs-no-interop', r)
})

test('types: nodenext consumer, a .cts and a .mts file importing ringbridge (and ringbridge/kernel-host)', async (t) => {
  const r = await typecheck('nodenext', { module: 'nodenext', moduleResolution: 'nodenext', esModuleInterop: false }, {
    'cjs.cts': `import ${IMPORTS} from 'ringbridge'\nimport required = require('ringbridge')\nimport { run } from 'ringbridge/kernel-host'\n${USE}\nexport const same: typeof Runtime = required.Runtime\nexport const host: () => number = run\n`,
    'esm.mts': `import ${IMPORTS} from 'ringbridge'\nimport * as all from 'ringbridge'\nimport { run } from 'ringbridge/kernel-host'\n${USE}\nexport const same: typeof Runtime = all.Runtime\nexport const host: () => number = run\n`,
  })
  expectClean(t, 'nodenext', r)
})

test('types: bundler consumer', async (t) => {
  const r = await typecheck('bundler', { module: 'esnext', moduleResolution: 'bundler' }, {
    'index.ts': `import ${IMPORTS} from 'ringbridge'\n${USE}\n`,
  })
  expectClean(t, 'bundler', r)
})

test('types: internals are not importable under nodenext', async (t) => {
  const r = await typecheck('nodenext-internal', { module: 'nodenext', moduleResolution: 'nodenext' }, {
    'internal.mts': `import { RingKernel } from 'ringbridge/ts/kernel'\nexport const k = RingKernel\n`,
  })
  t.not(r.code, 0)
  t.regex(r.output, /TS2307: Cannot find module 'ringbridge\/ts\/kernel'/)
})

/** Runs `node` in the consumer project with `source` as an ES module or a CommonJS script. */
async function node(source: string, type: 'module' | 'commonjs', timeout = 30_000) {
  const args = ['--input-type', type, '-e', source]
  const r = spawnSync(process.execPath, args, { cwd: consumer, encoding: 'utf8', timeout })
  return { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr }
}

test('runtime: require and import give the same API, the very same objects', async (t) => {
  const r = await node(
    `const cjs = require('ringbridge')
     import('ringbridge').then((esm) => {
       const names = (o) => Object.keys(o).sort()
       console.log(JSON.stringify({
         cjs: names(cjs),
         esm: names(esm),
         same: names(esm).every((k) => esm[k] === cjs[k]),
         file: require.resolve('ringbridge'),
         version: require('ringbridge/package.json').version,
       }))
     })`,
    'commonjs',
  )
  t.is(r.stderr, '')
  t.is(r.code, 0)
  const out = JSON.parse(r.stdout) as { cjs: string[]; esm: string[]; same: boolean; file: string; version: string }
  const local = Object.keys(require('../index') as object).sort()
  t.deepEqual(out.cjs, local)
  t.deepEqual(out.esm, local)
  t.true(out.same, 'import and require hand out the same objects')
  t.is(out.file, path.join(consumer, 'node_modules', 'ringbridge', 'index.js'))
  t.is(out.version, pkg.version)
})

test('runtime: internals are not exported (require and import: ERR_PACKAGE_PATH_NOT_EXPORTED)', async (t) => {
  const r = await node(
    `const codes = []
     for (const p of ['ringbridge/ts/kernel', 'ringbridge/ts/kernel.js', 'ringbridge/ts/binding', 'ringbridge/index.js', 'ringbridge/ts/kernel-host.js']) {
       try { require(p); codes.push(p + ' loaded') } catch (e) { codes.push(e.code) }
     }
     import('ringbridge/ts/kernel.js').then(() => codes.push('loaded'), (e) => codes.push(e.code)).then(() => console.log(JSON.stringify(codes)))`,
    'commonjs',
  )
  t.is(r.stderr, '')
  t.deepEqual(JSON.parse(r.stdout), Array(6).fill('ERR_PACKAGE_PATH_NOT_EXPORTED'))
})

for (const type of ['commonjs', 'module'] as const) {
  test(`runtime: ringbridge/kernel-host does nothing on import (${type}): no output, the process lives on, no addon loaded`, async (t) => {
    const load = type === 'module' ? `import * as host from 'ringbridge/kernel-host'` : `const host = require('ringbridge/kernel-host')`
    const r = await node(
      `${load}
       setTimeout(() => {
         console.log(JSON.stringify({ exports: Object.keys(host).filter((k) => k !== 'default' && k !== '__esModule'), run: typeof host.run }))
       }, 300)`,
      type,
    )
    t.is(r.stderr, '')
    t.is(r.code, 0)
    t.deepEqual(JSON.parse(r.stdout), { exports: ['run'], run: 'function' })
  })
}

test('runtime: importing ringbridge/kernel-host loads no native addon', async (t) => {
  const r = await node(
    `require('ringbridge/kernel-host')
     console.log(JSON.stringify(Object.keys(require.cache).map((f) => require('node:path').basename(f))))`,
    'commonjs',
  )
  t.is(r.stderr, '')
  t.deepEqual(JSON.parse(r.stdout), ['kernel-host.js'])
})

for (const [file, expected] of [
  ['quickstart.mjs', '[ 12, 24, 36, 48 ]'],
  ['quickstart.cjs', '{ key: 7, n: 1 }'],
] as const) {
  test(`runtime: the README's ${file} runs against the installed package`, async (t) => {
    copyFileSync(path.join(root, 'examples', file), path.join(consumer, file))
    const { stdout, stderr } = await run(process.execPath, [file], { cwd: consumer, timeout: 30_000 })
    t.is(stderr, '')
    t.is(stdout.trim(), expected)
  })
}

test('runtime: bench --svg without the optional vega packages says what to install, exit 1, before any run', async (t) => {
  // vega and vega-lite are optional peer dependencies: an installed ringbridge does not bring them.
  t.false(existsSync(path.join(consumer, 'node_modules', 'vega')))
  const bin = path.join(consumer, 'node_modules', 'ringbridge', 'bin', 'ringbridge.js')
  const r = spawnSync(process.execPath, [bin, 'bench', '--backend', 'cpu', '--quick', '--svg', path.join(consumer, 'report.svg')], { cwd: consumer, encoding: 'utf8', timeout: 60_000 })
  t.is(r.status, 1)
  t.is(r.stdout, '', 'no figures: the bench did not run')
  t.regex(r.stderr, /--svg needs vega and vega-lite, optional peer dependencies of ringbridge that are not installed here: run 'npm install --save-dev vega vega-lite'/)
  t.false(existsSync(path.join(consumer, 'report.svg')))
})
