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

/// One stage's region as JS sees it.
struct Stage {
    region_offset: u32,
    launched: Launched,
    /// The region, when the addon allocated it (process isolation) and JS has yet to take it.
    shared: Option<Arc<Region>>,
}

/// A ring kernel (or a route of kernels, spec §14) running over SharedArrayBuffers.
#[napi]
pub struct NativeKernel {
    kernel: Option<Box<dyn Kernel>>,
    stages: Vec<Stage>,
}

fn host_of(options: &KernelOptions) -> Result<Option<HostCommand>> {
    match (options.isolation.as_deref(), options.host_command.as_deref()) {
        (None | Some("thread"), _) => Ok(None),
        (Some("process"), Some([program, args @ ..])) => {
            Ok(Some(HostCommand { program: program.into(), args: args.iter().map(Into::into).collect() }))
        }
        (Some("process"), _) => Err(invalid("isolation 'process' needs hostCommand: [program, ...args]")),
        (Some(other), _) => Err(invalid(format!("isolation '{other}': expected 'thread' or 'process'"))),
    }
}

fn user_of(options: &KernelOptions) -> Result<Option<UserKernel>> {
    match (options.source.clone(), options.entry.clone(), options.schema_header.clone()) {
        (None, None, None) => Ok(None),
        (Some(source), Some(entry), Some(schema_header)) => Ok(Some(UserKernel { source, entry, schema_header, max_replies: options.max_replies.unwrap_or(0) })),
        _ => Err(invalid("source, entry and schemaHeader: give all three (a user kernel) or none")),
    }
}

fn shape_of(options: &KernelOptions) -> Option<Shape> {
    match (options.blocks, options.threads) {
        (None, None) => None,
        (blocks, threads) => Some(Shape { blocks: blocks.unwrap_or(1), threads: threads.unwrap_or(256) }),
    }
}

/// The region of one stage: over the JS memory (thread isolation) or in shared memory the addon
/// allocates (process isolation).
fn region_of(options: &KernelOptions, host: Option<&HostCommand>, memory: Option<Uint8Array>) -> Result<(Arc<Region>, usize)> {
    let layout = layout_of(options)?;
    match (host, memory) {
        (None, Some(memory)) => sab::region_over(memory, layout),
        (None, None) => Err(invalid("isolation 'thread' needs the memory of the region (a SharedArrayBuffer view)")),
        (Some(_), _) => Ok((Region::alloc_shared(layout.input, layout.output).map_err(to_js)?, 0)),
    }
}

fn notify_of(doorbell: Doorbell) -> backend::Notify {
    Box::new(move || {
        // NonBlocking into a queue of one: `QueueFull` means a ring is already pending,
        // and that pending call re-reads the rings when it runs, so nothing is missed.
        let _ = doorbell.call((), ThreadsafeFunctionCallMode::NonBlocking);
    })
}

fn spec_of<'a>(options: &'a KernelOptions, host: Option<&'a HostCommand>, user: Option<&'a UserKernel>) -> LaunchSpec<'a> {
    LaunchSpec {
        backend: &options.backend,
        handler: &options.handler,
        transport: options.transport.as_deref().unwrap_or("auto"),
        shape: shape_of(options),
        isolation: host.map_or(Isolation::Thread, Isolation::Process),
        user,
        device: options.device.unwrap_or(0),
    }
}

#[napi]
impl NativeKernel {
    /// Initialises the region inside `memory` (at a page boundary) and launches the kernel.
    /// `doorbell` is called on the JS thread whenever the kernel publishes while JS waits.
    /// Under `process` isolation `memory` is `null`: take the region with `sharedMemory()`.
    #[napi(constructor, ts_args_type = "memory: Uint8Array | null, options: KernelOptions, doorbell: () => void")]
    pub fn new(memory: Option<Uint8Array>, options: KernelOptions, doorbell: Doorbell) -> Result<Self> {
        let host = host_of(&options)?;
        let user = user_of(&options)?;
        let (region, offset) = region_of(&options, host.as_ref(), memory)?;
        let spec = spec_of(&options, host.as_ref(), user.as_ref());
        let shared = host.is_some().then(|| Arc::clone(&region));
        let (kernel, launched) = backend::launch(&spec, region, notify_of(doorbell)).map_err(to_js)?;
        Ok(Self { kernel: Some(kernel), stages: vec![Stage { region_offset: offset as u32, launched, shared }] })
    }

