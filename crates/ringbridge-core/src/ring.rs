//! Single-producer / single-consumer ends of one ring (spec §5), in rtrb's shape.
//!
//! A [`Producer`] owns the ring's `tail`, a [`Consumer`] its `head`. Each keeps a *cached* copy of
//! the other side's index and re-reads it only when the ring looks full (producer) or empty
//! (consumer): the common case touches no line the other side writes. Writes are staged locally
//! and made visible by one `publish`/`release` per batch.
//!
//! The memory under a ring is abstract ([`RingMemory`]) so the same code runs over a region in
//! host memory, a JavaScript `SharedArrayBuffer`, pinned memory the GPU maps, or loom's checked
//! cells in `tests/loom.rs`.

use crate::protocol::{free, occupied, slot_of, FrameHeader, FRAME_HEADER_BYTES};
use crate::sync::{AtomicU64, Ordering};

/// The memory of one ring: its two indices and its slot array.
///
/// # Safety
/// Implementors guarantee that `head` and `tail` return the same two atomics for the lifetime of
/// the value, that every slot `0..capacity` is `slot_size` bytes valid for reads and writes, and
/// that slots do not overlap each other or the indices.
pub unsafe trait RingMemory {
    /// The consumer's index.
    fn head(&self) -> &AtomicU64;
    /// The producer's index.
    fn tail(&self) -> &AtomicU64;
    /// Slots in the ring (a power of two).
    fn capacity(&self) -> u32;
    /// Bytes per slot, frame header included.
    fn slot_size(&self) -> usize;
    /// Runs `f` on slot `slot` for writing.
    ///
    /// # Safety
    /// The caller owns the slot under (I2): it is the producer and the slot lies in
    /// `[tail, head + capacity)`, so no consumer reads it concurrently.
    unsafe fn with_slot_mut<R>(&self, slot: usize, f: impl FnOnce(&mut [u8]) -> R) -> R;
    /// Runs `f` on slot `slot` for reading.
    ///
    /// # Safety
    /// The caller owns the slot under (I3): it is the consumer and the slot lies in `[head, tail)`
    /// with `tail` loaded by an acquire that pairs with the producer's release.
    unsafe fn with_slot<R>(&self, slot: usize, f: impl FnOnce(&[u8]) -> R) -> R;
}

/// Ring memory whose slots are one array: slot `i` starts `i * slot_size` bytes after slot 0.
/// Chunks ([`WriteChunk::as_mut_slices`], [`ReadChunk::as_slices`]) hand out slices of it.
///
/// # Safety
/// Implementors guarantee that [`slots_base`](ContiguousRingMemory::slots_base) points to
/// `capacity * slot_size` bytes holding exactly the slots [`RingMemory::with_slot_mut`] and
/// [`RingMemory::with_slot`] pass, valid for the lifetime of the value.
pub unsafe trait ContiguousRingMemory: RingMemory {
    /// The first byte of slot 0.
    fn slots_base(&self) -> *mut u8;
}

/// Why a frame could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushError {
    /// No free slot, even after re-reading `head`.
    Full,
    /// The payload exceeds the slot's payload capacity.
    TooLarge {
        /// Payload bytes offered.
        length: usize,
        /// Largest payload a slot holds.
        max: usize,
    },
}

/// Why a frame could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PopError {
    /// No published frame, even after re-reading `tail`.
    Empty,
    /// The frame's `length` exceeds its slot (the frame was consumed and skipped).
    BadFrame {
        /// The header found (its `length` is the bad one; its ids may be garbage too).
        header: FrameHeader,
        /// Largest payload a slot holds.
        max: usize,
    },
}

/// The writing end of a ring: owns `tail`.
pub struct Producer<M: RingMemory> {
    memory: M,
    /// Next position to write, staged frames included.
    next: u64,
    /// Last value stored to `tail`.
    published: u64,
    /// Possibly stale copy of `head`; `head` only grows, so a stale copy under-counts free
    /// slots and is always safe to act on.
    cached_head: u64,
}

impl<M: RingMemory> Producer<M> {
    /// Takes the producer role of `memory`, resuming from its current indices.
    pub fn new(memory: M) -> Self {
        // Relaxed: we are the only writer of tail (I1).
        let tail = memory.tail().load(Ordering::Relaxed);
        // ORDERING: (P2) acquire pairs with the consumer's release of head (C4).
        let cached_head = memory.head().load(Ordering::Acquire);
        Self { memory, next: tail, published: tail, cached_head }
    }

    /// The ring's memory.
    pub fn memory(&self) -> &M {
        &self.memory
    }

    /// Largest payload one frame may carry.
    pub fn max_payload(&self) -> usize {
        self.memory.slot_size() - FRAME_HEADER_BYTES
    }

