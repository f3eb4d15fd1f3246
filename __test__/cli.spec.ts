// `npx ringbridge doctor` and `npx ringbridge bench`, run as a user would (bin/ringbridge.js).
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'

import test from 'ava'

const root = path.resolve(__dirname, '..')
const bin = path.join(root, 'bin', 'ringbridge.js')

function cli(args: string[], env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(process.execPath, [bin, ...args], { cwd: root, encoding: 'utf8', timeout: 120_000, env: { ...process.env, ...env } })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}

const hasCuda = (() => {
  try {
    require('../ts/binding').chooseBackend('cuda')
    return true
  } catch {
    return false
  }
})()

test('package.json publishes the CLI as `ringbridge`', (t) => {
  const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { bin?: Record<string, string> }
  t.deepEqual(pkg.bin, { ringbridge: 'bin/ringbridge.js' })
})

test('doctor --json: one JSON object; cpu works; the kernel host starts and stops; NVRTC says where it looked', (t) => {
  const r = cli(['doctor', '--json'])
  t.is(r.code, 0, r.stderr)
  const d = JSON.parse(r.stdout)
  t.true(d.ok)
  t.is(d.asked, 'auto')
  t.is(d.platform.os, process.platform)
  t.regex(d.binary.path, /ringbridge\..*\.node$/)
  t.true(d.backends.cpu.ok)
  t.true(d.kernelHost.ok, d.kernelHost.reason)
  t.is(d.kernelHost.backend, 'cpu')
  t.true(Number.isInteger(d.kernelHost.pid))
  t.deepEqual(d.transports.map((x: { name: string }) => x.name), ['hybrid', 'mapped', 'dma', 'managed', 'auto'])
  t.deepEqual(d.nvrtc.names, ['libnvrtc.so.13', 'libnvrtc.so.12', 'libnvrtc.so'])
  const dirs = d.nvrtc.places.map((p: { dir: string }) => p.dir)
  t.true(dirs.includes('/usr/local/cuda/lib64') && dirs.includes('/opt/cuda/lib64'), dirs.join(' '))
  t.true(typeof d.cache.rule === 'string')
  if (!hasCuda) {
    t.false(d.backends.cuda.ok)
    t.is(d.backends.auto.chose, 'cpu')
    t.deepEqual(d.gpus, [])
    t.true(d.transports.every((x: { ok: boolean; probed: boolean }) => !x.ok && !x.probed))
  }
})

test('doctor: the NVRTC lookup follows CUDA_PATH and the kernel cache follows RINGBRIDGE_CACHE_DIR', (t) => {
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'rb-doctor-'))
  try {
    const r = cli(['doctor', '--json', '--backend', 'cpu'], { CUDA_PATH: path.join(tmp, 'cuda'), RINGBRIDGE_CACHE_DIR: path.join(tmp, 'cache') })
    t.is(r.code, 0, r.stderr)
    const d = JSON.parse(r.stdout)
    const cudaPath = d.nvrtc.places.filter((p: { source: string }) => p.source === 'CUDA_PATH').map((p: { dir: string }) => p.dir)
    t.deepEqual(cudaPath, [path.join(tmp, 'cuda', 'lib64'), path.join(tmp, 'cuda', 'lib')])
    t.deepEqual(d.cache, { dir: path.join(tmp, 'cache'), rule: 'RINGBRIDGE_CACHE_DIR', exists: false, writable: true })
  } finally {
    rmSync(tmp, { recursive: true, force: true })
  }
})

test('doctor text: every section; exit codes follow --backend', (t) => {
  const r = cli(['doctor'])
  t.is(r.code, 0, r.stderr)
  for (const s of ['platform', 'binary', 'driver', 'nvrtc', 'backends', 'transports', 'kernel cache', 'kernel host']) t.true(r.stdout.includes(s), s)
  t.is(cli(['doctor', '--backend', 'cpu']).code, 0)
  const cuda = cli(['doctor', '--backend', 'cuda'])
  if (hasCuda) t.is(cuda.code, 0, cuda.stdout)
  else {
    t.is(cuda.code, 1)
    t.regex(cuda.stdout, /nvrtc\s+not found: looked for libnvrtc\.so\.13/)
    t.regex(cuda.stdout, /FAIL: backend 'cuda' cannot work here/)
  }
  t.is(cli(['doctor', '--backend', 'tpu']).code, 2)
  t.is(cli(['frobnicate']).code, 2)
})

test('bench --quick --json --svg on the cpu backend: figures, JSON fields and an SVG with both plots', (t) => {
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'rb-bench-'))
  try {
    const svgPath = path.join(tmp, 'tmp.svg')
    const r = cli(['bench', '--backend', 'cpu', '--quick', '--json', '--svg', svgPath])
    t.is(r.code, 0, r.stderr)
    t.is(r.stderr, '', 'no progress bar when stderr is not a terminal')
    const b = JSON.parse(r.stdout)
    t.is(b.backend, 'cpu')
    t.is(b.transport, 'shared-memory')
    t.true(b.quick)
    t.is(b.svg, svgPath)
    t.true(b.request.p50Us > 0 && b.request.p99Us >= b.request.p50Us, JSON.stringify(b.request))
    t.deepEqual(b.stream.map((s: { batch: number }) => s.batch), [1, 16, 256, 4096])
    for (const s of b.stream) t.true(s.msgPerSec > 0 && s.messages > 0)
    const names = b.figures.map((f: { name: string }) => f.name)
    t.deepEqual(names.slice(0, 2), ['cpu_request_p50', 'cpu_request_p99'])
    t.true(names.includes('cpu_stream_chunk64_batch4096'))
    for (const f of b.figures) t.true(Number.isFinite(f.value) && typeof f.unit === 'string')

    const svg = readFileSync(svgPath, 'utf8')
    t.regex(svg, /^<svg[^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/)
    t.true(svg.trimEnd().endsWith('</svg>'))
    t.true(wellFormed(svg), 'every element closes, in order')
    t.true(svg.includes('class="mark-rect'), 'the latency histogram has bars')
    t.true(svg.includes('class="mark-line'), 'the throughput plot has a line')
    t.true(svg.includes('Request round trip') && svg.includes('Streaming throughput against batch size'))
  } finally {
    rmSync(tmp, { recursive: true, force: true })
  }
})

test('bench: name value unit lines', (t) => {
  const r = cli(['bench', '--backend', 'cpu', '--quick'])
  t.is(r.code, 0, r.stderr)
  const lines = r.stdout.split('\n').filter((l) => l && !l.startsWith('#'))
  t.true(lines.length >= 6)
  for (const l of lines) t.regex(l, /^[a-z0-9_]+ -?\d+\.\d{3} [A-Za-z_]+$/)
})

/** A small XML well-formedness check: tags balance, attributes are quoted. */
function wellFormed(xml: string): boolean {
  const stack: string[] = []
  const tag = /<(\/?)([A-Za-z][\w:.-]*)((?:\s+[\w:.-]+="[^"]*")*)\s*(\/?)>|<!--[\s\S]*?-->|<\?[\s\S]*?\?>/g
  let at = 0
  for (let m = tag.exec(xml); m !== null; m = tag.exec(xml)) {
    if (xml.slice(at, m.index).includes('<')) return false
    at = m.index + m[0].length
    if (m[2] === undefined) continue
    if (m[1] === '/') {
      if (stack.pop() !== m[2]) return false
    } else if (m[4] !== '/') stack.push(m[2])
  }
  return stack.length === 0 && !xml.slice(at).includes('<')
}
