//! Where a region's bytes live and how the kernel reaches them.
//!
//! A [`Region`] is one block holding a control block and both slot arrays (spec §3). On the CPU
//! backend it is host memory (owned, or borrowed from a JavaScript `SharedArrayBuffer`) that the
//! kernel thread reads directly — the same arrangement as the `mapped` GPU transport. The `dma`
//! and `managed` transports of the CUDA backend add their own modules beside this one.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::NonNull;
use std::sync::Arc;

#[cfg(target_os = "linux")]
use crate::isolate::shm::SharedMemory;
use crate::protocol::{
    align_up, offsets, ControlBlock, KernelState, RegionLayout, RingConfig, MAGIC, REGION_ALIGN, TERMINATE_NONE, VERSION,
};
use crate::ring::{ContiguousRingMemory, RingMemory};
use crate::sync::{AtomicU64, Ordering};
use crate::Error;

pub mod bridge;
pub mod dma;
pub mod hybrid;
pub mod managed;
pub mod mapped;

/// What a GPU transport adds to a region: where the kernel finds the control block and, for
/// `dma` and `managed`, the bridge step that moves frames between the host rings and the
/// kernel's memory.
pub trait Link: Send {
    /// `mapped`, `dma` or `managed`.
    fn name(&self) -> &'static str;
    /// The control block's address as the kernel sees it (the kernel's one parameter).
    fn kernel_cb(&self) -> u64;
    /// One bridge step: copy newly published input frames to the kernel and newly published
    /// replies back, publishing each side's index after its data. Returns whether anything
    /// moved. Called from the kernel's service thread only (or, once it has stopped, by the
    /// thread joining the kernel), with the link's CUDA context bound to the calling thread.
    ///
    /// # Errors
    /// A failed copy ([`Error::Cuda`]).
    fn pump(&mut self, region: &Region) -> Result<bool, Error>;
    /// Waits until the copies and index writes earlier pumps enqueued have landed (a bridge
    /// that publishes in stream order returns from `pump` before they do). Same calling
    /// contract as `pump`.
    ///
    /// # Errors
    /// A failed wait ([`Error::Cuda`]).
    fn settle(&mut self) -> Result<(), Error> {
        Ok(())
    }
}

/// A run of consecutive slots of a ring: `count` slots from slot `first`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotRun {
    /// The first slot (`position & mask`).
    pub first: usize,
    /// How many slots.
    pub count: usize,
}

/// The slots of positions `[from, to)` of a ring of `capacity`: one run, or two when the range
/// wraps.
pub fn slot_runs(from: u64, to: u64, capacity: u32) -> impl Iterator<Item = SlotRun> {
    let cap = capacity as u64;
    let n = to.wrapping_sub(from).min(cap);
    let first = (from % cap) as usize;
    let head = (n as usize).min(capacity as usize - first);
    let tail = n as usize - head;
    [SlotRun { first, count: head }, SlotRun { first: 0, count: tail }].into_iter().filter(|run| run.count > 0)
}

/// Checks that a region's memory covers the whole pages a GPU transport registers.
///
/// # Errors
/// [`Error::Protocol`] naming both sizes.
pub fn check_registrable(region: &Region) -> Result<(), Error> {
    if region.base_ptr() as usize % REGION_PAGE != 0 || region.capacity_bytes() < region.registered_len() {
        return Err(Error::Protocol(format!(
            "a GPU transport needs the region page-aligned with {} bytes of whole pages; it has {} bytes at {:p}",
            region.registered_len(),
            region.capacity_bytes(),
            region.base_ptr()
        )));
    }
    Ok(())
}

/// Page granularity of GPU host registration: a region that may be registered starts on a page
/// and is registered in whole pages (`registered_len`).
pub const REGION_PAGE: usize = 4096;