    /// Free slots, re-reading `head` only when the cached copy shows fewer than `wanted`.
    pub fn free_slots(&mut self, wanted: u64) -> u64 {
        let cap = self.memory.capacity();
        let mut n = free(self.cached_head, self.next, cap);
        if n < wanted {
            // ORDERING: (P2) acquire pairs with the consumer's release of head (C4): its reads
            // of the slots we are about to reuse happened before.
            self.cached_head = self.memory.head().load(Ordering::Acquire);
            n = free(self.cached_head, self.next, cap);
        }
        n
    }

    /// Stages one frame whose payload `fill` writes in place; not visible until [`publish`].
    ///
    /// `fill` gets the slot's payload area (`max_payload` bytes) and returns the header to
    /// write (its `length` must not exceed the area), or `None` to stage nothing.
    /// Returns whether a frame was staged.
    ///
    /// # Errors
    /// [`PushError::Full`] if no slot is free; [`PushError::TooLarge`] if the returned header's
    /// length exceeds the payload area (nothing is staged).
    ///
    /// [`publish`]: Producer::publish
    pub fn stage_with(&mut self, fill: impl FnOnce(&mut [u8]) -> Option<FrameHeader>) -> Result<bool, PushError> {
        if self.free_slots(1) == 0 {
            return Err(PushError::Full);
        }
        let max = self.max_payload();
        let slot = slot_of(self.next, self.memory.capacity());
        // SAFETY: (I2) free_slots(1) > 0 means slot `next` lies in [tail, head + capacity): the
        // consumer has released it and will not read it until we publish past it.
        let result = unsafe {
            self.memory.with_slot_mut(slot, |bytes| {
                let (header_bytes, payload) = bytes.split_at_mut(FRAME_HEADER_BYTES);
                let Some(header) = fill(payload) else { return Ok(false) };
                if header.length as usize > max {
                    return Err(PushError::TooLarge { length: header.length as usize, max });
                }
                header.write_to(header_bytes);
                Ok(true)
            })
        };
        if result == Ok(true) {
            // Positions wrap mod 2^64 (spec §7), in debug builds too: a peer's corrupt index
            // must not panic this end.
            self.next = self.next.wrapping_add(1);
        }
        result
    }

    /// Stages one frame copying `payload`; not visible until [`publish`](Producer::publish).
    ///
    /// # Errors
    /// As [`stage_with`](Producer::stage_with); the size is checked before any byte is written.
    pub fn stage(&mut self, mut header: FrameHeader, payload: &[u8]) -> Result<(), PushError> {
        let max = self.max_payload();
        if payload.len() > max {
            return Err(PushError::TooLarge { length: payload.len(), max });
        }
        header.length = payload.len() as u32;
        self.stage_with(|area| {
            area[..payload.len()].copy_from_slice(payload);
            Some(header)
        })
        .map(drop)
    }

    /// Frames staged but not yet published.
    pub fn staged(&self) -> u64 {
        self.next.wrapping_sub(self.published)
    }

    /// Makes every staged frame visible to the consumer with one store of `tail`.
    pub fn publish(&mut self) {
        if self.next != self.published {
            // ORDERING: (P4) release: the slot writes above happen before a consumer's acquire
            // load of tail (C2) that observes this value.
            self.memory.tail().store(self.next, Ordering::Release);
            self.published = self.next;
        }
    }

    /// W1–W2 (spec §5.3): reserves up to `wanted` free slots, from the first position not yet
    /// staged, for the caller to fill in place. The reservation changes nothing shared: dropped
    /// without [`WriteChunk::commit`], it sends nothing. `len()` may be 0 (the ring is full).
    pub fn write_chunk(&mut self, wanted: u64) -> WriteChunk<'_, M> {
        let len = self.free_slots(wanted).min(wanted);
        WriteChunk { producer: self, len }
    }

    /// Stages and publishes one frame.
    ///
    /// # Errors
    /// As [`stage`](Producer::stage).
    pub fn push(&mut self, header: FrameHeader, payload: &[u8]) -> Result<(), PushError> {
        self.stage(header, payload)?;
        self.publish();
        Ok(())
    }
}

/// The reading end of a ring: owns `head`.
pub struct Consumer<M: RingMemory> {
    memory: M,
    /// Next position to read, consumed-but-unreleased frames included.
    next: u64,
    /// Last value stored to `head`.
    released: u64,
    /// Possibly stale copy of `tail`; `tail` only grows, so a stale copy under-counts frames.
    cached_tail: u64,
}

