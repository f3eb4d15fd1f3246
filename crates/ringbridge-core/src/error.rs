//! The cold-path error type and its stable `ERR_RINGBRIDGE_*` codes (listed in `docs/errors.md`).
#![forbid(unsafe_code)]

use std::fmt;

/// Stable, machine-readable error codes. JavaScript sees [`ErrorCode::as_str`] as `err.code`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// A configuration value is out of range (capacity, slot size, region size…).
    InvalidArgument,
    /// A message does not match its schema.
    InvalidMessage,
    /// A message is larger than a slot's payload.
    MessageTooLarge,
    /// The queue is full and its policy is `reject`.
    Full,
    /// Replies were dropped because the reply queue was full under `reject`.
    Overflow,
    /// The kernel or runtime is terminated or closed.
    Closed,
    /// The kernel reported an error (error frame or control-block error word), or died: its
    /// kernel host process, or the thread that ran or served it.
    KernelError,
    /// The requested backend cannot run on this host.
    BackendUnavailable,
    /// No built-in handler has that name.
    UnknownHandler,
    /// A wait ran out of time.
    Timeout,
    /// The shared memory does not hold what the protocol requires (magic, version, sizes), or
    /// the other side (a kernel, a kernel host, its parent) broke the protocol.
    Protocol,
    /// The system could not provide what an operation needs: memory, a thread, descriptors.
    ResourceExhausted,
    /// An operating-system call failed (the message names it and gives the OS's error).
    Os,
    /// A CUDA driver call failed (or a GPU kernel faulted).
    Cuda,
    /// A kernel did not compile (NVRTC's log is in the message).
    Compile,
    /// A wait was cancelled by its `AbortSignal` (raised by the JavaScript facade).
    Aborted,
}

impl ErrorCode {
    /// Every code, in `docs/errors.md` order.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::InvalidArgument,
        ErrorCode::InvalidMessage,
        ErrorCode::MessageTooLarge,
        ErrorCode::Full,
        ErrorCode::Overflow,
        ErrorCode::Closed,
        ErrorCode::KernelError,
        ErrorCode::BackendUnavailable,
        ErrorCode::UnknownHandler,
        ErrorCode::Timeout,
        ErrorCode::Protocol,
        ErrorCode::ResourceExhausted,
        ErrorCode::Os,
        ErrorCode::Cuda,
        ErrorCode::Compile,
        ErrorCode::Aborted,
    ];

    /// The stable string form, e.g. `ERR_RINGBRIDGE_CLOSED`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "ERR_RINGBRIDGE_INVALID_ARGUMENT",
            ErrorCode::InvalidMessage => "ERR_RINGBRIDGE_INVALID_MESSAGE",
            ErrorCode::MessageTooLarge => "ERR_RINGBRIDGE_MESSAGE_TOO_LARGE",
            ErrorCode::Full => "ERR_RINGBRIDGE_FULL",
            ErrorCode::Overflow => "ERR_RINGBRIDGE_OVERFLOW",
            ErrorCode::Closed => "ERR_RINGBRIDGE_CLOSED",
            ErrorCode::KernelError => "ERR_RINGBRIDGE_KERNEL_ERROR",
            ErrorCode::BackendUnavailable => "ERR_RINGBRIDGE_BACKEND_UNAVAILABLE",
            ErrorCode::UnknownHandler => "ERR_RINGBRIDGE_UNKNOWN_HANDLER",
            ErrorCode::Timeout => "ERR_RINGBRIDGE_TIMEOUT",
            ErrorCode::Protocol => "ERR_RINGBRIDGE_PROTOCOL",
            ErrorCode::ResourceExhausted => "ERR_RINGBRIDGE_RESOURCE_EXHAUSTED",
            ErrorCode::Os => "ERR_RINGBRIDGE_OS",
            ErrorCode::Cuda => "ERR_RINGBRIDGE_CUDA",
            ErrorCode::Compile => "ERR_RINGBRIDGE_COMPILE",
            ErrorCode::Aborted => "ERR_RINGBRIDGE_ABORTED",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything that can go wrong off the hot path.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value broke a rule.
    InvalidConfig {
        /// What was configured, e.g. "input capacity".
        what: String,
        /// The value given, when it is a number worth repeating.
        value: Option<u64>,
        /// The rule, e.g. "a power of two from 1 to 16777216".
        expected: String,
    },
    /// A payload does not fit a slot.
    MessageTooLarge {
        /// Payload bytes.
        length: usize,
        /// Largest payload a slot holds.
        max: usize,
    },
    /// The memory handed in is not a valid region, or the other side of a ring or of a kernel
    /// host's control socket broke the protocol. Only that: running out of resources and
    /// failing system calls have variants of their own.
    Protocol(String),
    /// The system could not provide something: memory for a region, a thread, a descriptor.
    ResourceExhausted {
        /// What was asked for, e.g. "a region of 8192 bytes", "the CPU kernel thread".
        what: String,
        /// Why not, e.g. the OS's error text.
        reason: String,
    },
    /// An operating-system call failed.
    Os {
        /// The call and its object, e.g. "mmap of the shared region".
        call: &'static str,
        /// The OS's error (errno and its text).
        source: std::io::Error,
    },
    /// A thread that runs a kernel (or serves one) panicked outside the handlers, which run
    /// under `catch_unwind`: the kernel is gone, as when a kernel host process dies.
    ThreadPanicked {
        /// Which thread, e.g. "CPU kernel".
        thread: &'static str,
    },
    /// The kernel is terminated.
    Closed,
    /// A backend cannot run here.
    BackendUnavailable {
        /// Backend name.
        backend: &'static str,
        /// Why, e.g. "libcuda.so could not be loaded".
        reason: String,
    },
    /// No built-in handler has that name.
    UnknownHandler {
        /// The name asked for.
        name: String,
        /// The names that exist.
        known: &'static [&'static str],
    },
    /// The kernel wrote an error word.
    Kernel {
        /// The `kernel_error::*` code.
        code: u32,
        /// How many errors it counted.
        count: u32,
    },
    /// A CUDA driver or NVRTC call failed.
    Cuda {
        /// The call, e.g. `cuMemHostRegister`.
        call: &'static str,
        /// The driver's error name and text.
        message: String,
    },
    /// NVRTC rejected a kernel.
    Compile {
        /// The source's name.
        name: String,
        /// The options it was compiled with.
        options: String,
        /// NVRTC's log: file names, line numbers, messages.
        log: String,
    },
    /// An error raised in another process (a kernel host), with its code and text kept.
    Remote {
        /// The original error's code.
        code: ErrorCode,
        /// The original error's text.
        message: String,
    },
    /// A bounded wait expired.
    Timeout {
        /// What was awaited.
        what: &'static str,
        /// After how long.
        millis: u64,
    },
}

