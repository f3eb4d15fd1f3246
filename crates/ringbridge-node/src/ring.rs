//! `NativeKernel`: one launched ring kernel over a JS-owned SharedArrayBuffer. JavaScript does
//! the host steps itself (ts/ring.ts); this class only launches, wakes and joins the kernel.
// `deny`, not `forbid`: the #[napi] expansion allows unsafe for its own glue.
#![deny(unsafe_code)]

use std::sync::Arc;

use napi::bindgen_prelude::{ArrayBuffer, Uint8Array};
use napi::Env;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use napi_derive::napi;
use ringbridge_core::backend::cuda::Shape;
use ringbridge_core::backend::user::UserKernel;
use ringbridge_core::backend::{self, Isolation, Kernel, LaunchSpec, Launched};
use ringbridge_core::isolate::HostCommand;
use ringbridge_core::transport::Region;
use ringbridge_core::protocol::{RegionLayout, RingConfig};

use crate::error::{invalid, to_js, Result};
use crate::sab;

/// Ring shapes and what to run.
#[napi(object)]
pub struct KernelOptions {
    /// `auto`, `cpu` or `cuda`.
    pub backend: String,
    /// Built-in handler name.
    pub handler: String,
    /// Input ring capacity (power of two).
    pub input_capacity: u32,
    /// Input slot size in bytes (power of two, header included).
    pub input_slot_size: u32,
    /// Output ring capacity.
    pub output_capacity: u32,
    /// Output slot size.
    pub output_slot_size: u32,
    /// GPU transport: `auto` (default), `mapped`, `dma`, `managed`.
    pub transport: Option<String>,
    /// GPU blocks (default: 1 for mapped, one per SM otherwise).
    pub blocks: Option<u32>,
    /// GPU threads per block (default 512 for mapped, 256 otherwise).
    pub threads: Option<u32>,
    /// `thread` (default): the kernel's runner lives in this process, over the `memory` given;
    /// `process`: a kernel host process runs it over shared memory the addon allocates
    /// (`sharedMemory()`), so a GPU fault ends that process, not this one.
    pub isolation: Option<String>,
    /// The kernel host to start under `process` isolation: program, then arguments.
    pub host_command: Option<Vec<String>>,
    /// A user handler's CUDA C source (with `entry` and `schemaHeader`), instead of `handler`.
    pub source: Option<String>,
    /// The user handler's function name.
    pub entry: Option<String>,
    /// The CUDA header generated from the input and output schemas.
    pub schema_header: Option<String>,
    /// A user handler that pushes up to this many replies per message (`rb_replies&`).
    pub max_replies: Option<u32>,
    /// The CUDA device ordinal (default 0).
    pub device: Option<u32>,
}

/// Byte offsets of a region's parts, from the region's start.
#[napi(object)]
pub struct RegionInfo {
    /// Offset of the input slot array.
    pub input_offset: u32,
    /// Offset of the output slot array.
    pub output_offset: u32,
    /// Bytes the region needs.
    pub total_bytes: u32,
}

pub(crate) fn layout_of(o: &KernelOptions) -> Result<RegionLayout> {
    RegionLayout::new(
        RingConfig { capacity: o.input_capacity, slot_size: o.input_slot_size },
        RingConfig { capacity: o.output_capacity, slot_size: o.output_slot_size },
    )
    .map_err(to_js)
}

/// Computes where the rings of `options` sit in a region (validating the shapes).
#[napi]
pub fn region_layout(options: KernelOptions) -> Result<RegionInfo> {
    let l = layout_of(&options)?;
    let narrow = |n: usize| u32::try_from(n).map_err(|_| crate::error::invalid(format!("region of {n} bytes exceeds 4 GiB")));
    Ok(RegionInfo {
        input_offset: narrow(l.input_offset)?,
        output_offset: narrow(l.output_offset)?,
        total_bytes: narrow(l.total_bytes)?,
    })
}

/// The doorbell JS receives: a weak threadsafe function with a queue of one, so rings coalesce.
type Doorbell = ThreadsafeFunction<(), (), (), Status, false, true, 1>;

/// A ring kernel running over a SharedArrayBuffer.
#[napi]
pub struct NativeKernel {
    kernel: Option<Box<dyn Kernel>>,
    region_offset: u32,
    launched: Launched,
    /// The region, when the addon allocated it (process isolation) and JS has yet to take it.
    shared: Option<Arc<Region>>,
}