impl<M: RingMemory> Consumer<M> {
    /// Takes the consumer role of `memory`, resuming from its current indices.
    pub fn new(memory: M) -> Self {
        // Relaxed: we are the only writer of head (I1).
        let head = memory.head().load(Ordering::Relaxed);
        // ORDERING: (C2) acquire pairs with the producer's release of tail (P4).
        let cached_tail = memory.tail().load(Ordering::Acquire);
        Self { memory, next: head, released: head, cached_tail }
    }

    /// The ring's memory.
    pub fn memory(&self) -> &M {
        &self.memory
    }

    /// Published frames not yet consumed, re-reading `tail` only when the cache shows fewer
    /// than `wanted`.
    pub fn available(&mut self, wanted: u64) -> u64 {
        let mut n = occupied(self.next, self.cached_tail);
        if n < wanted {
            // ORDERING: (C2) acquire pairs with the producer's release of tail (P4): the slot
            // contents it published are visible to the reads that follow.
            self.cached_tail = self.memory.tail().load(Ordering::Acquire);
            n = occupied(self.next, self.cached_tail);
        }
        n
    }

    /// Consumes the next frame, passing its header and payload to `read`; the slot stays owned
    /// by this consumer until [`release`](Consumer::release).
    ///
    /// # Errors
    /// [`PopError::Empty`] if no frame is published; [`PopError::BadFrame`] if its length field
    /// overruns the slot (the frame is consumed and skipped so the ring keeps moving).
    pub fn pop_with<R>(&mut self, read: impl FnOnce(FrameHeader, &[u8]) -> R) -> Result<R, PopError> {
        if self.available(1) == 0 {
            return Err(PopError::Empty);
        }
        let max = self.memory.slot_size() - FRAME_HEADER_BYTES;
        let slot = slot_of(self.next, self.memory.capacity());
        // SAFETY: (I3) available(1) > 0 means slot `next` lies in [head, tail) with tail loaded
        // by an acquire that pairs with the producer's release: its bytes are complete and the
        // producer will not touch them until we release past them.
        let result = unsafe {
            self.memory.with_slot(slot, |bytes| {
                let header = FrameHeader::read_from(bytes);
                if header.length as usize > max {
                    return Err(PopError::BadFrame { header, max });
                }
                let payload = &bytes[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + header.length as usize];
                Ok(read(header, payload))
            })
        };
        // Wrapping, as in `Producer::stage_with` (spec §7).
        self.next = self.next.wrapping_add(1);
        result
    }

    /// R1–R2 (spec §5.3): up to `wanted` published frames from the first one not yet consumed,
    /// read in place; they stay owned by this consumer (I3) until [`ReadChunk::release`].
    /// `len()` may be 0 (the ring is empty).
    pub fn read_chunk(&mut self, wanted: u64) -> ReadChunk<'_, M> {
        let len = self.available(wanted).min(wanted);
        ReadChunk { consumer: self, len }
    }

    /// Frames consumed but not yet released.
    pub fn unreleased(&self) -> u64 {
        self.next.wrapping_sub(self.released)
    }

    /// Hands every consumed slot back to the producer with one store of `head`.
    pub fn release(&mut self) {
        if self.next != self.released {
            // ORDERING: (C4) release: our reads of the slots happen before the producer's
            // acquire load of head (P2) that lets it overwrite them.
            self.memory.head().store(self.next, Ordering::Release);
            self.released = self.next;
        }
    }
}

/// Slots `[next, next + len)` of a ring as at most two runs of the slot array: the run up to
/// the array's end and the wrapped rest. Returns (first slot, slots in the first run).
fn chunk_runs(next: u64, len: u64, capacity: u32) -> (usize, usize) {
    let first = slot_of(next, capacity);
    let in_first = (len as usize).min(capacity as usize - first);
    (first, in_first)
}

/// Reserved input slots, filled in place and published by [`commit`](WriteChunk::commit)
/// (spec §5.3, W1–W3). Made by [`Producer::write_chunk`].
pub struct WriteChunk<'a, M: RingMemory> {
    producer: &'a mut Producer<M>,
    len: u64,
}

