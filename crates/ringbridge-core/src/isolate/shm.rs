//! Memory two processes share: an anonymous memfd, mapped `MAP_SHARED` by each. The parent
//! creates it and hands the descriptor to the kernel host over the control socket; the pages
//! are the same physical pages in both address spaces, so the host can register them with the
//! GPU (`mapped`) or copy from them (`dma`) exactly as it would a buffer of its own.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

use rustix::fs::{fstat, ftruncate, memfd_create, MemfdFlags};
use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};

use super::os_error;
use crate::Error;

/// A shared mapping of a memfd. Unmapped on drop; the memory lives on while another process
/// (or another mapping) still maps it.
pub struct SharedMemory {
    ptr: NonNull<u8>,
    len: usize,
    fd: OwnedFd,
}

// SAFETY: plain memory; who may touch which bytes is the ring protocol's business (Region).
unsafe impl Send for SharedMemory {}
// SAFETY: as above.
unsafe impl Sync for SharedMemory {}

impl SharedMemory {
    /// Creates `len` zeroed bytes (a whole number of pages is the caller's choice) and maps them.
    ///
    /// # Errors
    /// [`Error::ResourceExhausted`] when the system has no memory or descriptors left,
    /// [`Error::Os`] for other failures; both name the failed system call.
    pub fn create(len: usize) -> Result<Self, Error> {
        let fd = memfd_create("ringbridge-region", MemfdFlags::CLOEXEC).map_err(os_error("memfd_create"))?;
        ftruncate(&fd, len as u64).map_err(os_error("ftruncate of the shared region"))?;
        Self::map(fd)
    }

    /// Maps a descriptor received from the process that created it, whole.
    ///
    /// # Errors
    /// [`Error::Protocol`] for an empty descriptor (the other process sent no region);
    /// [`Error::ResourceExhausted`] / [`Error::Os`] when `fstat` or `mmap` fails.
    pub fn map(fd: OwnedFd) -> Result<Self, Error> {
        let len = usize::try_from(fstat(&fd).map_err(os_error("fstat of the shared region"))?.st_size)
            .map_err(|_| Error::Protocol("shared region has a negative size".into()))?;
        if len == 0 {
            return Err(Error::Protocol("shared region is empty".into()));
        }
        // SAFETY: a fresh mapping chosen by the kernel (null hint), `len` bytes of a file that
        // has `len` bytes; it is unmapped exactly once, in Drop.
        let raw = unsafe { mmap(std::ptr::null_mut(), len, ProtFlags::READ | ProtFlags::WRITE, MapFlags::SHARED, &fd, 0) }
            .map_err(os_error("mmap of the shared region"))?;
        let ptr = NonNull::new(raw.cast::<u8>())
            .ok_or_else(|| Error::Os { call: "mmap of the shared region", source: std::io::Error::other("it returned a null address") })?;
        Ok(Self { ptr, len, fd })
    }

    /// First byte (page-aligned).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Bytes mapped.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never, by construction).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The descriptor, to send to another process.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        // SAFETY: mapped in `map` with this address and length; nothing refers to it any more
        // (the owning Region is being dropped).
        let _ = unsafe { munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