enum Owner {
    /// Allocated by [`Region::alloc`] with this layout.
    Heap(Layout),
    /// Borrowed; the box keeps the memory alive until the region drops.
    External(#[allow(dead_code)] Box<dyn Send + Sync>),
    /// A memfd mapping another process (the kernel host) maps too.
    #[cfg(target_os = "linux")]
    Shared(SharedMemory),
}

/// One control block plus its input and output slot arrays, in one block of memory.
pub struct Region {
    base: NonNull<u8>,
    len: usize,
    layout: RegionLayout,
    owner: Owner,
}

/// Where the kernel finds its slots and tails (the setup line's addresses, kernel's view).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelView {
    /// `input_buffer`.
    pub input_buffer: u64,
    /// `output_buffer`.
    pub output_buffer: u64,
    /// `input_tail_addr`.
    pub input_tail_addr: u64,
    /// `output_tail_addr`.
    pub output_tail_addr: u64,
    /// `output_head_addr` (v3): where the kernel reads its output ring's head.
    pub output_head_addr: u64,
}

impl KernelView {
    /// The view of a kernel that reaches the region itself at `base` (cpu, mapped).
    pub fn direct(base: u64, layout: &RegionLayout) -> Self {
        Self {
            input_buffer: base + layout.input_offset as u64,
            output_buffer: base + layout.output_offset as u64,
            input_tail_addr: base + offsets::INPUT_TAIL as u64,
            output_tail_addr: base + offsets::OUTPUT_TAIL as u64,
            output_head_addr: base + offsets::OUTPUT_HEAD as u64,
        }
    }
}

// SAFETY: the region is plain memory; every concurrently mutated byte is either an atomic of the
// control block or a slot whose ownership the ring protocol (I2, I3) hands between threads.
unsafe impl Send for Region {}
// SAFETY: as above; shared references only reach memory through atomics or owned slots.
unsafe impl Sync for Region {}

impl Region {
    /// Allocates a zeroed, 128-byte-aligned region in host memory and initialises its control block.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] if either ring's shape breaks the spec's limits;
    /// [`Error::ResourceExhausted`] when the memory cannot be allocated.
    pub fn alloc(input: RingConfig, output: RingConfig) -> Result<Arc<Self>, Error> {
        let layout = RegionLayout::new(input, output)?;
        // Whole pages: a GPU transport registers the region, and registration pins whole pages,
        // which must not be shared with another allocation.
        let mem = Layout::from_size_align(align_up(layout.total_bytes, REGION_PAGE), REGION_PAGE)
            .map_err(|e| Error::ResourceExhausted { what: format!("a region of {} bytes", layout.total_bytes), reason: e.to_string() })?;
        // SAFETY: `mem` has a non-zero size (a control block at least).
        let raw = unsafe { alloc_zeroed(mem) };
        let base = NonNull::new(raw).ok_or_else(|| Error::ResourceExhausted {
            what: format!("a region of {} bytes", mem.size()),
            reason: "out of memory".into(),
        })?;
        let region = Self { base, len: mem.size(), layout, owner: Owner::Heap(mem) };
        region.init_control();
        Ok(Arc::new(region))
    }

    /// Wraps memory owned by someone else (a `SharedArrayBuffer`, pinned host memory) and
    /// initialises its control block.
    ///
    /// # Errors
    /// [`Error::Protocol`] if `ptr` is not 128-byte aligned or `len` is too small for `layout`.
    ///
    /// # Safety
    /// `ptr..ptr+len` must stay valid for reads and writes until `keep_alive` drops, and while the
    /// region lives nothing may write it except through the protocol (atomics of the control
    /// block, slots owned under I2/I3).
    pub unsafe fn from_external(
        ptr: *mut u8,
        len: usize,
        layout: RegionLayout,
        keep_alive: Box<dyn Send + Sync>,
    ) -> Result<Arc<Self>, Error> {
        if ptr as usize % REGION_ALIGN != 0 {
            return Err(Error::Protocol(format!("region base {ptr:p} is not {REGION_ALIGN}-byte aligned")));
        }
        if len < layout.total_bytes {
            return Err(Error::Protocol(format!("region of {len} bytes is smaller than the {} bytes its rings need", layout.total_bytes)));
        }
        let base = NonNull::new(ptr).ok_or_else(|| Error::Protocol("region base is null".into()))?;
        let region = Self { base, len, layout, owner: Owner::External(keep_alive) };
        region.init_control();
        Ok(Arc::new(region))
    }

