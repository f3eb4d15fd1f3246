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

/// A JS number given for a `u32` option, checked rather than wrapped. napi's own `u32`
/// conversion is ToUint32 (`2**32 + 8` → 8, `-8` → 4294967288, `2**40` → 0), which let a
/// capacity of 2^32 + 8 launch a ring of 8 while JavaScript laid out 2^32 + 8 slots (issue #2).
/// Take the option as `f64` and pass it through here: anything but an integer in
/// `0..=u32::MAX` is refused with `ERR_RINGBRIDGE_INVALID_ARGUMENT`, showing the value as given.
pub fn checked_u32(what: &str, value: f64) -> Result<u32> {
    if value.is_finite() && value.fract() == 0.0 && (0.0..=u32::MAX as f64).contains(&value) {
        // Exact: an integral f64 in range converts without rounding.
        return Ok(value as u32);
    }
    Err(invalid(format!("{what}: expected an integer from 0 to {}, got {}", u32::MAX, js_number(value))))
}

/// `checked_u32` for an optional option.
pub fn checked_u32_opt(what: &str, value: Option<f64>) -> Result<Option<u32>> {
    value.map(|v| checked_u32(what, v)).transpose()
}

/// A number as JavaScript prints it (`NaN`, `Infinity`, `-0` as `0`, integers without `.0`).
fn js_number(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        (if value > 0.0 { "Infinity" } else { "-Infinity" }).to_owned()
    } else if value == 0.0 {
        "0".to_owned()
    } else {
        format!("{value}")
    }
}
