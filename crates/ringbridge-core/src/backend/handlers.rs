//! The handler seam and the built-in handlers every backend implements bit-for-bit alike.
#![forbid(unsafe_code)]

use crate::protocol::{kernel_error, FrameHeader};
use crate::Error;

/// What a handler did with one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A reply of `length` bytes was written at the start of the reply area.
    Reply {
        /// Message type of the reply.
        type_id: u16,
        /// Payload bytes written.
        length: u32,
    },
    /// The message is rejected; the host receives an error frame with this record.
    Error {
        /// `kernel_error::*` or a handler code ≥ 256.
        code: u32,
        /// Handler-defined detail.
        detail: u32,
    },
    /// No reply for this message.
    NoReply,
}

/// A ring kernel's per-message function.
pub trait Handler: Send {
    /// Handles one message, writing its reply payload (if any) into `reply`, whose length is the
    /// output slot's payload capacity.
    fn handle(&mut self, header: &FrameHeader, payload: &[u8], reply: &mut [u8]) -> Outcome;
}

/// Replies with the request's payload and type.
pub struct Echo;

impl Handler for Echo {
    fn handle(&mut self, header: &FrameHeader, payload: &[u8], reply: &mut [u8]) -> Outcome {
        if payload.len() > reply.len() {
            return Outcome::Error { code: kernel_error::REPLY_TOO_LARGE, detail: payload.len() as u32 };
        }
        reply[..payload.len()].copy_from_slice(payload);
        Outcome::Reply { type_id: header.type_id, length: payload.len() as u32 }
    }
}

/// `r[i] = fma(a, x[i], y[i])` over f32 fields (spec §13): the payload is `a: f32`, then
/// `x: [f32; n]`, then `y: [f32; n]`, little-endian; the reply is `r: [f32; n]`. A fused
/// multiply-add (one rounding) so the CUDA kernel's `fmaf` gives the same bits; a NaN
/// result is the canonical [`CANONICAL_NAN`].
pub struct Saxpy;

impl Handler for Saxpy {
    fn handle(&mut self, header: &FrameHeader, payload: &[u8], reply: &mut [u8]) -> Outcome {
        if payload.len() < 4 || (payload.len() - 4) % 8 != 0 {
            return Outcome::Error { code: kernel_error::BAD_PAYLOAD, detail: payload.len() as u32 };
        }
        let n = (payload.len() - 4) / 8;
        if n * 4 > reply.len() {
            return Outcome::Error { code: kernel_error::REPLY_TOO_LARGE, detail: (n * 4) as u32 };
        }
        let f32_at = |o: usize| f32::from_le_bytes(payload[o..o + 4].try_into().unwrap());
        let a = f32_at(0);
        for i in 0..n {
            let r = a.mul_add(f32_at(4 + 4 * i), f32_at(4 + 4 * (n + i)));
            // NaN results are canonical (0x7fffffff) on every backend: GPUs do not propagate
            // NaN payloads, so the bits would otherwise depend on where the kernel runs.
            let r = if r.is_nan() { f32::from_bits(CANONICAL_NAN) } else { r };
            reply[4 * i..4 * i + 4].copy_from_slice(&r.to_le_bytes());
        }
        Outcome::Reply { type_id: header.type_id, length: (n * 4) as u32 }
    }
}

/// The NaN every backend's saxpy answers with (the GPU's canonical quiet NaN).
pub const CANONICAL_NAN: u32 = 0x7fff_ffff;

/// The CPU twin of the GPU's test handler `trap`: the first message aborts the process, the
/// closest a thread can come to a trapping GPU kernel. Only inside a kernel host.
pub struct Crash;

impl Handler for Crash {
    fn handle(&mut self, _: &FrameHeader, _: &[u8], _: &mut [u8]) -> Outcome {
        std::process::abort()
    }
}

/// Names accepted by [`builtin`] (besides the test-only `trap`).
pub const BUILTIN_NAMES: &[&str] = &["echo", "saxpy"];

/// A fresh instance of the built-in handler `name`.
///
/// # Errors
/// [`Error::UnknownHandler`] if `name` is not in [`BUILTIN_NAMES`].
pub fn builtin(name: &str) -> Result<Box<dyn Handler>, Error> {
    match name {
        "echo" => Ok(Box::new(Echo)),
        "saxpy" => Ok(Box::new(Saxpy)),
        "trap" if crate::isolate::child::in_kernel_host() => Ok(Box::new(Crash)),
        "trap" => Err(Error::InvalidConfig {
            what: "handler 'trap' outside a kernel host".into(),
            value: None,
            expected: "isolation 'process': the test handler ends the process it runs in, as a GPU trap ends a CUDA context".into(),
        }),
        _ => Err(Error::UnknownHandler { name: name.to_owned(), known: BUILTIN_NAMES }),
    }
}
