//! `ringbridge_core::Error` → a JS `Error` whose `code` is the stable `ERR_RINGBRIDGE_*` string.
#![forbid(unsafe_code)]

use ringbridge_core::{Error, ErrorCode};

/// The `code` napi-rs v3 puts on a thrown JS error.
#[derive(Debug)]
pub struct Code(pub &'static str);

impl AsRef<str> for Code {
    fn as_ref(&self) -> &str {
        self.0
    }
}

impl From<napi::Status> for Code {
    fn from(status: napi::Status) -> Self {
        // Failures of napi itself (argument conversion) are misuse of the binding's arguments.
        let _ = status;
        Code(ErrorCode::InvalidArgument.as_str())
    }
}

/// Result type of every binding entry point.
pub type Result<T> = napi::Result<T, Code>;

/// Converts a core error, keeping its message and code.
pub fn to_js(err: Error) -> napi::Error<Code> {
    napi::Error::new(Code(err.code().as_str()), err.to_string())
}

/// An argument error raised by the binding itself.
pub fn invalid(what: impl std::fmt::Display) -> napi::Error<Code> {
    napi::Error::new(Code(ErrorCode::InvalidArgument.as_str()), what.to_string())
}