impl<M: RingMemory> WriteChunk<'_, M> {
    /// Slots reserved.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether no slot was free.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes per slot: the stride of the chunk's messages, header included.
    pub fn slot_size(&self) -> usize {
        self.producer.memory.slot_size()
    }

    /// Runs `f` on the whole slot (header and payload) of the chunk's message `index`.
    ///
    /// # Panics
    /// If `index >= len()`.
    pub fn with_slot_mut<R>(&mut self, index: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        assert!(index < self.len(), "chunk index {index} out of {} reserved slots", self.len);
        let p = &*self.producer;
        let slot = slot_of(p.next.wrapping_add(index as u64), p.memory.capacity());
        // SAFETY: (I2) the reservation is at most free_slots() long, so the position lies in
        // [tail, head + capacity): released by the consumer and not readable before publish.
        unsafe { p.memory.with_slot_mut(slot, f) }
    }

    /// W3: publishes the first `count` slots as the caller left them, with one store of `tail`
    /// (P4; staged frames before the chunk go with it). Returns `count`.
    ///
    /// # Panics
    /// If `count > len()`.
    pub fn commit(self, count: usize) -> usize {
        assert!(count <= self.len(), "commit of {count} slots from a chunk of {}", self.len);
        // Wrapping, as stage_with (spec §7).
        self.producer.next = self.producer.next.wrapping_add(count as u64);
        self.producer.publish();
        count
    }
}

impl<M: ContiguousRingMemory> WriteChunk<'_, M> {
    /// The reserved slots as two runs of whole slots, in position order: the run up to the
    /// slot array's end and the wrapped rest (empty when the chunk does not wrap).
    pub fn as_mut_slices(&mut self) -> (&mut [u8], &mut [u8]) {
        let p = &*self.producer;
        let size = p.memory.slot_size();
        let (first, in_first) = chunk_runs(p.next, self.len, p.memory.capacity());
        let base = p.memory.slots_base();
        // SAFETY: (I2) every reserved slot is owned by this producer (see with_slot_mut); the
        // two runs are disjoint parts of the slot array (ContiguousRingMemory), borrowed
        // mutably through `&mut self` for as long as the slices live.
        unsafe {
            (
                std::slice::from_raw_parts_mut(base.add(first * size), in_first * size),
                std::slice::from_raw_parts_mut(base, (self.len as usize - in_first) * size),
            )
        }
    }

    /// Writes `header` into every reserved slot (W4's stamp; the payloads are untouched).
    pub fn stamp(&mut self, header: FrameHeader) {
        let size = self.slot_size();
        let (a, b) = self.as_mut_slices();
        for slot in a.chunks_exact_mut(size).chain(b.chunks_exact_mut(size)) {
            header.write_to(slot);
        }
    }
}

/// Published output frames read in place, handed back by [`release`](ReadChunk::release)
/// (spec §5.3, R1–R3). Made by [`Consumer::read_chunk`].
pub struct ReadChunk<'a, M: RingMemory> {
    consumer: &'a mut Consumer<M>,
    len: u64,
}

impl<M: RingMemory> ReadChunk<'_, M> {
    /// Frames in the chunk.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether no frame was published.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes per slot: the stride of the chunk's frames.
    pub fn slot_size(&self) -> usize {
        self.consumer.memory.slot_size()
    }

    /// Runs `f` on the whole slot (header and payload) of the chunk's frame `index`.
    ///
    /// # Panics
    /// If `index >= len()`.
    pub fn with_slot<R>(&self, index: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        assert!(index < self.len(), "chunk index {index} out of {} frames", self.len);
        let c = &*self.consumer;
        let slot = slot_of(c.next.wrapping_add(index as u64), c.memory.capacity());
        // SAFETY: (I3) the position lies in [head, tail) with tail acquired (available()).
        unsafe { c.memory.with_slot(slot, f) }
    }

    /// The header of frame `index` (its `length` is as found: check it against the slot).
    pub fn header(&self, index: usize) -> FrameHeader {
        self.with_slot(index, FrameHeader::read_from)
    }

    /// R3: consumes the first `count` frames and hands every consumed slot back with one store
    /// of `head` (C4). Returns `count`.
    ///
    /// # Panics
    /// If `count > len()`.
    pub fn release(self, count: usize) -> usize {
        assert!(count <= self.len(), "release of {count} frames from a chunk of {}", self.len);
        self.consumer.next = self.consumer.next.wrapping_add(count as u64);
        self.consumer.release();
        count
    }
}

impl<M: ContiguousRingMemory> ReadChunk<'_, M> {
    /// The chunk's frames as two runs of whole slots, in position order (see
    /// [`WriteChunk::as_mut_slices`]).
    pub fn as_slices(&self) -> (&[u8], &[u8]) {
        let c = &*self.consumer;
        let size = c.memory.slot_size();
        let (first, in_first) = chunk_runs(c.next, self.len, c.memory.capacity());
        let base = c.memory.slots_base();
        // SAFETY: (I3) the frames are published and owned by this consumer until release,
        // which takes `self` by value, so no slice outlives the ownership.
        unsafe {
            (
                std::slice::from_raw_parts(base.add(first * size), in_first * size),
                std::slice::from_raw_parts(base, (self.len as usize - in_first) * size),
            )
        }
    }
}
