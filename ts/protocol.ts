/**
 * The ring protocol (docs/PROTOCOL.md) as TypeScript: every number and name of the protocol,
 * read once from the native module, which takes them from `ringbridge-core/src/protocol.rs`
 * (`CONSTANTS`, `kernel_error::NAMES`, `offsets`) — the TS twin of that module. No other TS
 * module writes a kernel state, an error code, a flag, a header offset or a transport name as a
 * literal: they import it from here. A name that protocol.rs no longer has fails here, at load,
 * and `__test__/protocol.spec.ts` checks the TS unions against the native lists.
 *
 * Also the codecs of what a slot holds (spec §3.3–3.4): the frame header, the error record of an
 * error frame, the count of a multi-reply frame, and the skip frame of shared producers (§15).
 * @internal
 * @module
 */
import native from './binding'
import { RingbridgeError } from './errors'

const C = native.protocolConstants()
const TABLE = new Map(C.table)

function missing(what: string): never {
  throw new RingbridgeError('ERR_RINGBRIDGE_PROTOCOL', `native protocol lacks ${what}`)
}

/** One number of `protocol::CONSTANTS`, by its spec name. */
function constant(name: string): number {
  return TABLE.get(name) ?? missing(`constant '${name}'`)
}

/** `fooBar` → `FOO_BAR`: the spec's SCREAMING name of a camelCase key. */
const screaming = (key: string) => key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()

/** The constants `PREFIX_KEY` of the table as `{ key: value }`, each checked present. */
function group<K extends string>(prefix: string, keys: readonly K[]): Readonly<Record<K, number>> {
  return Object.freeze(Object.fromEntries(keys.map((k) => [k, constant(prefix + screaming(k))])) as Record<K, number>)
}

/** Every `[NAME, value]` of protocol.rs's `CONSTANTS`, as the native module hands them over. */
export const CONSTANT_TABLE: readonly (readonly [string, number])[] = Object.freeze(C.table.map(([n, v]) => Object.freeze([n, v] as const)))

/** `"RBG1"`: the first word of every control block. */
export const MAGIC = constant('MAGIC')
/** Protocol version. */
export const VERSION = constant('VERSION')
/** Bytes of the control block (seven 128-byte lines). */
export const CONTROL_BLOCK_BYTES = constant('CONTROL_BLOCK_BYTES')
/** Bytes of the frame header at the start of every slot. */
export const FRAME_HEADER_BYTES = constant('FRAME_HEADER_BYTES')
/** Bytes of an error record (an error frame's payload: code, detail). */
export const ERROR_RECORD_BYTES = constant('ERROR_RECORD_BYTES')
/** Smallest slot, header included. */
export const MIN_SLOT_SIZE = constant('MIN_SLOT_SIZE')
/** Largest slot. */
export const MAX_SLOT_SIZE = constant('MAX_SLOT_SIZE')
/** Largest ring capacity (slots). */
export const MAX_CAPACITY = constant('MAX_CAPACITY')
/** Alignment of a region inside its SharedArrayBuffer (whole pages: a GPU transport registers them). */
export const REGION_PAGE = C.regionPage
/** Most replies a CUDA handler may give one message (`maxReplies`). */
export const MAX_REPLIES = constant('MAX_REPLIES')

/** Kernel `state` word values (spec §9). */
export const STATE = group('STATE_', ['launching', 'running', 'paused', 'terminated'] as const)
/** Kernel error codes (spec §12): `error_code`, and an error frame's record. */
export const KERNEL_ERROR = group('KERNEL_ERROR_', ['none', 'badFrame', 'badPayload', 'spinTimeout', 'replyTooLarge', 'handlerFault', 'skipped'] as const)
/** `terminate` word commands (spec §9). */
export const TERMINATE = group('TERMINATE_', ['none', 'drain', 'abandon'] as const)
/** `host_waiting` bits (H7). */
export const WAIT = group('WAIT_', ['output', 'input'] as const)
/** Frame header flags (spec §3.3). */
export const FLAG = group('FLAG_', ['error', 'multi'] as const)
/** `input_producer` values (spec §14). */
export const PRODUCER = group('PRODUCER_', ['host', 'kernel'] as const)
/** Built-in `handler_id`s. */
export const HANDLER = group('HANDLER_', ['echo', 'saxpy', 'user'] as const)

