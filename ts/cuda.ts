/**
 * CUDA C from schemas: the `rb_input` and `rb_output` types a user handler is compiled against,
 * laid out exactly as the encoder writes them — every gap an explicit padding member, and a
 * `static_assert` on every size, alignment and offset, so a layout the GPU would read
 * differently cannot compile. The same header compiles as host C++ (g++, clang).
 * @module
 */
import native from './binding'
import type { ArraySchema, Schema, StructSchema } from './codec'
import { RingbridgeTypeError, describe, fromNative } from './errors'

const SCALARS: Readonly<Record<string, string>> = {
  u8: 'unsigned char',
  u16: 'unsigned short',
  u32: 'unsigned int',
  u64: 'unsigned long long',
  i8: 'signed char',
  i16: 'short',
  i32: 'int',
  i64: 'long long',
  f32: 'float',
  f64: 'double',
  bool: 'bool',
}

// C++ keywords and names the generated code or the CUDA headers use.
const RESERVED = new Set(
  (
    'alignas alignof and asm auto bool break case catch char class const constexpr const_cast continue decltype default ' +
    'delete do double dynamic_cast else enum explicit export extern false float for friend goto if inline int long mutable ' +
    'namespace new noexcept not nullptr operator or private protected public register reinterpret_cast return short signed ' +
    'sizeof static static_assert static_cast struct switch template this throw true try typedef typeid typename union ' +
    'unsigned using virtual void volatile wchar_t while rb_input rb_output rb_context'
  ).split(' '),
)

function badName(what: string, name: unknown): never {
  throw new RingbridgeTypeError(
    'ERR_RINGBRIDGE_INVALID_ARGUMENT',
    `${what}: expected a C identifier that is not a C++ keyword (it names a member of the generated CUDA struct), got ${describe(name)}`,
  )
}

function checkName(what: string, name: string): void {
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name) || RESERVED.has(name) || name.startsWith('_rb_')) badName(what, name)
}

const isStruct = (s: Schema<unknown>): s is StructSchema<any> => s.kind === 'struct'
const isArray = (s: Schema<unknown>): s is ArraySchema<unknown> => s.kind.startsWith('array<')

class Emitter {
  readonly #defs: string[] = []
  readonly #asserts: string[] = []
  readonly #names = new Map<Schema<unknown>, string>()
  readonly #taken = new Map<string, Schema<unknown>>()

  /** Declares the launch's input or output type as `alias`. */
  top(schema: Schema<unknown>, alias: 'rb_input' | 'rb_output'): void {
    if (isStruct(schema)) {
      const name = this.#struct(schema, schema.name ?? alias, schema.name === undefined)
      if (name !== alias) this.#defs.push(`typedef ${name} ${alias};`)
    } else if (SCALARS[schema.kind] !== undefined) {
      this.#defs.push(`typedef ${SCALARS[schema.kind]} ${alias};`)
      this.#asserts.push(`static_assert(sizeof(${alias}) == ${schema.size}, "${alias}: ${schema.kind} is ${schema.size} bytes");`)
    } else {
      throw new RingbridgeTypeError(
        'ERR_RINGBRIDGE_INVALID_ARGUMENT',
        `${alias === 'rb_input' ? 'input' : 'output'} schema of a CUDA handler: expected a struct or a scalar (a fixed layout), got ${schema.kind}`,
      )
    }
  }

  #type(schema: Schema<unknown>, suggested: string): { base: string; dims: number[] } {
    const scalar = SCALARS[schema.kind]
    if (scalar !== undefined) return { base: scalar, dims: [] }
    if (isArray(schema)) {
      const inner = this.#type(schema.element, suggested)
      return { base: inner.base, dims: [schema.length, ...inner.dims] }
    }
    if (isStruct(schema)) return { base: this.#struct(schema, schema.name ?? suggested), dims: [] }
    throw new RingbridgeTypeError('ERR_RINGBRIDGE_INVALID_ARGUMENT', `${suggested}: a ${schema.kind} has no fixed CUDA layout`)
  }

  #struct(schema: StructSchema<any>, name: string, generated = false): string {
    const known = this.#names.get(schema)
    if (known !== undefined) return known
    if (!generated) checkName('struct name', name)
    if (this.#taken.has(name)) {
      throw new RingbridgeTypeError('ERR_RINGBRIDGE_INVALID_ARGUMENT', `struct name '${name}' is used by two different schemas; name them apart`)
    }
    this.#names.set(schema, name)
    this.#taken.set(name, schema)
    const members: string[] = []
    let at = 0
    let pads = 0
    for (const field of schema.layout) {
      checkName(`field '${field.name}' of ${name}`, field.name)
      if (field.offset > at) members.push(`  unsigned char _rb_pad${pads++}[${field.offset - at}];`)
      const t = this.#type((schema.fields as Record<string, Schema<unknown>>)[field.name]!, `${name}_${field.name}`)
      members.push(`  ${t.base} ${field.name}${t.dims.map((d) => `[${d}]`).join('')};`)
      this.#asserts.push(`static_assert(RB_OFFSETOF(${name}, ${field.name}) == ${field.offset}, "${name}.${field.name} at byte ${field.offset}");`)
      at = field.offset + field.size
    }
    if (schema.size > at) members.push(`  unsigned char _rb_pad${pads++}[${schema.size - at}];`)
    this.#defs.push(`struct ${name} {\n${members.join('\n')}\n};`)
    this.#asserts.push(`static_assert(sizeof(${name}) == ${schema.size}, "${name} is ${schema.size} bytes");`)
    this.#asserts.push(`static_assert(alignof(${name}) == ${schema.align}, "${name} aligns to ${schema.align}");`)
    return name
  }

  text(): string {
    return [
      '// Generated by ringbridge from the launch\'s schemas: do not edit, change the schemas.',
      '#pragma once',
      '',
      '#ifndef RB_OFFSETOF',
      '#if defined(__CUDACC_RTC__)',
      '// NVRTC before 13.4 has no __builtin_offsetof; __INTADDR__ keeps this a constant expression.',
      '#define RB_OFFSETOF(T, m) ((unsigned long long)__INTADDR__(&(((T*)0)->m)))',
      '#else',
      '#define RB_OFFSETOF(T, m) __builtin_offsetof(T, m)',
      '#endif',
      '#endif',
      '',
      ...this.#defs,
      '',
      ...this.#asserts,
      '',
    ].join('\n')
  }
}

