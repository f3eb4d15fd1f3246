/**
 * Message schemas: one declaration gives the TypeScript type ({@link Infer}), the encoder and
 * decoder that read and write ring slots in place, and the C byte layout (natural alignment,
 * explicit padding) that a CUDA struct must match.
 * @module
 */
import { RingbridgeError, RingbridgeRangeError, RingbridgeTypeError, describe } from './errors'

/**
 * A message type: how values of `T` are laid out in a slot's payload.
 * Implementations must check every value completely before writing a byte that matters:
 * the frame is only published after `encode` returns, so a throw leaves nothing behind.
 * @example
 * ```ts
 * function sizeOf(s: Schema<unknown>): number | undefined {
 *   return s.size // undefined for bytes()
 * }
 * ```
 */
export interface Schema<T> {
  /** Kind name for messages and layouts, e.g. `u32`, `struct`, `bytes`. */
  readonly kind: string
  /** Bytes of an encoded value; `undefined` for variable-length schemas. */
  readonly size: number | undefined
  /** Alignment in bytes. */
  readonly align: number
  /** Largest encoded size (for choosing slot sizes). */
  readonly maxSize: number
  /** Writes `value` at `offset`; returns the bytes written. Throws on a wrong shape or when more than `capacity` bytes are needed. */
  encode(view: DataView, offset: number, value: T, capacity: number, path?: string): number
  /** Reads a value of `length` bytes at `offset`. */
  decode(view: DataView, offset: number, length: number): T
}

/**
 * The TypeScript type a schema describes.
 * @example
 * ```ts
 * const Point = struct({ x: f64, y: f64 })
 * type Point = Infer<typeof Point> // { x: number; y: number }
 * ```
 */
export type Infer<S> = S extends Schema<infer T> ? T : never

/**
 * One field of a struct layout.
 * @example
 * ```ts
 * for (const f of struct({ a: u8, b: u32 }).layout) console.log(f.name, f.offset) // a 0, b 4
 * ```
 */
export interface FieldLayout {
  /** Field name. */
  readonly name: string
  /** Byte offset inside the struct. */
  readonly offset: number
  /** Bytes. */
  readonly size: number
  /** Schema kind. */
  readonly kind: string
}

function invalid(path: string, expected: string, got: unknown): never {
  throw new RingbridgeTypeError('ERR_RINGBRIDGE_INVALID_MESSAGE', `${path}: expected ${expected}, got ${describe(got)}`)
}

function tooLarge(path: string, need: number, capacity: number): never {
  throw new RingbridgeRangeError(
    'ERR_RINGBRIDGE_MESSAGE_TOO_LARGE',
    `${path}: message of ${need} bytes exceeds the slot payload of ${capacity} bytes`,
  )
}

function checkLength(path: string, kind: string, expected: number, length: number): void {
  if (length !== expected) {
    throw new RingbridgeError(
      'ERR_RINGBRIDGE_PROTOCOL',
      `${path}: a ${kind} frame must carry ${expected} bytes, the frame carries ${length} (schemas of sender and kernel disagree)`,
    )
  }
}

interface Fixed<T> extends Schema<T> {
  readonly size: number
}

/** What a scalar schema is made of, for the codecs `struct` generates (see {@link structCodec}). */
interface ScalarOps {
  check: (v: unknown, path: string) => unknown
  write: (dv: DataView, o: number, v: never) => void
  read: (dv: DataView, o: number) => unknown
}
const SCALAR_OPS = new WeakMap<Schema<unknown>, ScalarOps>()

/**
 * A field's path in error texts (`message.items[3].id`), made into a string only when an error
 * needs it: encoding passes it where a string is expected, and the template strings of the
 * error texts call `toString`. One per field of a schema, reused by every message, so encoding
 * builds no string per field per message. Schemas have no cycles, so a field's path is never
 * in use twice at once.
 */