/** The name of each kernel state, indexed by its `state` word: `STATE_RUNNING` → `running`. */
export const STATE_NAMES: readonly string[] = Object.freeze(
  C.table
    .filter(([n]) => n.startsWith('STATE_'))
    .reduce<string[]>((names, [n, v]) => ((names[v] = n.slice('STATE_'.length).toLowerCase()), names), []),
)
/** The name of each kernel error code, indexed by the code (`kernel_error::NAMES`). */
export const ERROR_NAMES: readonly string[] = Object.freeze([...C.kernelErrorNames])
/** The `transport` values a launch accepts, `auto` first. */
export const TRANSPORT_NAMES: readonly string[] = Object.freeze([...C.transportNames])
/** The backend names `Runtime.open` accepts, `auto` first. */
export const BACKEND_NAMES: readonly string[] = Object.freeze([...C.backendNames])

/** `'a', 'b' or 'c'`: a list of names as an error message expects it. */
export function quotedList(names: readonly string[]): string {
  const q = names.map((n) => `'${n}'`)
  return q.length < 2 ? q.join('') : `${q.slice(0, -1).join(', ')} or ${q[q.length - 1]}`
}

// ---- control block --------------------------------------------------------------------------

const FIELDS = new Map(C.fields)

/** Byte offset of a control-block field (spec §3.2), by its spec name (`input_tail`). */
export function fieldOffset(name: string): number {
  return FIELDS.get(name) ?? missing(`field '${name}'`)
}

// ---- frame header (spec §3.3) -----------------------------------------------------------------

const FRAME_FIELDS = new Map(C.frameFields)
const frameField = (name: string) => FRAME_FIELDS.get(name) ?? missing(`frame header field '${name}'`)

/** Byte offsets of the frame header's fields, from the slot's start. */
export const FRAME = Object.freeze({
  length: frameField('length'),
  typeId: frameField('type_id'),
  flags: frameField('flags'),
  correlationId: frameField('correlation_id'),
})

/**
 * The header as 32-bit words (index from the slot's first word), for the packed hot loops:
 * `length`; `typeId` in the low half of one word with `flags` in its high half
 * (little-endian); the correlation id's low and high halves.
 */
export const FRAME_WORD = Object.freeze({
  length: FRAME.length / 4,
  typeIdAndFlags: FRAME.typeId / 4,
  correlationLow: FRAME.correlationId / 4,
  correlationHigh: FRAME.correlationId / 4 + 1,
})
if (FRAME.flags !== FRAME.typeId + 2 || FRAME.typeId % 4 !== 0 || FRAME.length % 4 !== 0 || FRAME.correlationId % 8 !== 0) {
  missing('the frame header layout the packed paths read (length; type_id, flags in one word; correlation_id)')
}

/** 2^32: a correlation id is written as two 32-bit halves (a BigInt per message costs more than the frame). */
const TWO_32 = 0x100000000

/** A frame header as read from a slot. */
export interface FrameHeader {
  length: number
  typeId: number
  flags: number
  correlationId: number
}

/**
 * Writes a frame header at byte `at`: the one place the JavaScript sides (the host's input
 * ring, shared producers, the worker kernel) lay a header out. A number id is written as two
 * 32-bit halves.
 */
export function writeFrameHeader(view: DataView, at: number, length: number, typeId: number, flags: number, id: number | bigint): void {
  view.setUint32(at + FRAME.length, length, true)
  view.setUint16(at + FRAME.typeId, typeId, true)
  view.setUint16(at + FRAME.flags, flags, true)
  if (typeof id === 'bigint') {
    view.setBigUint64(at + FRAME.correlationId, id, true)
  } else {
    view.setUint32(at + FRAME.correlationId, id >>> 0, true)
    view.setUint32(at + FRAME.correlationId + 4, Math.floor(id / TWO_32), true)
  }
}