/**
 * The CUDA C header a user handler is compiled with: `rb_input` and `rb_output` (and every
 * nested struct, named by its schema's `name` or after its field), padding explicit,
 * `static_assert`s on every size, alignment and offset.
 * @throws {RingbridgeTypeError} `ERR_RINGBRIDGE_INVALID_ARGUMENT` for a schema with no fixed
 * layout (`bytes()`), a name that is not a C identifier or is a C++ keyword, or one name for two
 * different structs.
 * @example
 * ```ts
 * const Particle = struct({ id: u32, pos: array(f32, 3) }, { name: 'Particle' })
 * console.log(cudaHeader(Particle, f32))
 * // struct Particle { unsigned int id; float pos[3]; };  typedef Particle rb_input;  typedef float rb_output; …
 * ```
 */
export function cudaHeader(input: Schema<unknown>, output: Schema<unknown>): string {
  const e = new Emitter()
  e.top(input, 'rb_input')
  e.top(output, 'rb_output')
  return e.text()
}

/**
 * What {@link compileKernel} needs: the launch's schemas and the handler.
 * @example
 * ```ts
 * const k: KernelSource = { input: u32, output: u32, entry: 'twice', source: `
 *   __device__ uint32_t twice(const rb_input& in, rb_output& out, rb_context&) { out = 2 * in; return 0; }` }
 * await compileKernel(k)
 * ```
 */
export interface KernelSource {
  /** Schema of the messages the handler takes. */
  input: Schema<unknown>
  /** Schema of its replies. */
  output: Schema<unknown>
  /** The handler's CUDA C source. */
  source: string
  /** The handler function's name. */
  entry: string
  /** The handler pushes up to this many replies per message (`rb_replies&`); see `LaunchOptions.maxReplies`. */
  maxReplies?: number
}

/**
 * What {@link compileKernel} produced.
 * @example
 * ```ts
 * const { kind, bytes } = await compileKernel({ input: u32, output: u32, source, entry: 'f' })
 * ```
 */
export interface CompiledKernel {
  /** `cubin` (for the exact architecture) or `ptx`. */
  kind: 'cubin' | 'ptx'
  /** Bytes of the image. */
  bytes: number
  /** Whether the disk cache had it. */
  cached: boolean
}

/**
 * Compiles a user kernel with NVRTC for a GPU architecture, without a GPU — a check for CI and
 * editors, and a warm-up of the disk cache the launch uses. NVRTC runs off the JavaScript
 * thread (a cold compile takes about a second): timers and I/O go on meanwhile.
 * @returns a promise of what was compiled; argument errors reject too.
 * @param arch compute capability `[major, minor]` (default `[9, 0]`, Hopper)
 * @throws {RingbridgeError} `ERR_RINGBRIDGE_COMPILE` with NVRTC's log (lines as in `source`, file
 * `handler.cu`); `ERR_RINGBRIDGE_BACKEND_UNAVAILABLE` when NVRTC cannot be loaded.
 * @example
 * ```ts
 * const Pair = struct({ a: f32, b: f32 })
 * await compileKernel({ input: Pair, output: f32, entry: 'add', source: `
 *   __device__ uint32_t add(const rb_input& in, rb_output& out, rb_context&) { out = in.a + in.b; return 0; }` })
 * ```
 */
export async function compileKernel(kernel: KernelSource, arch: [number, number] = [9, 0]): Promise<CompiledKernel> {
  if (kernel === null || typeof kernel !== 'object') {
    throw new RingbridgeTypeError('ERR_RINGBRIDGE_INVALID_ARGUMENT', `compileKernel: expected { input, output, source, entry }, got ${describe(kernel)}`)
  }
  if (typeof kernel.source !== 'string' || typeof kernel.entry !== 'string') {
    throw new RingbridgeTypeError('ERR_RINGBRIDGE_INVALID_ARGUMENT', `compileKernel: source and entry must be strings, got ${describe(kernel.source)} and ${describe(kernel.entry)}`)
  }
  if (!Array.isArray(arch) || arch.length !== 2 || !arch.every((n) => Number.isInteger(n) && n >= 0 && n < 100)) {
    throw new RingbridgeTypeError('ERR_RINGBRIDGE_INVALID_ARGUMENT', `compileKernel arch: expected [major, minor], e.g. [9, 0], got ${describe(arch)}`)
  }
  const header = cudaHeader(kernel.input, kernel.output)
  try {
    return (await native.compileUserKernelAsync(kernel.source, kernel.entry, header, kernel.maxReplies ?? 0, arch[0], arch[1])) as CompiledKernel
  } catch (e) {
    throw fromNative(e)
  }
}
