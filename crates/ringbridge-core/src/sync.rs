//! Atomics shim: `std` atomics normally, `loom`'s under `--cfg loom`, so the same ring code runs
//! in the model checker (`tests/loom.rs`) and in production.

#[cfg(loom)]
pub use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
#[cfg(not(loom))]
pub use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