/** Reads the frame header at byte `at` (the correlation id as a number: exact below 2^53). */
export function readFrameHeader(view: DataView, at: number): FrameHeader {
  return {
    length: view.getUint32(at + FRAME.length, true),
    typeId: view.getUint16(at + FRAME.typeId, true),
    flags: view.getUint16(at + FRAME.flags, true),
    correlationId: view.getUint32(at + FRAME.correlationId, true) + view.getUint32(at + FRAME.correlationId + 4, true) * TWO_32,
  }
}

/** Reads the frame header's correlation id at byte `at` as a BigInt (the full u64). */
export function readCorrelationId(view: DataView, at: number): bigint {
  return view.getBigUint64(at + FRAME.correlationId, true)
}

/** Writes header words for the packed path: `u32` over the buffer, `w` the slot's first word. */
export function writeFrameHeaderWords(u32: Uint32Array, w: number, length: number, typeId: number, id: number): void {
  u32[w + FRAME_WORD.length] = length
  u32[w + FRAME_WORD.typeIdAndFlags] = typeId // flags 0 in the high half (little-endian)
  u32[w + FRAME_WORD.correlationLow] = id >>> 0
  u32[w + FRAME_WORD.correlationHigh] = Math.floor(id / TWO_32)
}

/** The flags of the header whose first word is `w`, read from the packed path's `u32` view. */
export function frameFlagsOfWords(u32: Uint32Array, w: number): number {
  return u32[w + FRAME_WORD.typeIdAndFlags]! >>> 16
}

// ---- error record (spec §3.3, §12) -----------------------------------------------------------

/**
 * The first code a handler may give (`ctx.fail`, a CUDA handler's return): codes below it are
 * the kernel's (`KERNEL_ERROR`, spec §12).
 */
export const FIRST_HANDLER_CODE = constant('FIRST_HANDLER_CODE')

/** An error frame's payload. */
export interface ErrorRecord {
  /** A kernel error code (`KERNEL_ERROR`) or a handler's code >= 256. */
  code: number
  detail: number
}

/** Reads the error record of an error frame's payload (zeros when it is shorter than a record). */
export function readErrorRecord(view: DataView, payload: number, length: number): ErrorRecord {
  if (length < ERROR_RECORD_BYTES) return { code: 0, detail: 0 }
  return { code: view.getUint32(payload, true), detail: view.getUint32(payload + 4, true) }
}

/** Writes an error record at `payload`; returns its length (the frame's `length`). */
export function writeErrorRecord(view: DataView, payload: number, code: number, detail: number): number {
  view.setUint32(payload, code, true)
  view.setUint32(payload + 4, detail, true)
  return ERROR_RECORD_BYTES
}

/**
 * Whether a frame (its payload at `payload` of `view`, `length` bytes, its header's `flags`) is
 * a skip frame (§15): an error frame whose record is `SKIPPED`. The kernel's owner drops these
 * replies, and a terminate report does not list them as undelivered messages.
 */
export function isSkipFrame(view: DataView, payload: number, length: number, flags: number): boolean {
  return (flags & FLAG.error) !== 0 && length === ERROR_RECORD_BYTES && view.getUint32(payload, true) === KERNEL_ERROR.skipped
}

// ---- multi-reply frame (spec §3.3, FLAG_MULTI) ------------------------------------------------

/** Bytes before a multi-reply frame's records: a u32 count and 4 reserved bytes (spec §3.3). */
export const MULTI_HEADER_BYTES = constant('MULTI_HEADER_BYTES')

/** Bytes a multi-reply frame of `count` records of `size` bytes takes. */
export function multiFrameBytes(count: number, size: number): number {
  return MULTI_HEADER_BYTES + count * size
}

/**
 * The records of a multi-reply frame: its count, and whether `length` is exactly `count`
 * records of `size` bytes (a frame that is not is a protocol error). Record `i` starts at
 * `payload + MULTI_HEADER_BYTES + i * size`.
 */
export function readMultiHeader(view: DataView, payload: number, length: number, size: number): { count: number; fits: boolean } {
  const count = length >= MULTI_HEADER_BYTES ? view.getUint32(payload, true) : 0
  return { count, fits: size > 0 && length === multiFrameBytes(count, size) }
}
