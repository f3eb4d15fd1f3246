/**
 * ringbridge: typed messages between Node.js and persistent ring kernels, through ring buffers
 * in shared memory. Start with {@link Runtime.open}.
 * @module ringbridge
 */
export { Runtime, type BackendName, type RuntimeOptions } from './ts/runtime'
export { RingKernel } from './ts/kernel'
export { ChunkSlots, ReceiveChunk, SendChunk } from './ts/chunk'
export {
  KERNEL_ERROR_NAMES,
  type CommitOptions,
  type KernelHostStatus,
  type KernelState,
  type KernelStats,
  type LaunchOptions,
  type RouteStageInfo,
  type SendOutcome,
  type TerminateMode,
  type TerminateReport,
  type WaitOptions,
} from './ts/types'
export { MessageQueue, BACKPRESSURE_POLICIES, type Backpressure, type OfferResult, type QueueOptions } from './ts/queue'
export {
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
  type ArraySchema,
  type FieldLayout,
  type Fields,
  type Infer,
  type Schema,
  type StructSchema,
  type SchemaDescriptor,
  type StructOptions,
  type StructValue,
} from './ts/codec'
export { type LatencyPercentiles } from './ts/histogram'
export { RingProducer, type ProducerHandle, type SharedInputStats } from './ts/producer'
export { type HandlerContext, type JsHandler } from './ts/handler'
export { compileKernel, cudaHeader, type CompiledKernel, type KernelSource } from './ts/cuda'
export {
  AbortError,
  ERROR_CODES,
  RingbridgeError,
  RingbridgeRangeError,
  RingbridgeTypeError,
  type AnyRingbridgeError,
  type RingbridgeErrorCode,
} from './ts/errors'