#[napi]
impl NativeKernel {
    /// Initialises the region inside `memory` (at a page boundary) and launches the kernel.
    /// `doorbell` is called on the JS thread whenever the kernel publishes while JS waits.
    /// Under `process` isolation `memory` is `null`: take the region with `sharedMemory()`.
    #[napi(constructor, ts_args_type = "memory: Uint8Array | null, options: KernelOptions, doorbell: () => void")]
    pub fn new(memory: Option<Uint8Array>, options: KernelOptions, doorbell: Doorbell) -> Result<Self> {
        let layout = layout_of(&options)?;
        let host = match (options.isolation.as_deref(), options.host_command.as_deref()) {
            (None | Some("thread"), _) => None,
            (Some("process"), Some([program, args @ ..])) => {
                Some(HostCommand { program: program.into(), args: args.iter().map(Into::into).collect() })
            }
            (Some("process"), _) => return Err(invalid("isolation 'process' needs hostCommand: [program, ...args]")),
            (Some(other), _) => return Err(invalid(format!("isolation '{other}': expected 'thread' or 'process'"))),
        };
        let user = match (options.source.clone(), options.entry.clone(), options.schema_header.clone()) {
            (None, None, None) => None,
            (Some(source), Some(entry), Some(schema_header)) => Some(UserKernel { source, entry, schema_header, max_replies: options.max_replies.unwrap_or(0) }),
            _ => return Err(invalid("source, entry and schemaHeader: give all three (a user kernel) or none")),
        };
        let (region, offset) = match (&host, memory) {
            (None, Some(memory)) => sab::region_over(memory, layout)?,
            (None, None) => return Err(invalid("isolation 'thread' needs the memory of the region (a SharedArrayBuffer view)")),
            (Some(_), _) => (Region::alloc_shared(layout.input, layout.output).map_err(to_js)?, 0),
        };
        let notify = Box::new(move || {
            // NonBlocking into a queue of one: `QueueFull` means a ring is already pending,
            // and that pending call re-reads the rings when it runs, so nothing is missed.
            let _ = doorbell.call((), ThreadsafeFunctionCallMode::NonBlocking);
        });
        let shape = match (options.blocks, options.threads) {
            (None, None) => None,
            (blocks, threads) => Some(Shape { blocks: blocks.unwrap_or(1), threads: threads.unwrap_or(256) }),
        };
        let spec = LaunchSpec {
            backend: &options.backend,
            handler: &options.handler,
            transport: options.transport.as_deref().unwrap_or("auto"),
            shape,
            isolation: host.as_ref().map_or(Isolation::Thread, Isolation::Process),
            user: user.as_ref(),
            device: options.device.unwrap_or(0),
        };
        let shared = host.is_some().then(|| Arc::clone(&region));
        let (kernel, launched) = backend::launch(&spec, region, notify).map_err(to_js)?;
        Ok(Self { kernel: Some(kernel), region_offset: offset as u32, launched, shared })
    }

    /// Under `process` isolation: the region's shared memory as an ArrayBuffer (once; the
    /// buffer keeps the memory mapped until it is collected, even after `join`).
    #[napi]
    pub fn shared_memory<'env>(&mut self, env: &'env Env) -> Result<ArrayBuffer<'env>> {
        let region = self.shared.take().ok_or_else(|| invalid("sharedMemory(): no shared region (isolation 'thread', or already taken)"))?;
        let (ptr, len) = (region.base_ptr(), region.registered_len());
        // SAFETY: `ptr..ptr + len` is the region's mapping (whole pages, `registered_len` ≤ the
        // mapping); the finalizer owns an `Arc` of the region, so the mapping outlives the
        // buffer. JS and the kernel host only touch it through the protocol (I2/I3).
        #[allow(unsafe_code)]
        let buffer = unsafe { ArrayBuffer::from_external(env, ptr, len, region, |_, region| drop(region)) };
        buffer.map_err(|e| invalid(format!("cannot expose the shared region to JavaScript: {e}")))
    }

    /// Offset of the region (control block) from the start of the SharedArrayBuffer view.
    #[napi(getter)]
    pub fn region_offset(&self) -> u32 {
        self.region_offset
    }

    /// The backend that runs this kernel.
    #[napi(getter)]
    pub fn backend(&self) -> String {
        self.launched.backend.name.to_owned()
    }

    /// Why that backend was chosen (for cuda: the device, driver and NVRTC versions).
    #[napi(getter)]
    pub fn backend_reason(&self) -> String {
        self.launched.backend.reason.clone()
    }

    /// The transport (`shared-memory` on the cpu backend, else `mapped`, `dma`, `managed`).
    #[napi(getter)]
    pub fn transport(&self) -> String {
        self.launched.transport.to_owned()
    }

    /// Why that transport (what `auto` tried, what failed).
    #[napi(getter)]
    pub fn transport_reason(&self) -> String {
        self.launched.transport_reason.clone()
    }

    /// The kernel host's process id under `process` isolation, else null.
    #[napi(getter)]
    pub fn host_pid(&self) -> Option<u32> {
        self.kernel.as_ref().and_then(|k| k.host_pid())
    }

    /// Wakes the kernel after JS saw `kernel_sleeping == 1` (spec §8, D2).
    #[napi]
    pub fn wake(&self) {
        if let Some(k) = &self.kernel {
            k.wake();
        }
    }

    /// Stops the kernel (abandoning unless JS already wrote a terminate command) and waits for
    /// it. Idempotent. After this the shared memory is JavaScript's alone again.
    #[napi]
    pub fn join(&mut self) -> Result<()> {
        match self.kernel.take() {
            Some(mut k) => k.join().map_err(to_js),
            None => Ok(()),
        }
    }
}