class FieldPath {
  #parent: unknown = 'message'
  constructor(readonly name: string) {}
  /** This field under `parent` (a string or another FieldPath), typed as the string it stands for. */
  of(parent: unknown): string {
    this.#parent = parent
    return this as unknown as string
  }
  toString(): string {
    return `${String(this.#parent)}.${this.name}`
  }
}

/**
 * @internal `messages[i]` in a batch's error texts, made into a string only when an error needs
 * it (the codecs take any value whose `toString` is the path): no string per message. One per
 * batch call; `at(i)` stands for message `i` until the next `at`.
 */
export class BatchPath {
  #i = 0
  /** This object, standing for `messages[i]`. */
  at(i: number): string {
    this.#i = i
    return this as unknown as string
  }
  toString(): string {
    return `messages[${this.#i}]`
  }
}

function scalar<T>(kind: string, size: number, check: (v: unknown, path: string) => T, write: (dv: DataView, o: number, v: T) => void, read: (dv: DataView, o: number) => T): Fixed<T> {
  const schema: Fixed<T> = {
    kind,
    size,
    align: size,
    maxSize: size,
    encode(view, offset, value, capacity, path = 'message') {
      if (size > capacity) tooLarge(path, size, capacity)
      write(view, offset, check(value, path))
      return size
    },
    decode(view, offset, length) {
      checkLength('reply', kind, size, length)
      return read(view, offset)
    },
  }
  SCALAR_OPS.set(schema, { check, write: write as ScalarOps['write'], read })
  return schema
}

function intCheck(kind: string, min: number, max: number) {
  return (v: unknown, path: string): number => {
    if (typeof v !== 'number' || !Number.isInteger(v)) invalid(path, `an integer (${kind})`, v)
    if (v < min || v > max) throw new RingbridgeRangeError('ERR_RINGBRIDGE_INVALID_MESSAGE', `${path}: ${v} is out of range for ${kind} (${min}..${max})`)
    return v
  }
}

function bigCheck(kind: string, min: bigint, max: bigint) {
  return (v: unknown, path: string): bigint => {
    if (typeof v !== 'bigint') invalid(path, `a bigint (${kind})`, v)
    if (v < min || v > max) throw new RingbridgeRangeError('ERR_RINGBRIDGE_INVALID_MESSAGE', `${path}: ${v} is out of range for ${kind} (${min}..${max})`)
    return v
  }
}

const numCheck = (kind: string) => (v: unknown, path: string): number => {
  if (typeof v !== 'number') invalid(path, `a number (${kind})`, v)
  return v
}

/**
 * Unsigned 8-bit integer.
 * @example
 * ```ts
 * const Pixel = struct({ r: u8, g: u8, b: u8 })
 * ```
 */
export const u8: Schema<number> = scalar('u8', 1, intCheck('u8', 0, 0xff), (d, o, v) => d.setUint8(o, v), (d, o) => d.getUint8(o))
/**
 * Unsigned 16-bit integer.
 * @example
 * ```ts
 * const Port = struct({ port: u16 })
 * ```
 */
export const u16: Schema<number> = scalar('u16', 2, intCheck('u16', 0, 0xffff), (d, o, v) => d.setUint16(o, v, true), (d, o) => d.getUint16(o, true))
/**
 * Unsigned 32-bit integer.
 * @example
 * ```ts
 * const kernel = await runtime.launch({ handler: 'echo', input: u32, output: u32 })
 * await kernel.request(7) // 7
 * ```
 */
export const u32: Schema<number> = scalar('u32', 4, intCheck('u32', 0, 0xffffffff), (d, o, v) => d.setUint32(o, v, true), (d, o) => d.getUint32(o, true))
/**
 * Unsigned 64-bit integer, as a `bigint`.
 * @example
 * ```ts
 * const Stamp = struct({ ns: u64 }) // values are bigint: { ns: 1n }
 * ```
 */
export const u64: Schema<bigint> = scalar('u64', 8, bigCheck('u64', 0n, 0xffffffffffffffffn), (d, o, v) => d.setBigUint64(o, v, true), (d, o) => d.getBigUint64(o, true))
/**
 * Signed 8-bit integer.
 * @example
 * ```ts
 * const Delta = struct({ dx: i8, dy: i8 })
 * ```
 */
