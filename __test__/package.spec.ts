// The package's public surface: the exact exports of index, engines, napi targets, entry points.
import { existsSync, readFileSync } from 'node:fs'
import path from 'node:path'

import test from 'ava'

import * as ringbridge from '../index'
import type {
  AnyRingbridgeError,
  ArraySchema,
  BackendName,
  Backpressure,
  CommitOptions,
  CompiledKernel,
  FieldLayout,
  Fields,
  HandlerContext,
  Infer,
  JsHandler,
  KernelSource,
  LatencyPercentiles,
  KernelState,
  KernelStats,
  LaunchOptions,
  OfferResult,
  QueueOptions,
  ReceiveChunk,
  RingbridgeErrorCode,
  RouteStageInfo,
  RuntimeOptions,
  Schema,
  SendChunk,
  StructOptions,
  StructSchema,
  StructValue,
  TerminateMode,
  TerminateReport,
  WaitOptions,
} from '../index'

const root = path.resolve(__dirname, '..')
const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as Record<string, any>

const VALUE_EXPORTS = [
  'AbortError',
  'BACKPRESSURE_POLICIES',
  'ChunkSlots',
  'ERROR_CODES',
  'KERNEL_ERROR_NAMES',
  'MessageQueue',
  'ReceiveChunk',
  'RingKernel',
  'RingProducer',
  'RingbridgeError',
  'RingbridgeRangeError',
  'RingbridgeTypeError',
  'Runtime',
  'SendChunk',
  'array',
  'bool',
  'bytes',
  'compileKernel',
  'cudaHeader',
  'f32',
  'f64',
  'i16',
  'i32',
  'i64',
  'i8',
  'struct',
  'u16',
  'u32',
  'u64',
  'u8',
]

const TYPE_EXPORTS = [
  'AnyRingbridgeError',
  'ArraySchema',
  'BackendName',
  'Backpressure',
  'CommitOptions',
  'CompiledKernel',
  'FieldLayout',
  'Fields',
  'HandlerContext',
  'Infer',
  'JsHandler',
  'KernelHostStatus',
  'KernelSource',
  'LatencyPercentiles',
  'KernelState',
  'KernelStats',
  'LaunchOptions',
  'OfferResult',
  'ProducerHandle',
  'QueueOptions',
  'RingbridgeErrorCode',
  'RouteStageInfo',
  'RuntimeOptions',
  'Schema',
  'SchemaDescriptor',
  'SendOutcome',
  'SharedInputStats',
  'StructOptions',
  'StructSchema',
  'StructValue',
  'TerminateMode',
  'TerminateReport',
  'WaitOptions',
]

test('index exports exactly the pinned values', (t) => {
  t.deepEqual(Object.keys(ringbridge).sort(), [...VALUE_EXPORTS].sort())
  const built = require(path.join(root, 'index.js')) as Record<string, unknown>
  t.deepEqual(Object.keys(built).sort(), [...VALUE_EXPORTS].sort())
  for (const name of VALUE_EXPORTS) t.not(built[name], undefined, name)
})

test('index.d.ts exports exactly the pinned names, types included', (t) => {
  const dts = readFileSync(path.join(root, 'index.d.ts'), 'utf8')
  const names: string[] = []
  const types: string[] = []
  for (const m of dts.matchAll(/export\s*\{([^}]*)\}/g)) {
    for (const raw of m[1]!.split(',')) {
      const item = raw.trim()
      if (!item) continue
      const typeOnly = /^type\s+/.test(item)
      const name = item.replace(/^type\s+/, '').split(/\s+as\s+/).pop()!.trim()
      names.push(name)
      if (typeOnly) types.push(name)
    }
  }
  t.false(/export\s+(declare\s+)?(const|function|class|type|interface|let|var|\*)/.test(dts), 'index re-exports only, in curated lists')
  t.deepEqual(names.sort(), [...VALUE_EXPORTS, ...TYPE_EXPORTS].sort())
  t.deepEqual(types.sort(), [...TYPE_EXPORTS].sort())
})

