//! Node binding of ringbridge: converts, validates and forwards to `ringbridge-core`. Private to
//! the package; the TypeScript facade in `ts/` is the public API.

mod compile;
mod doctor;
mod error;
mod ring;
mod sab;

use napi_derive::napi;
use ringbridge_core::protocol::{self, FIELD_OFFSETS};
use ringbridge_core::ErrorCode;

/// Protocol constants JavaScript needs to read and write a region (spec §3).
#[napi(object)]
pub struct ProtocolConstants {
    /// Protocol version.
    pub version: u32,
    /// Magic word.
    pub magic: u32,
    /// Bytes of the frame header.
    pub frame_header_bytes: u32,
    /// Alignment of a region inside its SharedArrayBuffer.
    pub region_page: u32,
    /// Error frame flag.
    pub flag_error: u32,
    /// Multi-reply frame flag.
    pub flag_multi: u32,
    /// `host_waiting` bit for replies.
    pub wait_output: u32,
    /// `host_waiting` bit for input room.
    pub wait_input: u32,
    /// Terminate command values: none (keep running; also what a word holding no command means).
    pub terminate_none: u32,
    /// Terminate command values.
    pub terminate_drain: u32,
    /// Terminate command values.
    pub terminate_abandon: u32,
    /// Largest ring capacity (slots, a power of two from 1).
    pub max_capacity: u32,
    /// Smallest slot size in bytes, header included.
    pub min_slot_size: u32,
    /// Largest slot size in bytes.
    pub max_slot_size: u32,
    /// `[name, byte offset]` of every control-block field, in spec order.
    pub fields: Vec<(String, u32)>,
    /// `[name, byte offset]` of the frame header's fields, relative to the slot (spec §3.3).
    pub frame_fields: Vec<(String, u32)>,
    /// `[NAME, value]` of every number in `protocol::CONSTANTS`, with the spec's SCREAMING name
    /// (`STATE_*`, `KERNEL_ERROR_*`, `TERMINATE_*`, `WAIT_*`, `FLAG_*`, …): the one table.
    pub table: Vec<(String, f64)>,
    /// The name of each kernel error code, indexed by the code (`kernel_error::NAMES`).
    pub kernel_error_names: Vec<String>,
    /// The `transport` values a launch accepts (`auto` first), as the cuda backend names them.
    pub transport_names: Vec<String>,
    /// The backend names `Runtime.open` accepts (`auto` first).
    pub backend_names: Vec<String>,
}

/// The protocol constants, from the Rust definitions (one source of truth).
#[napi]
pub fn protocol_constants() -> ProtocolConstants {
    ProtocolConstants {
        version: protocol::VERSION,
        magic: protocol::MAGIC,
        frame_header_bytes: protocol::FRAME_HEADER_BYTES as u32,
        region_page: sab::REGION_PAGE as u32,
        flag_error: protocol::FLAG_ERROR as u32,
        flag_multi: protocol::FLAG_MULTI as u32,
        wait_output: protocol::WAIT_OUTPUT,
        wait_input: protocol::WAIT_INPUT,
        terminate_none: protocol::TERMINATE_NONE,
        terminate_drain: protocol::TERMINATE_DRAIN,
        terminate_abandon: protocol::TERMINATE_ABANDON,
        max_capacity: protocol::MAX_CAPACITY,
        min_slot_size: protocol::MIN_SLOT_SIZE,
        max_slot_size: protocol::MAX_SLOT_SIZE,
        fields: FIELD_OFFSETS.iter().map(|(n, o)| ((*n).to_owned(), *o as u32)).collect(),
        frame_fields: [
            ("length", protocol::offsets::FRAME_LENGTH),
            ("type_id", protocol::offsets::FRAME_TYPE_ID),
            ("flags", protocol::offsets::FRAME_FLAGS),
            ("correlation_id", protocol::offsets::FRAME_CORRELATION_ID),
        ]
        .iter()
        .map(|(n, o)| ((*n).to_owned(), *o as u32))
        .collect(),
        // Every value is below 2^53 (the largest is MAGIC, a u32): exact as a JS number.
        table: protocol::CONSTANTS.iter().map(|(n, v)| ((*n).to_owned(), *v as f64)).collect(),
        kernel_error_names: protocol::kernel_error::NAMES.iter().map(|s| (*s).to_owned()).collect(),
        transport_names: ringbridge_core::backend::cuda::TRANSPORT_NAMES.iter().map(|s| (*s).to_owned()).collect(),
        backend_names: ringbridge_core::backend::BACKEND_NAMES.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// Every stable error code, in `docs/errors.md` order.
#[napi]
pub fn error_codes() -> Vec<String> {
    ErrorCode::ALL.iter().map(|c| c.as_str().to_owned()).collect()
}

/// Names of the built-in handlers.
#[napi]
pub fn builtin_handlers() -> Vec<String> {
    ringbridge_core::backend::handlers::BUILTIN_NAMES.iter().map(|s| (*s).to_owned()).collect()
}

/// What compiling a user kernel produced.
#[napi(object)]
pub struct CompiledKernel {
    /// `cubin` (for the exact arch) or `ptx`.
    pub kind: String,
    /// Bytes of the image.
    pub bytes: u32,
    /// Whether it came from the disk cache.
    pub cached: bool,
}

/// Runs this process as a kernel host (process isolation): serves one kernel over the control
/// socket on stdin, blocking until the parent stops it or goes away; returns the exit code.
#[napi]
pub fn serve_kernel_host() -> i32 {
    ringbridge_core::isolate::child::serve_stdin()
}

/// How many CUDA devices this process sees (no context is opened); an error without a driver.
#[napi]
pub fn cuda_device_count() -> error::Result<u32> {
    ringbridge_core::cuda::driver::device_count().map(|n| n as u32).map_err(error::to_js)
}

/// Resolves a backend name to the backend that would run here, with the reason.
#[napi]
pub fn choose_backend(name: String) -> error::Result<Vec<String>> {
    let c = ringbridge_core::backend::choose(&name).map_err(error::to_js)?;
    Ok(vec![c.name.to_owned(), c.reason])
}

/// `chooseBackendAsync`: the backend choice on the libuv pool. Probing cuda loads the driver and
/// compiles the ring kernel by NVRTC (about a second on a cold cache): not on the JS thread.
pub struct ChooseTask {
    name: String,
}

impl napi::Task for ChooseTask {
    type Output = error::Result<Vec<String>>;
    type JsValue = Vec<String>;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        Ok(ringbridge_core::backend::choose(&self.name).map(|c| vec![c.name.to_owned(), c.reason]).map_err(error::to_js))
    }

    fn resolve(&mut self, env: napi::Env, output: Self::Output) -> napi::Result<Vec<String>> {
        output.map_err(|e| napi::Error::from(napi::bindgen_prelude::JsError::from(e).into_unknown(env)))
    }
}

/// As `chooseBackend`, off the JS thread; rejects with its errors (same `code` and message).
#[napi(ts_return_type = "Promise<string[]>")]
pub fn choose_backend_async(name: String) -> napi::bindgen_prelude::AsyncTask<ChooseTask> {
    napi::bindgen_prelude::AsyncTask::new(ChooseTask { name })
}