export const i8: Schema<number> = scalar('i8', 1, intCheck('i8', -0x80, 0x7f), (d, o, v) => d.setInt8(o, v), (d, o) => d.getInt8(o))
/**
 * Signed 16-bit integer.
 * @example
 * ```ts
 * const Sample = struct({ pcm: array(i16, 64) })
 * ```
 */
export const i16: Schema<number> = scalar('i16', 2, intCheck('i16', -0x8000, 0x7fff), (d, o, v) => d.setInt16(o, v, true), (d, o) => d.getInt16(o, true))
/**
 * Signed 32-bit integer.
 * @example
 * ```ts
 * const Offset = struct({ offset: i32 })
 * ```
 */
export const i32: Schema<number> = scalar('i32', 4, intCheck('i32', -0x80000000, 0x7fffffff), (d, o, v) => d.setInt32(o, v, true), (d, o) => d.getInt32(o, true))
/**
 * Signed 64-bit integer, as a `bigint`.
 * @example
 * ```ts
 * const Balance = struct({ cents: i64 }) // bigint
 * ```
 */
export const i64: Schema<bigint> = scalar('i64', 8, bigCheck('i64', -(1n << 63n), (1n << 63n) - 1n), (d, o, v) => d.setBigInt64(o, v, true), (d, o) => d.getBigInt64(o, true))
/**
 * 32-bit float (values are rounded to f32 on encode).
 * @example
 * ```ts
 * const Vec3 = array(f32, 3)
 * ```
 */
export const f32: Schema<number> = scalar('f32', 4, numCheck('f32'), (d, o, v) => d.setFloat32(o, v, true), (d, o) => d.getFloat32(o, true))
/**
 * 64-bit float.
 * @example
 * ```ts
 * const Reading = struct({ value: f64 })
 * ```
 */
export const f64: Schema<number> = scalar('f64', 8, numCheck('f64'), (d, o, v) => d.setFloat64(o, v, true), (d, o) => d.getFloat64(o, true))
/**
 * Boolean stored as one byte (0 or 1).
 * @example
 * ```ts
 * const Flagged = struct({ id: u32, urgent: bool })
 * ```
 */
export const bool: Schema<boolean> = scalar(
  'bool',
  1,
  (v, path) => (typeof v === 'boolean' ? v : invalid(path, 'a boolean', v)),
  (d, o, v) => d.setUint8(o, v ? 1 : 0),
  (d, o) => d.getUint8(o) !== 0,
)

/**
 * The scalar kinds a generated struct codec checks, writes and reads inline (see
 * {@link structCodec}), as source snippets over `v` (the value), `view` and `O` (the byte
 * offset). `ok` accepts exactly a subset of what the kind's check accepts; a value it refuses
 * goes through the check itself, which throws the usual error (or accepts it). 64-bit kinds
 * (bigint) keep their check and accessors as calls.
 */
const SCALAR_SOURCE = new Map<Schema<unknown>, { ok: string; set: string; get: string }>([
  [u8, { ok: "typeof v === 'number' && (v & 0xff) === v", set: 'view.setUint8(O, v)', get: 'view.getUint8(O)' }],
  [u16, { ok: "typeof v === 'number' && (v & 0xffff) === v", set: 'view.setUint16(O, v, true)', get: 'view.getUint16(O, true)' }],
  [u32, { ok: "typeof v === 'number' && (v >>> 0) === v", set: 'view.setUint32(O, v, true)', get: 'view.getUint32(O, true)' }],
  [i8, { ok: "typeof v === 'number' && ((v << 24) >> 24) === v", set: 'view.setInt8(O, v)', get: 'view.getInt8(O)' }],
  [i16, { ok: "typeof v === 'number' && ((v << 16) >> 16) === v", set: 'view.setInt16(O, v, true)', get: 'view.getInt16(O, true)' }],
  [i32, { ok: "typeof v === 'number' && (v | 0) === v", set: 'view.setInt32(O, v, true)', get: 'view.getInt32(O, true)' }],
  [f32, { ok: "typeof v === 'number'", set: 'view.setFloat32(O, v, true)', get: 'view.getFloat32(O, true)' }],
  [f64, { ok: "typeof v === 'number'", set: 'view.setFloat64(O, v, true)', get: 'view.getFloat64(O, true)' }],
  [bool, { ok: "typeof v === 'boolean'", set: 'view.setUint8(O, v ? 1 : 0)', get: 'view.getUint8(O) !== 0' }],
])

