// Schemas → CUDA C (runs in CI, no GPU): the generated header compiles as C++ with every
// static_assert on sizes and offsets holding (g++ checks the layout the encoder writes), a header
// that disagrees does not compile, names are checked, and with NVRTC present (CI's NVRTC step) a
// user kernel over the generated structs compiles for sm_90, its errors naming the user's lines.
import { execFileSync } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import test from 'ava'

import { Runtime, array, bool, bytes, compileKernel, cudaHeader, f32, f64, i16, i32, i64, i8, struct, u16, u32, u64, u8 } from '../index'
import { codeOf, within } from './helpers'

const hasGxx = (() => {
  try {
    execFileSync('g++', ['--version'], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
})()
const gxxTest = hasGxx ? test : (title: string, _fn: unknown) => test.skip(`${title} — skipped: no g++ on this machine`, () => undefined)
const NVRTC = process.env.RINGBRIDGE_NVRTC === '1'
const nvrtcTest = NVRTC ? test : (title: string, _fn: unknown) => test.skip(`${title} — skipped: NVRTC not requested (CI's NVRTC step sets RINGBRIDGE_NVRTC=1)`, () => undefined)

const Inner = struct({ a: u8, b: f64 }, { name: 'Inner' })
export const Every = struct({
  u8,
  u16,
  u32,
  u64,
  i8,
  i16,
  i32,
  i64,
  f32,
  f64,
  flag: bool,
  arr: array(i16, 3),
  m: array(array(f32, 2), 2),
  inner: Inner,
  inners: array(Inner, 2),
  anon: struct({ x: u8, y: u32 }),
})

function gxx(header: string): void {
  const dir = mkdtempSync(join(tmpdir(), 'rb-schema-'))
  writeFileSync(join(dir, 'schema.h'), header)
  writeFileSync(join(dir, 'check.cpp'), '#include "schema.h"\nint main() { return 0; }\n')
  execFileSync('g++', ['-std=c++17', '-fsyntax-only', join(dir, 'check.cpp')], { stdio: 'pipe' })
}

gxxTest('the header of every field kind compiles with all its static_asserts (C++ agrees with the encoder)', (t) => {
  const header = cudaHeader(Every, Every)
  t.notThrows(() => gxx(header))
  t.regex(header, /struct Inner \{\n {2}unsigned char a;\n {2}unsigned char _rb_pad0\[7\];\n {2}double b;\n\};/)
  t.regex(header, /float m\[2\]\[2\];/)
  t.regex(header, /typedef rb_input rb_output;/)
  t.regex(header, /static_assert\(sizeof\(rb_input\) == 128/)
  t.is(Every.size, 128)
})

gxxTest('a header that disagrees with the layout does not compile', (t) => {
  const header = cudaHeader(Every, u32).replace('static_assert(RB_OFFSETOF(rb_input, f64) == 40', 'static_assert(RB_OFFSETOF(rb_input, f64) == 36')
  const err = t.throws(() => gxx(header))
  t.regex(String((err as { stderr?: Buffer }).stderr), /static assertion failed|static_assert/)
})

test('scalars become typedefs; structs are named after their schema or their field', (t) => {
  const h = cudaHeader(f32, struct({ pos: struct({ x: f32 }), k: u64 }))
  t.regex(h, /typedef float rb_input;/)
  t.regex(h, /struct rb_output_pos \{\n {2}float x;\n\};/)
  t.regex(h, /struct rb_output \{\n {2}rb_output_pos pos;\n {2}unsigned char _rb_pad0\[4\];\n {2}unsigned long long k;\n\};/)
  t.regex(cudaHeader(Inner, Inner), /typedef Inner rb_input;\ntypedef Inner rb_output;/)
})

test('schemas without a CUDA layout or with bad names are refused, saying why', (t) => {
  const e1 = t.throws(() => cudaHeader(bytes(), u32))
  t.is(codeOf(e1), 'ERR_RINGBRIDGE_INVALID_ARGUMENT')
  t.regex(e1!.message, /input schema of a CUDA handler: expected a struct or a scalar/)
  const e2 = t.throws(() => cudaHeader(struct({ class: u32 }), u32))
  t.regex(e2!.message, /field 'class' of rb_input: expected a C identifier that is not a C\+\+ keyword/)
  const e3 = t.throws(() => cudaHeader(struct({ a: struct({ x: u8 }, { name: 'P' }), b: struct({ y: u8 }, { name: 'P' }) }), u32))
  t.regex(e3!.message, /struct name 'P' is used by two different schemas/)
  const e4 = t.throws(() => struct({ x: u8 }, { name: '9lives' }))
  t.regex(e4!.message, /struct name: expected a C identifier/)
})

test('launch checks the user-kernel options, and the cpu backend says a CUDA handler needs cuda', async (t) => {
  const rt = await Runtime.open({ backend: 'cpu' })
  t.teardown(() => within(rt.close(), 15_000, 'close'))
  const source = '__device__ uint32_t f(const rb_input& in, rb_output& out, rb_context&) { out = in; return 0; }'
  const both = await t.throwsAsync(rt.launch({ handler: 'echo', source, entry: 'f', input: u32, output: u32 }))
  t.regex(both!.message, /handler: expected nothing: a user kernel/)
  const noEntry = await t.throwsAsync(rt.launch({ source, input: u32, output: u32 }))
  t.regex(noEntry!.message, /entry: expected the name of the handler function/)
  const varying = await t.throwsAsync(rt.launch({ source, entry: 'f', input: bytes(), output: u32 }))
  t.regex(varying!.message, /expected a struct or a scalar/)
  const cpu = await t.throwsAsync(rt.launch({ source, entry: 'f', input: u32, output: u32 }))
  t.is(codeOf(cpu), 'ERR_RINGBRIDGE_INVALID_ARGUMENT')
  t.regex(cpu!.message, /a CUDA handler \(source, entry\) on the cpu backend.*expected the cuda backend/)
})

nvrtcTest('a user kernel over the generated structs compiles for sm_90 with NVRTC', async (t) => {
  const source = `
__device__ uint32_t mirror(const rb_input& in, rb_output& out, rb_context& ctx) {
  out = in;
  out.inner.b = in.inner.a + 0.5;
  if (in.flag && in.u8 == 0) { ctx.detail = in.u32; return 300; }
  return 0;
}`
  const r = await compileKernel({ input: Every, output: Every, source, entry: 'mirror' }, [9, 0])
  t.true(r.kind === 'cubin' && r.bytes > 10_000, JSON.stringify(r))
})

nvrtcTest('NVRTC errors in a user kernel name handler.cu and the line in the source', async (t) => {
  const source = `__device__ uint32_t f(const rb_input& in, rb_output& out, rb_context&) {
  out.no_such_field = in.u32;
  return 0;
}`
  const err = await t.throwsAsync(compileKernel({ input: Every, output: Every, source, entry: 'f' }))
  t.is(codeOf(err), 'ERR_RINGBRIDGE_COMPILE')
  t.regex(err!.message, /handler\.cu\(2\): error/)
  t.regex(err!.message, /no_such_field/)
})

nvrtcTest('a handler declared over other types than the launch\'s schemas fails at compile, never at run time', async (t) => {
  const Sample = struct({ x: f32 }, { name: 'Sample' })
  const source = '__device__ uint32_t f(const Particle& in, rb_output& out, rb_context&) { out = in.x; return 0; }'
  const err = await t.throwsAsync(compileKernel({ input: Sample, output: f32, source, entry: 'f' }))
  t.is(codeOf(err), 'ERR_RINGBRIDGE_COMPILE')
  t.regex(err!.message, /handler\.cu\(1\): error: identifier "Particle" is undefined/)
  // The same handler over the schema it was written for compiles.
  const Particle = struct({ x: f32 }, { name: 'Particle' })
  t.is((await compileKernel({ input: Particle, output: f32, source, entry: 'f' })).kind, 'cubin')
})

nvrtcTest('a handler that pushes several replies compiles with maxReplies, and the single-reply signature then does not', async (t) => {
  const In = struct({ n: u32 })
  const Out = struct({ i: u32, n: u32 })
  const fan = `__device__ uint32_t fan(const rb_input& in, rb_replies& out, rb_context&) {
  for (uint32_t i = 0; i < in.n; ++i) { rb_output r; r.i = i; r.n = in.n; if (!out.push(r)) break; }
  return 0;
}`
  t.is((await compileKernel({ input: In, output: Out, source: fan, entry: 'fan', maxReplies: 4 })).kind, 'cubin')
  const single = '__device__ uint32_t one(const rb_input& in, rb_output& out, rb_context&) { out.i = in.n; return 0; }'
  const err = await t.throwsAsync(compileKernel({ input: In, output: Out, source: single, entry: 'one', maxReplies: 4 }))
  t.is(codeOf(err), 'ERR_RINGBRIDGE_COMPILE')
})

// Issue #14 item 3: NVRTC runs on the libuv pool. A cold compile (a source no cache holds) takes
// about a second; timers must keep firing meanwhile (the synchronous compile let none through).
nvrtcTest('timers keep firing during a cold compile', async (t) => {
  const source = `// cold ${process.pid} ${Date.now()} ${Math.random()}
__device__ uint32_t cold(const rb_input& in, rb_output& out, rb_context&) { out = in; return 0; }`
  let ticks = 0
  const timer = setInterval(() => ticks++, 5)
  const started = Date.now()
  try {
    const r = await compileKernel({ input: u32, output: u32, source, entry: 'cold' })
    const ms = Date.now() - started
    t.false(r.cached, 'a source no cache holds compiles cold')
    t.true(ms >= 100, `a cold compile took ${ms} ms`)
    // A blocked event loop lets at most one tick through; a free one about ms / 5.
    t.true(ticks >= Math.floor(ms / 5 / 4), `${ticks} timer ticks in a ${ms} ms compile`)
  } finally {
    clearInterval(timer)
  }
})

test('compileKernel rejects bad arguments (a promise, never a throw)', async (t) => {
  const p = compileKernel(null as never)
  t.true(p instanceof Promise)
  t.is(codeOf(await t.throwsAsync(p)), 'ERR_RINGBRIDGE_INVALID_ARGUMENT')
  t.is(codeOf(await t.throwsAsync(compileKernel({ input: u32, output: u32, source: 's', entry: 'e' }, [9] as never))), 'ERR_RINGBRIDGE_INVALID_ARGUMENT')
})

test('maxReplies is checked', async (t) => {
  const rt = await Runtime.open({ backend: 'cpu' })
  t.teardown(() => within(rt.close(), 15_000, 'close'))
  const builtin = await t.throwsAsync(rt.launch({ handler: 'echo', input: u32, output: u32, maxReplies: 2 }))
  t.regex(builtin!.message, /maxReplies: expected a user handler/)
  const zero = await t.throwsAsync(rt.launch({ input: u32, output: u32, cpu: (m: number) => m, maxReplies: 0 }))
  t.regex(zero!.message, /maxReplies: expected an integer from 1 to 4096/)
})
