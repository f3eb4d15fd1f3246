//! `compileUserKernelAsync`: NVRTC on the libuv pool. A cold compile of the ring kernel with a
//! user handler takes about a second; run on the JavaScript thread it would stop every timer
//! and I/O callback for that long.

use napi::bindgen_prelude::{AsyncTask, JsError};
use napi::{Env, Task};
use napi_derive::napi;
use ringbridge_core::backend::user::UserKernel;
use ringbridge_core::cuda::nvrtc::{Image, ImageKind};

use crate::error::{checked_u32, to_js, Code, Result};
use crate::CompiledKernel;

/// The compile a [`compile_user_kernel_async`] promise waits for.
pub struct CompileTask {
    user: Option<UserKernel>,
    arch: (i32, i32),
}

impl Task for CompileTask {
    type Output = Result<Image>;
    type JsValue = CompiledKernel;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        let Some(user) = self.user.take() else {
            return Ok(Err(crate::error::invalid("compileUserKernelAsync: the compile already ran")));
        };
        // Without NVRTC the compile fails with BACKEND_UNAVAILABLE naming every place searched
        // (nvrtc::version, the compile's first step).
        Ok(user.compile(self.arch).map_err(to_js))
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> napi::Result<CompiledKernel> {
        let image = output.map_err(|e: napi::Error<Code>| napi::Error::from(JsError::from(e).into_unknown(env)))?;
        Ok(CompiledKernel {
            kind: if image.kind == ImageKind::Cubin { "cubin".into() } else { "ptx".into() },
            bytes: image.bytes.len() as u32,
            cached: image.cached,
        })
    }
}

/// Compiles a user kernel (the ring kernel with the handler `entry` of `source`, over the
/// generated `schema_header`) for compute capability `major.minor` with NVRTC, off the
/// JavaScript thread; no GPU needed. Rejects with the compile log, or BACKEND_UNAVAILABLE
/// without NVRTC.
#[napi]
pub fn compile_user_kernel_async(
    source: String,
    entry: String,
    schema_header: String,
    max_replies: f64,
    major: i32,
    minor: i32,
) -> Result<AsyncTask<CompileTask>> {
    // f64, checked: napi's u32 conversion would wrap a maxReplies of 2^32 + 1 to 1 (issue #2).
    let max_replies = checked_u32("maxReplies", max_replies)?;
    let user = UserKernel { source, entry, schema_header, max_replies };
    Ok(AsyncTask::new(CompileTask { user: Some(user), arch: (major, minor) }))
}