function fixedOf<T>(schema: Schema<T>, where: string): Fixed<T> {
  if (schema === null || typeof schema !== 'object' || typeof schema.encode !== 'function') {
    throw new RingbridgeTypeError('ERR_RINGBRIDGE_INVALID_ARGUMENT', `${where}: expected a schema (u32, f32, array(...), struct({...})), got ${describe(schema)}`)
  }
  if (schema.size === undefined) {
    throw new RingbridgeTypeError('ERR_RINGBRIDGE_INVALID_ARGUMENT', `${where}: a variable-length ${schema.kind} cannot be nested; use a fixed array`)
  }
  return schema as Fixed<T>
}

/**
 * A fixed-length array schema, with its element.
 * @example
 * ```ts
 * const m: ArraySchema<number[]> = array(array(f32, 4), 4) // a 4x4 matrix
 * m.length // 4
 * ```
 */
export interface ArraySchema<T> extends Schema<T[]> {
  /** Bytes. */
  readonly size: number
  /** The element schema. */
  readonly element: Schema<T>
  /** Elements. */
  readonly length: number
}

/**
 * A fixed-length array of `length` elements. Encodes any array-like of that length.
 * @example
 * ```ts
 * const Vec3 = array(f32, 3) // number[] of 3; `float v[3]` in CUDA
 * ```
 */
export function array<T>(element: Schema<T>, length: number): ArraySchema<T> {
  const el = fixedOf(element, 'array element')
  if (!Number.isInteger(length) || length < 1 || length > 1 << 20) {
    throw new RingbridgeRangeError('ERR_RINGBRIDGE_INVALID_ARGUMENT', `array length: expected an integer from 1 to ${1 << 20}, got ${describe(length)}`)
  }
  const size = el.size * length
  return {
    kind: `array<${el.kind},${length}>`,
    size,
    element: el,
    length,
    align: el.align,
    maxSize: size,
    encode(view, offset, value, capacity, path = 'message') {
      if (size > capacity) tooLarge(path, size, capacity)
      const v = value as ArrayLike<T> | undefined
      if (v === null || typeof v !== 'object' || typeof v.length !== 'number') invalid(path, `an array of ${length}`, value)
      if (v.length !== length) invalid(path, `an array of ${length}`, value)
      for (let i = 0; i < length; i++) el.encode(view, offset + i * el.size, v[i] as T, el.size, `${path}[${i}]`)
      return size
    },
    decode(view, offset, len) {
      checkLength('reply', this.kind, size, len)
      const out = new Array<T>(length)
      for (let i = 0; i < length; i++) out[i] = el.decode(view, offset + i * el.size, el.size)
      return out
    },
  }
}

/**
 * Field schemas of a struct, by name.
 * @example
 * ```ts
 * const fields: Fields = { id: u32, x: f32 }
 * const S = struct(fields)
 * ```
 */
export type Fields = Record<string, Schema<any>>

/**
 * The value type of a struct with `F` fields.
 * @example
 * ```ts
 * const S = struct({ id: u32, x: f32 })
 * const v: StructValue<typeof S.fields> = { id: 1, x: 0.5 }
 * ```
 */
export type StructValue<F extends Fields> = { [K in keyof F]: Infer<F[K]> }

/**
 * A struct schema, with its C layout.
 * @example
 * ```ts
 * const S: StructSchema<{ id: Schema<number> }> = struct({ id: u32 })
 * S.size // 4
 * ```
 */
