//! `NativeKernel`: one launched ring kernel over a JS-owned SharedArrayBuffer. JavaScript does
//! the host steps itself (ts/ring.ts); this class only launches, wakes and joins the kernel.
// `deny`, not `forbid`: the #[napi] expansion allows unsafe for its own glue.
#![deny(unsafe_code)]

use napi::bindgen_prelude::Uint8Array;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use napi_derive::napi;
use ringbridge_core::backend::cuda::Shape;
use ringbridge_core::backend::{self, Kernel, LaunchSpec, Launched};
use ringbridge_core::protocol::{RegionLayout, RingConfig};

use crate::error::{to_js, Result};
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
}

#[napi]
impl NativeKernel {
    /// Initialises the region inside `memory` (at a page boundary) and launches the kernel.
    /// `doorbell` is called on the JS thread whenever the kernel publishes while JS waits.
    #[napi(constructor, ts_args_type = "memory: Uint8Array, options: KernelOptions, doorbell: () => void")]
    pub fn new(memory: Uint8Array, options: KernelOptions, doorbell: Doorbell) -> Result<Self> {
        let layout = layout_of(&options)?;
        let (region, offset) = sab::region_over(memory, layout)?;
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
        };
        let (kernel, launched) = backend::launch(&spec, region, notify).map_err(to_js)?;
        Ok(Self { kernel: Some(kernel), region_offset: offset as u32, launched })
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