impl Error {
    /// The stable code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidConfig { .. } => ErrorCode::InvalidArgument,
            Error::MessageTooLarge { .. } => ErrorCode::MessageTooLarge,
            Error::Protocol(_) => ErrorCode::Protocol,
            Error::ResourceExhausted { .. } => ErrorCode::ResourceExhausted,
            Error::Os { .. } => ErrorCode::Os,
            Error::ThreadPanicked { .. } => ErrorCode::KernelError,
            Error::Closed => ErrorCode::Closed,
            Error::BackendUnavailable { .. } => ErrorCode::BackendUnavailable,
            Error::UnknownHandler { .. } => ErrorCode::UnknownHandler,
            Error::Kernel { .. } => ErrorCode::KernelError,
            Error::Timeout { .. } => ErrorCode::Timeout,
            Error::Cuda { .. } => ErrorCode::Cuda,
            Error::Compile { .. } => ErrorCode::Compile,
            Error::Remote { code, .. } => *code,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidConfig { what, value: Some(value), expected } => {
                write!(f, "{what} {value} is invalid: expected {expected}")
            }
            Error::InvalidConfig { what, value: None, expected } => write!(f, "{what} is invalid: expected {expected}"),
            Error::MessageTooLarge { length, max } => {
                write!(f, "message of {length} bytes exceeds the slot payload of {max} bytes")
            }
            Error::Protocol(why) => write!(f, "protocol violation: {why}"),
            Error::ResourceExhausted { what, reason } => write!(f, "not enough resources for {what}: {reason}"),
            Error::Os { call, source } => write!(f, "{call} failed: {source}"),
            Error::ThreadPanicked { thread } => write!(f, "the {thread} thread panicked"),
            Error::Closed => f.write_str("the kernel is terminated"),
            Error::BackendUnavailable { backend, reason } => {
                write!(f, "backend '{backend}' is unavailable: {reason}")
            }
            Error::UnknownHandler { name, known } => {
                write!(f, "no built-in handler named '{name}': expected one of {}", known.join(", "))
            }
            Error::Kernel { code, count } => {
                write!(f, "kernel reported error code {code} ({count} errors in total)")
            }
            Error::Cuda { call, message } => write!(f, "{call} failed: {message}"),
            Error::Compile { name, options, log } => write!(f, "{name} did not compile ({options}):\n{log}"),
            Error::Timeout { what, millis } => write!(f, "timed out after {millis} ms waiting for {what}"),
            Error::Remote { message, .. } => f.write_str(message),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Os { source, .. } => Some(source),
            _ => None,
        }
    }
}