export interface StructSchema<F extends Fields> extends Schema<StructValue<F>> {
  /** Bytes, trailing padding included. */
  readonly size: number
  /** Field offsets, in declaration order. */
  readonly layout: readonly FieldLayout[]
  /** The field schemas as declared. */
  readonly fields: F
  /** The CUDA C struct name, if given (generated headers otherwise derive one). */
  readonly name: string | undefined
}

/**
 * Options of {@link struct}.
 * @example
 * ```ts
 * const Particle = struct({ x: f32, y: f32 }, { name: 'Particle' } satisfies StructOptions)
 * cudaHeader(Particle, Particle) // struct Particle { float x; float y; }; …
 * ```
 */
export interface StructOptions {
  /** The struct's name in generated CUDA C (a C identifier), e.g. `Particle`. */
  name?: string
}

const alignUp = (n: number, a: number) => Math.ceil(n / a) * a

/**
 * A struct with C layout: fields in declaration order, each at its natural alignment, the size
 * rounded up to the largest alignment.
 * @example
 * ```ts
 * const Particle = struct({ id: u32, x: f32, v: array(f32, 3) }, { name: 'Particle' })
 * type Particle = Infer<typeof Particle> // { id: number; x: number; v: number[] }
 * ```
 */
export function struct<F extends Fields>(fields: F, options?: StructOptions): StructSchema<F> {
  if (fields === null || typeof fields !== 'object' || Array.isArray(fields)) badFields(fields)
  const name = options?.name
  if (name !== undefined && (typeof name !== 'string' || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(name))) {
    throw new RingbridgeTypeError('ERR_RINGBRIDGE_INVALID_ARGUMENT', `struct name: expected a C identifier, got ${describe(name)}`)
  }
  const names = Object.keys(fields)
  if (names.length === 0) badFields(fields)
  let offset = 0
  let align = 1
  const layout: FieldLayout[] = []
  const parts: { name: string; schema: Fixed<unknown>; offset: number }[] = []
  for (const name of names) {
    const s = fixedOf(fields[name] as Schema<unknown>, `field '${name}'`)
    offset = alignUp(offset, s.align)
    layout.push({ name, offset, size: s.size, kind: s.kind })
    parts.push({ name, schema: s, offset })
    offset += s.size
    align = Math.max(align, s.align)
  }
  const size = alignUp(offset, align)
  const known = new Set(names)
  /**
   * Refuses own enumerable properties that are not fields (an extra field would be dropped
   * without a word). Fast path, no allocation: a value whose enumerable keys are exactly the fields in
   * declaration order (a literal, a spread, a decoded reply). Anything else is checked key by
   * key, and the error text is built only when a key is not a field.
   */
  const checkKeys = (v: Record<string, unknown>, path: string): void => {
    let i = 0
    let ordered = true
    for (const k in v) {
      if (k !== names[i]) ordered = false
      i++
    }
    if (ordered && i === names.length) return
    let extra: string[] | undefined
    for (const k in v) if (!known.has(k) && Object.prototype.hasOwnProperty.call(v, k)) (extra ??= []).push(k)
    if (extra !== undefined) {
      const list = extra.map((k) => `'${k}'`).join(', ')
      throw new RingbridgeTypeError(
        'ERR_RINGBRIDGE_INVALID_MESSAGE',
        `${path}: unexpected field${extra.length > 1 ? 's' : ''} ${list} (the struct's fields: ${names.join(', ')})`,
      )
    }
  }
  const notObject = (path: string, value: unknown): never => invalid(path, `an object with fields ${names.join(', ')}`, value)
  const missing = (path: string, i: number): never => invalid(`${path}.${parts[i]!.name}`, `a ${parts[i]!.schema.kind} (field is missing)`, undefined)
  const paths = parts.map((p) => new FieldPath(p.name))
  const codec = structCodec(size, parts, paths, { tooLarge, notObject, checkKeys, missing })
  return {
    kind: 'struct',
    size,
    align,
    maxSize: size,
    layout,
    fields,
    name,
    encode: codec.encode,
    decode: codec.decode as Schema<StructValue<F>>['decode'],
  }
}