    /// Allocates a region in memory another process can map ([`SharedMemory`]), for a kernel
    /// run by a kernel host process (`crate::isolate`), and initialises its control block.
    ///
    /// # Errors
    /// Invalid ring shapes; [`Error::ResourceExhausted`] / [`Error::Os`] when the memory
    /// cannot be created ([`SharedMemory::create`]).
    #[cfg(target_os = "linux")]
    pub fn alloc_shared(input: RingConfig, output: RingConfig) -> Result<Arc<Self>, Error> {
        let layout = RegionLayout::new(input, output)?;
        let shm = SharedMemory::create(align_up(layout.total_bytes, REGION_PAGE))?;
        let region = Self { base: NonNull::new(shm.as_ptr()).expect("mapped"), len: shm.len(), layout, owner: Owner::Shared(shm) };
        region.init_control();
        Ok(Arc::new(region))
    }

    /// The kernel host's side of [`Region::alloc_shared`]: the region the parent initialised,
    /// taken as it is (nothing is reset: the parent may already be staging messages). The ring
    /// shapes are read from the setup line and checked like any region's.
    ///
    /// # Errors
    /// [`Error::Protocol`] for a wrong magic or version, or memory smaller than the layout.
    #[cfg(target_os = "linux")]
    pub fn attach_shared(shm: SharedMemory) -> Result<Arc<Self>, Error> {
        if shm.len() < crate::protocol::CONTROL_BLOCK_BYTES {
            return Err(Error::Protocol(format!("shared region of {} bytes holds no control block", shm.len())));
        }
        // SAFETY: page-aligned, at least a control block long (checked), all fields atomics.
        let cb = unsafe { &*(shm.as_ptr() as *const ControlBlock) };
        let r = Ordering::Acquire;
        let (magic, version) = (cb.magic.load(r), cb.version.load(r));
        if magic != MAGIC || version != VERSION {
            return Err(Error::Protocol(format!(
                "shared region has magic {magic:#x} version {version}; expected {MAGIC:#x} version {VERSION}"
            )));
        }
        let layout = RegionLayout::new(
            RingConfig { capacity: cb.input_capacity.load(r), slot_size: cb.input_slot_size.load(r) },
            RingConfig { capacity: cb.output_capacity.load(r), slot_size: cb.output_slot_size.load(r) },
        )?;
        if shm.len() < layout.total_bytes {
            return Err(Error::Protocol(format!(
                "shared region of {} bytes is smaller than the {} bytes its rings need",
                shm.len(),
                layout.total_bytes
            )));
        }
        let region = Self { base: NonNull::new(shm.as_ptr()).expect("mapped"), len: shm.len(), layout, owner: Owner::Shared(shm) };
        // The parent's addresses mean nothing here: point the kernel at this mapping (a GPU
        // transport moves the view again before launch, I5).
        region.set_kernel_view(KernelView::direct(region.base.as_ptr() as u64, &region.layout));
        Ok(Arc::new(region))
    }

    /// The shared memory behind a region from [`Region::alloc_shared`] / [`Region::attach_shared`].
    #[cfg(target_os = "linux")]
    pub fn shared_memory(&self) -> Option<&SharedMemory> {
        match &self.owner {
            Owner::Shared(shm) => Some(shm),
            _ => None,
        }
    }

    /// The layout this region was built with.
    pub fn layout(&self) -> &RegionLayout {
        &self.layout
    }

    /// Base address (what a mapped kernel adds offsets to).
    pub fn base_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// Bytes a GPU transport registers: the layout rounded up to whole pages. Every region
    /// handed to a GPU backend owns these bytes (checked at construction of SAB regions).
    pub fn registered_len(&self) -> usize {
        align_up(self.layout.total_bytes, REGION_PAGE)
    }

    /// Bytes the memory behind the region really has from its base.
    pub fn capacity_bytes(&self) -> usize {
        self.len
    }