test('the exported types are usable (compile-time check)', (t) => {
  // Compiles only while every pinned type is exported with these shapes.
  type Pinned = [
    AnyRingbridgeError,
    BackendName,
    Backpressure,
    FieldLayout,
    Fields,
    Infer<Schema<number>>,
    KernelState,
    KernelStats,
    LaunchOptions<number, number>,
    OfferResult<number>,
    QueueOptions,
    RingbridgeErrorCode,
    RouteStageInfo,
    RuntimeOptions,
    StructSchema<{ a: Schema<number> }>,
    StructValue<{ a: Schema<number> }>,
    TerminateMode,
    TerminateReport<number>,
    WaitOptions,
    ArraySchema<number>,
    CompiledKernel,
    HandlerContext,
    JsHandler<number, number>,
    KernelSource,
    LatencyPercentiles,
    StructOptions,
    CommitOptions,
    SendChunk,
    ReceiveChunk,
  ]
  const sample: Pinned[1] = 'cpu'
  const state: Pinned[6] = 'paused'
  const policy: Pinned[2] = 'drop-oldest'
  t.is(sample, 'cpu')
  t.is(state, 'paused')
  t.true(ringbridge.BACKPRESSURE_POLICIES.includes(policy))
})

test('package.json: engines, entry points and napi targets are pinned', (t) => {
  t.is(pkg.name, 'ringbridge')
  t.deepEqual(pkg.engines, { node: '>= 20' })
  t.is(pkg.main, 'index.js')
  t.is(pkg.types, 'index.d.ts')
  t.true(existsSync(path.join(root, pkg.main as string)), 'main exists once built')
  t.true(existsSync(path.join(root, pkg.types as string)), 'types exist once built')
  t.is(pkg.napi?.binaryName, 'ringbridge')
  t.deepEqual(pkg.napi?.targets, ['x86_64-unknown-linux-gnu', 'aarch64-unknown-linux-gnu'])
  t.true(Array.isArray(pkg.files) && pkg.files.includes('index.js') && pkg.files.includes('index.d.ts'), 'the entry points are published')
  // The binary lives in the platform packages (npm/<abi>): a root package packed from a checkout
  // must not carry the checkout's own build (linked against this machine's newer glibc).
  t.false((pkg.files as string[]).some((f) => f.endsWith('.node')), 'the root package ships no .node')
})

test('package.json: the exports map exposes the public API only (ESM and CJS) and the kernel-host entry', (t) => {
  t.is(pkg.type, 'commonjs')
  t.deepEqual(pkg.exports, {
    '.': {
      import: { types: './index.d.mts', default: './index.mjs' },
      require: { types: './index.d.ts', default: './index.js' },
    },
    './kernel-host': { types: './ts/kernel-host.d.ts', default: './ts/kernel-host.js' },
    './package.json': './package.json',
  })
  for (const file of ['index.mjs', 'index.d.mts']) {
    t.true(pkg.files.includes(file), `${file} is published`)
    t.true(existsSync(path.join(root, file)), `${file} exists`)
  }
  // The ESM entry re-exports exactly the CommonJS build's values (one implementation).
  const esm = readFileSync(path.join(root, 'index.mjs'), 'utf8')
  const list = /export\s*\{([^}]*)\}\s*from\s*'\.\/index\.js'/.exec(esm)
  t.truthy(list, 'index.mjs re-exports from ./index.js')
  t.deepEqual(list![1]!.split(',').map((s) => s.trim()).filter(Boolean).sort(), [...VALUE_EXPORTS].sort())
  t.false(/^\s*import\s/m.test(esm.replace(/^\s*\/\/.*$/gm, '')), 'index.mjs imports nothing else')
  t.is(readFileSync(path.join(root, 'index.d.mts'), 'utf8').replace(/^\/\/.*\n/gm, '').trim(), "export * from './index.js'")
})

test('ts/kernel-host: importing it does nothing; only running it as the main module serves', (t) => {
  const host = require(path.join(root, 'ts', 'kernel-host.js')) as Record<string, unknown>
  t.deepEqual(Object.keys(host), ['run'])
  t.is(typeof host.run, 'function')
  t.regex(readFileSync(path.join(root, 'ts', 'kernel-host.js'), 'utf8'), /\nif \(require\.main === module\)\s*run\(\);?\n/)
})

test('the package name resolves to the same module as index', (t) => {
  t.is(require(path.join(root, pkg.main as string)), require('../index'))
  t.deepEqual([...ringbridge.BACKPRESSURE_POLICIES], ['block', 'reject', 'drop-oldest', 'drop-newest'])
  t.deepEqual([...ringbridge.KERNEL_ERROR_NAMES], ['none', 'bad-frame', 'bad-payload', 'spin-timeout', 'reply-too-large', 'handler-fault', 'skipped'])
  t.deepEqual(ringbridge.Runtime.builtinHandlers(), ['echo', 'saxpy'])
})