/**
 * The encoder and decoder of a struct, generated once per schema (issue #12: no per-field loop,
 * no string per field per message): the encoder checks and writes each scalar field at its
 * constant offset (a nested struct or array field through its own schema), the decoder returns
 * one object literal, so every reply has the same shape. The checks run in field order, the
 * same as a hand-written loop would, so the errors are the same.
 */
function structCodec(
  size: number,
  parts: readonly { name: string; schema: Fixed<unknown>; offset: number }[],
  paths: readonly FieldPath[],
  fail: {
    tooLarge: (path: string, need: number, capacity: number) => never
    notObject: (path: string, value: unknown) => never
    checkKeys: (v: Record<string, unknown>, path: string) => void
    missing: (path: string, i: number) => never
  },
): { encode: Schema<unknown>['encode']; decode: Schema<unknown>['decode'] } {
  // A scalar field is checked and written inline; any other keeps its own encode/decode (its
  // checks and its paths).
  const ops = parts.map((p) => SCALAR_OPS.get(p.schema))
  // Names and numbers only enter the source as JSON literals and integers.
  const key = (i: number) => JSON.stringify(parts[i]!.name)
  // The common kinds inline (SCALAR_SOURCE): a fast test, the full check only when it fails.
  const inline = parts.map((p) => SCALAR_SOURCE.get(p.schema))
  const at = (snippet: string, offset: number) => snippet.replace('O', `base + ${offset}`)
  const write = (p: (typeof parts)[number], i: number) => {
    const src = inline[i]
    if (src) return `if (!(${src.ok})) v = C[${i}](v, P[${i}].of(path)); ${at(src.set, p.offset)}`
    return ops[i] ? `W[${i}](view, base + ${p.offset}, C[${i}](v, P[${i}].of(path)))` : `S[${i}].encode(view, base + ${p.offset}, v, ${p.schema.size}, P[${i}].of(path))`
  }
  const lines = parts.map((p, i) => [`v = value[${key(i)}]; if (v === undefined && !(${key(i)} in value)) missing(path, ${i})`, write(p, i)])
  const read = (p: (typeof parts)[number], i: number) => {
    const src = inline[i]
    if (src) return at(src.get, p.offset)
    return ops[i] ? `R[${i}](view, base + ${p.offset})` : `S[${i}].decode(view, base + ${p.offset}, ${p.schema.size})`
  }
  // __proto__ as a plain key would set the reply's prototype; computed, it is a field.
  const literalKey = (i: number) => (parts[i]!.name === '__proto__' ? `[${key(i)}]` : key(i))
  const source = `"use strict"
return {
  encode(view, base, value, capacity, path) {
    if (path === undefined) path = 'message'
    if (${size} > capacity) tooLarge(path, ${size}, capacity)
    if (value === null || typeof value !== 'object') notObject(path, value)
    // The keys in field order and no others, tested inline (a call per message cost more than
    // the loop); anything else goes to checkKeys, which throws for an unexpected field.
    let n = 0
    let ordered = true
    for (const k in value) {
      if (k !== K[n]) ordered = false
      n++
    }
    if (!ordered || n !== ${parts.length}) checkKeys(value, path)
    let v
    ${lines.flat().join('\n    ')}
    return ${size}
  },
  decode(view, base, len) {
    if (len !== ${size}) checkLength('reply', 'struct', ${size}, len)
    return { ${parts.map((p, i) => `${literalKey(i)}: ${read(p, i)}`).join(', ')} }
  },
}`
  // eslint-disable-next-line @typescript-eslint/no-implied-eval
  const make = new Function('C', 'W', 'R', 'S', 'P', 'K', 'tooLarge', 'notObject', 'checkKeys', 'missing', 'checkLength', source)
  return make(
    ops.map((o) => o?.check),
    ops.map((o) => o?.write),
    ops.map((o) => o?.read),
    parts.map((p) => p.schema),
    paths,
    parts.map((p) => p.name),
    fail.tooLarge,
    fail.notObject,
    fail.checkKeys,
    fail.missing,
    checkLength,
  ) as { encode: Schema<unknown>['encode']; decode: Schema<unknown>['decode'] }
}