    /// Points the kernel at where it finds slots and tails (spec §3, setup line). Only before
    /// launch (I5): a transport moves what the kernel sees, e.g. dma's device slots.
    pub fn set_kernel_view(&self, view: KernelView) {
        let cb = self.control();
        let r = Ordering::Relaxed;
        cb.input_buffer.store(view.input_buffer, r);
        cb.output_buffer.store(view.output_buffer, r);
        cb.input_tail_addr.store(view.input_tail_addr, r);
        cb.output_tail_addr.store(view.output_tail_addr, r);
        cb.output_head_addr.store(view.output_head_addr, r);
        // No direct path unless the transport adds one (hybrid, after this); fences.
        self.set_direct_view(hybrid::DirectView::NONE);
    }

    /// Adds `hybrid`'s direct path to the kernel's view (spec §11.2). Only before launch (I5),
    /// after [`Region::set_kernel_view`].
    pub fn set_direct_view(&self, view: hybrid::DirectView) {
        let cb = self.control();
        let r = Ordering::Relaxed;
        cb.direct_max.store(view.direct_max, r);
        cb.host_input_buffer.store(view.host_input_buffer, r);
        cb.host_output_buffer.store(view.host_output_buffer, r);
        cb.direct_upto_addr.store(view.direct_upto_addr, r);
        crate::sync::fence(Ordering::SeqCst);
    }

    /// Points the kernel's output at a route's next stage (spec §14): its input slots, tail and
    /// head. Only before launch (I5), after the transport set its view.
    pub fn set_output_view(&self, feed: crate::backend::route::FeedView) {
        let cb = self.control();
        let r = Ordering::Relaxed;
        cb.output_buffer.store(feed.slots, r);
        cb.output_tail_addr.store(feed.tail_addr, r);
        cb.output_head_addr.store(feed.head_addr, r);
        // A hybrid stage's replies go to the next stage, never to the host's slots (§11.2).
        cb.host_output_buffer.store(0, r);
        crate::sync::fence(Ordering::SeqCst);
    }

    /// Byte range `[offset, offset + len)` of the region, for bridges that copy slots.
    ///
    /// # Panics
    /// If the range leaves the layout.
    pub fn bytes_ptr(&self, offset: usize, len: usize) -> *mut u8 {
        assert!(offset + len <= self.layout.total_bytes, "range {offset}+{len} leaves the region");
        self.base.as_ptr().wrapping_add(offset)
    }

    /// The control block at the region's start.
    pub fn control(&self) -> &ControlBlock {
        // SAFETY: the base is 128-aligned and at least CONTROL_BLOCK_BYTES long (checked at
        // construction); every field is an atomic, so shared access alongside other writers
        // (kernel thread, JavaScript) is sound.
        unsafe { &*(self.base.as_ptr() as *const ControlBlock) }
    }

    /// The input ring's memory.
    pub fn input(self: &Arc<Self>) -> RegionRing {
        RegionRing { region: Arc::clone(self), which: Which::Input }
    }

    /// The output ring's memory.
    pub fn output(self: &Arc<Self>) -> RegionRing {
        RegionRing { region: Arc::clone(self), which: Which::Output }
    }

