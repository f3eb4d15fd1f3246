//! # ringbridge-core
//!
//! The protocol, host queues and backends behind `ringbridge`: messages travel between a host
//! and a persistent *ring kernel* through two single-producer/single-consumer rings that share
//! one region with a control block (`docs/PROTOCOL.md` is the contract).
//!
//! ```
//! use std::time::Duration;
//! use ringbridge_core::{host::Session, protocol::RingConfig};
//!
//! let ring = RingConfig { capacity: 8, slot_size: 64 };
//! let mut session = Session::launch("cpu", "echo", ring, ring)?;
//! session.send(7, 42, b"hello", Duration::from_secs(5))?;
//! let (id, bytes) = session.recv_with(Duration::from_secs(5), |h, p| (h.correlation_id, p.to_vec()))?;
//! assert_eq!((id, bytes.as_slice()), (42, &b"hello"[..]));
//! assert_eq!(session.terminate(true, Duration::from_secs(5))?.undelivered, 0);
//! # Ok::<(), ringbridge_core::Error>(())
//! ```
//!
//! ## Module map
//! - [`protocol`]: the `#[repr(C)]` control block, frame header, layout and index arithmetic.
//! - [`ring`]: [`ring::Producer`] / [`ring::Consumer`] over any [`ring::RingMemory`].
//! - [`transport`]: [`transport::Region`], the memory the rings live in.
//! - [`backend`]: the dispatch loop, built-in handlers, the CPU and CUDA backends.
//! - [`cuda`]: owned types over cudarc's `result` layer; [`cuda::raw`] alone calls the driver
//!   functions cudarc does not wrap.
//! - [`host`]: [`host::Session`], the host end for Rust callers.
//! - [`isolate`]: a kernel run by a kernel host process, so a GPU fault ends that process only.
//! - [`error`]: [`Error`] and its stable [`ErrorCode`]s.
//!
//! ## Safety model
//! `unsafe` lives in `ring.rs` (slot access, behind the [`ring::RingMemory`] contract),
//! `transport/` (raw memory of a region, bridge copies), `isolate/shm.rs` (the shared mapping),
//! `isolate/signals.rs` (the kernel host's signal dispositions) and `cuda/` (cudarc's `result`
//! layer and NVRTC behind owned types; raw `sys` driver calls in `cuda/raw.rs` only, each with a
//! `# Safety` list). Every other module forbids it. Ownership of a slot
//! moves between the two sides only through the release/acquire pairs of the spec (§5), cited
//! by `ORDERING:` comments at each atomic.

pub mod backend;
pub mod cuda;
pub mod error;
pub mod host;
#[cfg(target_os = "linux")]
pub mod isolate;
pub mod protocol;
pub mod ring;
mod sync;
pub mod transport;

pub use error::{Error, ErrorCode};
pub use sync::{AtomicU64, Ordering};