function badFields(got: unknown): never {
  throw new RingbridgeTypeError('ERR_RINGBRIDGE_INVALID_ARGUMENT', `struct fields: expected an object of field schemas with at least one field, got ${describe(got)}`)
}

/**
 * Raw bytes of any length up to the slot payload (and up to `max`, if given). Decoded replies
 * are fresh copies, never views into the ring.
 * @example
 * ```ts
 * const kernel = await runtime.launch({ handler: 'echo', input: bytes(), output: bytes() })
 * await kernel.request(new TextEncoder().encode('hi'))
 * ```
 */
export function bytes(max = 1 << 20): Schema<Uint8Array> {
  if (!Number.isInteger(max) || max < 0) {
    throw new RingbridgeRangeError('ERR_RINGBRIDGE_INVALID_ARGUMENT', `bytes max: expected a non-negative integer, got ${describe(max)}`)
  }
  return {
    kind: 'bytes',
    size: undefined,
    align: 1,
    maxSize: max,
    encode(view, offset, value, capacity, path = 'message') {
      if (!(value instanceof Uint8Array)) invalid(path, 'a Uint8Array', value)
      const limit = Math.min(capacity, max)
      if (value.length > limit) tooLarge(path, value.length, limit)
      new Uint8Array(view.buffer, view.byteOffset + offset, value.length).set(value)
      return value.length
    },
    decode(view, offset, length) {
      const out = new Uint8Array(length)
      out.set(new Uint8Array(view.buffer, view.byteOffset + offset, length))
      return out
    },
  }
}

/**
 * A schema as plain data, to rebuild it in another thread (functions do not cross): what a
 * {@link ProducerHandle} carries to a worker.
 * @example
 * ```ts
 * const d: SchemaDescriptor = kernel.producer().input // { kind: 'struct', fields: [...] }
 * ```
 */
export type SchemaDescriptor =
  | { kind: 'scalar'; name: string }
  | { kind: 'array'; element: SchemaDescriptor; length: number }
  | { kind: 'struct'; name: string | undefined; fields: [string, SchemaDescriptor][] }
  | { kind: 'bytes'; max: number }

const SCALAR_SCHEMAS: Record<string, Schema<any>> = { u8, u16, u32, u64, i8, i16, i32, i64, f32, f64, bool }

/** @internal The plain-data form of a schema built by this module. */
export function describeSchema(schema: Schema<unknown>): SchemaDescriptor {
  if (SCALAR_SCHEMAS[schema.kind] === schema) return { kind: 'scalar', name: schema.kind }
  if (schema.kind === 'bytes') return { kind: 'bytes', max: schema.maxSize }
  if (schema.kind.startsWith('array<')) {
    const a = schema as ArraySchema<unknown>
    return { kind: 'array', element: describeSchema(a.element), length: a.length }
  }
  if (schema.kind === 'struct') {
    const s = schema as StructSchema<Fields>
    return { kind: 'struct', name: s.name, fields: Object.entries(s.fields).map(([n, f]) => [n, describeSchema(f)]) }
  }
  throw new RingbridgeTypeError('ERR_RINGBRIDGE_INVALID_ARGUMENT', `a JS handler needs schemas built by ringbridge (u32, struct, array, bytes…), got a custom ${schema.kind}`)
}

/** @internal Rebuilds a schema from {@link describeSchema}'s form. */
export function schemaFrom(d: SchemaDescriptor): Schema<any> {
  switch (d.kind) {
    case 'scalar':
      return SCALAR_SCHEMAS[d.name]!
    case 'bytes':
      return bytes(d.max)
    case 'array':
      return array(schemaFrom(d.element), d.length)
    case 'struct':
      return struct(Object.fromEntries(d.fields.map(([n, f]) => [n, schemaFrom(f)])), { name: d.name })
  }
}
