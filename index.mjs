// The ESM entry of ringbridge (`import … from 'ringbridge'`). The CommonJS build, index.js, is
// the package's one implementation: this file only re-exports its named exports, so `import`
// and `require` hand out the very same classes and functions (no dual-package hazard: one
// Runtime class, one native addon, `instanceof` holds across both). Keep the list equal to
// index.ts's value exports; __test__/exports.spec.ts checks that it is.
export {
  Runtime,
  RingKernel,
  ChunkSlots,
  ReceiveChunk,
  SendChunk,
  KERNEL_ERROR_NAMES,
  MessageQueue,
  BACKPRESSURE_POLICIES,
  array,
  bool,
  bytes,
  f32,
  f64,
  i16,
  i32,
  i64,
  i8,
  struct,
  u16,
  u32,
  u64,
  u8,
  RingProducer,
  compileKernel,
  cudaHeader,
  AbortError,
  ERROR_CODES,
  RingbridgeError,
  RingbridgeRangeError,
  RingbridgeTypeError,
} from './index.js'