    /// Writes the setup line and zeroes commands, status and indices (spec §9, "Init").
    fn init_control(&self) {
        let cb = self.control();
        let l = &self.layout;
        let r = Ordering::Relaxed;
        cb.magic.store(MAGIC, r);
        cb.version.store(VERSION, r);
        cb.input_capacity.store(l.input.capacity, r);
        cb.input_slot_size.store(l.input.slot_size, r);
        cb.output_capacity.store(l.output.capacity, r);
        cb.output_slot_size.store(l.output.slot_size, r);
        cb.user_arg.store(0, r);
        cb.handler_id.store(0, r);
        let view = KernelView::direct(self.base.as_ptr() as u64, l);
        cb.input_buffer.store(view.input_buffer, r);
        cb.output_buffer.store(view.output_buffer, r);
        cb.input_tail_addr.store(view.input_tail_addr, r);
        cb.output_tail_addr.store(view.output_tail_addr, r);
        cb.output_head_addr.store(view.output_head_addr, r);
        cb.input_producer.store(crate::protocol::PRODUCER_HOST, r);
        cb.active.store(1, r);
        cb.terminate.store(TERMINATE_NONE, r);
        cb.host_waiting.store(0, r);
        cb.state.store(KernelState::Launching as u32, r);
        cb.error_code.store(0, r);
        cb.error_count.store(0, r);
        cb.kernel_sleeping.store(0, r);
        cb.messages_processed.store(0, r);
        cb.last_activity.store(0, r);
        for index in [&cb.input_head, &cb.input_tail, &cb.output_head, &cb.output_tail] {
            index.value.store(0, r);
        }
        // ORDERING: (L1) the kernel starts after this store (thread spawn / kernel launch is a
        // happens-before edge); the fence also orders it for JavaScript views created later.
        crate::sync::fence(Ordering::SeqCst);
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if let Owner::Heap(mem) = self.owner {
            // SAFETY: allocated in `alloc` with exactly this layout; no ring end outlives the
            // region because each holds an `Arc` to it.
            unsafe { dealloc(self.base.as_ptr(), mem) };
        }
    }
}

#[derive(Clone, Copy)]
enum Which {
    Input,
    Output,
}

/// One ring of a [`Region`], as [`RingMemory`] for a [`crate::ring::Producer`] or
/// [`crate::ring::Consumer`]. Holds the region alive.
#[derive(Clone)]
pub struct RegionRing {
    region: Arc<Region>,
    which: Which,
}

impl RegionRing {
    fn config(&self) -> RingConfig {
        match self.which {
            Which::Input => self.region.layout.input,
            Which::Output => self.region.layout.output,
        }
    }

    fn slot_ptr(&self, slot: usize) -> *mut u8 {
        let l = &self.region.layout;
        let offset = match self.which {
            Which::Input => l.input_offset,
            Which::Output => l.output_offset,
        };
        debug_assert!(slot < self.config().capacity as usize);
        self.region.base.as_ptr().wrapping_add(offset + slot * self.config().slot_size as usize)
    }
}

// SAFETY: head/tail are fixed fields of the region's control block; slots are the disjoint
// `slot_size` chunks of the slot array the layout placed inside the region's bytes.
unsafe impl RingMemory for RegionRing {
    fn head(&self) -> &AtomicU64 {
        let cb = self.region.control();
        match self.which {
            Which::Input => &cb.input_head.value,
            Which::Output => &cb.output_head.value,
        }
    }

    fn tail(&self) -> &AtomicU64 {
        let cb = self.region.control();
        match self.which {
            Which::Input => &cb.input_tail.value,
            Which::Output => &cb.output_tail.value,
        }
    }

    fn capacity(&self) -> u32 {
        self.config().capacity
    }

    fn slot_size(&self) -> usize {
        self.config().slot_size as usize
    }

    unsafe fn with_slot_mut<R>(&self, slot: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        // SAFETY: the slot lies inside the region (layout) and the caller owns it (I2), so no
        // other reference to these bytes exists while `f` runs.
        let bytes = unsafe { std::slice::from_raw_parts_mut(self.slot_ptr(slot), self.slot_size()) };
        f(bytes)
    }

    unsafe fn with_slot<R>(&self, slot: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        // SAFETY: the slot lies inside the region and the caller owns it for reading (I3): the
        // producer does not write it until the consumer releases it.
        let bytes = unsafe { std::slice::from_raw_parts(self.slot_ptr(slot), self.slot_size()) };
        f(bytes)
    }
}

// SAFETY: the slot array is `capacity * slot_size` bytes inside the region from slot 0 on
// (the layout), the same bytes `with_slot_mut`/`with_slot` hand out.
unsafe impl ContiguousRingMemory for RegionRing {
    fn slots_base(&self) -> *mut u8 {
        self.slot_ptr(0)
    }
}
