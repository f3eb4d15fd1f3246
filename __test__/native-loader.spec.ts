// When no native binary loads, `require('ringbridge')` says which platform this is, which are
// supported, and that the CPU backend needs the binary too (not napi-rs's "npm has a bug" text).
import { spawnSync } from 'node:child_process'
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'

import test from 'ava'

const root = path.resolve(__dirname, '..')

function runNode(args: string[], cwd = root): { status: number | null; stderr: string; stdout: string } {
  const r = spawnSync(process.execPath, args, { cwd, encoding: 'utf8', env: { ...process.env, NAPI_RS_NATIVE_LIBRARY_PATH: '' } })
  return { status: r.status, stderr: r.stderr, stdout: r.stdout }
}

test('an unsupported platform (faked process.arch) gets an error naming it and the supported ones', (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'rb-arch-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const preload = path.join(dir, 'fake-arch.js')
  writeFileSync(preload, "Object.defineProperty(process, 'arch', { value: 'riscv64' })\n")
  for (const entry of ["require('./index.js')", "import('./index.js').catch((e) => { console.error(e.message); process.exit(1) })"]) {
    const r = runNode(['--require', preload, '-e', entry])
    t.not(r.status, 0, entry)
    t.regex(r.stderr, /ringbridge: no native binary for this platform: \w+-riscv64/, entry)
    if (process.platform === 'linux') t.regex(r.stderr, /linux-riscv64 \((glibc [\d.]+|musl)/, entry)
    t.regex(r.stderr, /linux-x64 \(glibc 2\.17 or newer\), linux-arm64 \(glibc 2\.17 or newer\)/, entry)
    t.regex(r.stderr, /CPU backend/, entry)
    t.notRegex(r.stderr, /npm has a bug/, entry)
  }
})

test('a supported platform whose platform package is missing names the package to install', (t) => {
  if (process.platform !== 'linux' || !['x64', 'arm64'].includes(process.arch)) return t.pass()
  // A copy of the package without any .node: what an install that skipped optional dependencies has.
  const dir = mkdtempSync(path.join(tmpdir(), 'rb-nobin-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  mkdirSync(path.join(dir, 'ts'))
  for (const f of ['binding.js', 'native.js']) copyFileSync(path.join(root, 'ts', f), path.join(dir, 'ts', f))
  const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as Record<string, unknown>
  writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: pkg.name, version: pkg.version, napi: pkg.napi, optionalDependencies: pkg.optionalDependencies }))
  const r = runNode(['-e', "require('./ts/binding.js')"], dir)
  t.not(r.status, 0)
  const abi = `linux-${process.arch}-gnu`
  t.regex(r.stderr, new RegExp(`the native binary for linux-${process.arch} \\(glibc [\\d.]+\\) did not load`))
  t.true(r.stderr.includes(`ringbridge-${abi}`), r.stderr)
  t.regex(r.stderr, /CPU backend/)
  t.regex(r.stderr, /ERR_RINGBRIDGE_NO_NATIVE_BINARY/)
  t.notRegex(r.stderr, /npm has a bug/)
})