    /// Launches a route (spec §14): stage *i* runs `options[i]` over `memories[i]` (null under
    /// `process` isolation, as for one kernel) and writes stage *i+1*'s input ring. JS sends to
    /// stage 0 and receives from the last stage.
    #[napi(factory, ts_args_type = "memories: Array<Uint8Array | null>, options: KernelOptions[], doorbell: () => void")]
    pub fn route(memories: Vec<Option<Uint8Array>>, options: Vec<KernelOptions>, doorbell: Doorbell) -> Result<Self> {
        if memories.len() != options.len() {
            return Err(invalid(format!("route: {} memories for {} stages", memories.len(), options.len())));
        }
        let hosts = options.iter().map(host_of).collect::<Result<Vec<_>>>()?;
        let users = options.iter().map(user_of).collect::<Result<Vec<_>>>()?;
        let mut regions = Vec::with_capacity(options.len());
        let mut offsets = Vec::with_capacity(options.len());
        for ((o, host), memory) in options.iter().zip(&hosts).zip(memories) {
            let (region, offset) = region_of(o, host.as_ref(), memory)?;
            regions.push(region);
            offsets.push(offset);
        }
        let specs: Vec<_> = options.iter().zip(&hosts).zip(&users).map(|((o, h), u)| spec_of(o, h.as_ref(), u.as_ref())).collect();
        let shared: Vec<_> = regions.iter().zip(&hosts).map(|(r, h)| h.is_some().then(|| Arc::clone(r))).collect();
        let (kernel, launched) = backend::launch_route(&specs, regions, notify_of(doorbell)).map_err(to_js)?;
        let stages = launched
            .into_iter()
            .zip(offsets)
            .zip(shared)
            .map(|((launched, offset), shared)| Stage { region_offset: offset as u32, launched, shared })
            .collect();
        Ok(Self { kernel: Some(kernel), stages })
    }

    fn stage(&self, index: u32) -> Result<&Stage> {
        self.stages.get(index as usize).ok_or_else(|| invalid(format!("stage {index}: this kernel has {} stage(s)", self.stages.len())))
    }

    /// Under `process` isolation: stage `index`'s region (default 0) as an ArrayBuffer (once;
    /// the buffer keeps the memory mapped until it is collected, even after `join`).
    #[napi]
    pub fn shared_memory<'env>(&mut self, env: &'env Env, index: Option<u32>) -> Result<ArrayBuffer<'env>> {
        let index = index.unwrap_or(0);
        self.stage(index)?;
        let region = self.stages[index as usize]
            .shared
            .take()
            .ok_or_else(|| invalid("sharedMemory(): no shared region (isolation 'thread', or already taken)"))?;
        let (ptr, len) = (region.base_ptr(), region.registered_len());
        // SAFETY: `ptr..ptr + len` is the region's mapping (whole pages, `registered_len` ≤ the
        // mapping); the finalizer owns an `Arc` of the region, so the mapping outlives the
        // buffer. JS and the kernel host only touch it through the protocol (I2/I3).
        #[allow(unsafe_code)]
        let buffer = unsafe { ArrayBuffer::from_external(env, ptr, len, region, |_, region| drop(region)) };
        buffer.map_err(|e| invalid(format!("cannot expose the shared region to JavaScript: {e}")))
    }

    /// How many kernels run (1, or a route's stages).
    #[napi(getter)]
    pub fn stage_count(&self) -> u32 {
        self.stages.len() as u32
    }

    /// Offset of stage `index`'s region (control block) from the start of its memory.
    #[napi]
    pub fn stage_region_offset(&self, index: u32) -> Result<u32> {
        Ok(self.stage(index)?.region_offset)
    }

    /// Stage `index`'s transport and why it was chosen.
    #[napi]
    pub fn stage_transport(&self, index: u32) -> Result<Vec<String>> {
        let l = &self.stage(index)?.launched;
        Ok(vec![l.transport.to_owned(), l.transport_reason.clone()])
    }

    /// Offset of the region (control block) from the start of the SharedArrayBuffer view.
    #[napi(getter)]
    pub fn region_offset(&self) -> u32 {
        self.stages[0].region_offset
    }

    /// The backend that runs this kernel.
    #[napi(getter)]
    pub fn backend(&self) -> String {
        self.stages[0].launched.backend.name.to_owned()
    }

    /// Why that backend was chosen (for cuda: the device, driver and NVRTC versions).
    #[napi(getter)]
    pub fn backend_reason(&self) -> String {
        self.stages[0].launched.backend.reason.clone()
    }

    /// The transport (`shared-memory` on the cpu backend, else `mapped`, `dma`, `managed`).
    #[napi(getter)]
    pub fn transport(&self) -> String {
        self.stages[0].launched.transport.to_owned()
    }

    /// Why that transport (what `auto` tried, what failed).
    #[napi(getter)]
    pub fn transport_reason(&self) -> String {
        self.stages[0].launched.transport_reason.clone()
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
