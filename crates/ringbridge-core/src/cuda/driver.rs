//! Opening a GPU: library check, `cuInit`, a context of our own, the device's properties.

use std::sync::Arc;

use cudarc::driver::{result, sys, CudaContext};

use super::{cuda_err, raw};
use crate::Error;

/// One opened GPU.
pub struct Gpu {
    /// A non-primary context owned by this runtime: after a kernel fault poisons it, a fresh one
    /// can be created without resetting anything other processes or runtimes use.
    pub ctx: Arc<CudaContext>,
    /// Device ordinal.
    pub ordinal: usize,
    /// Device name, e.g. "NVIDIA H100 80GB HBM3".
    pub name: String,
    /// Compute capability (major, minor).
    pub arch: (i32, i32),
    /// Streaming multiprocessors.
    pub sms: u32,
    /// Driver API version, e.g. 13000 for CUDA 13.0.
    pub driver_version: i32,
    /// `CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY`.
    pub can_map_host: bool,
    /// `CU_DEVICE_ATTRIBUTE_HOST_REGISTER_SUPPORTED`.
    pub host_register: bool,
    /// `CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS` (0 on WSL2 and Windows).
    pub concurrent_managed: bool,
}

/// Whether `libcuda` can be loaded at all (no CUDA call before this says yes).
pub fn driver_present() -> bool {
    raw::is_culib_present()
}

/// What a device is, read without creating a context (a process that only chooses a backend,
/// and leaves the kernels to kernel host processes, holds no GPU memory).
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    /// Device name.
    pub name: String,
    /// Compute capability (major, minor).
    pub arch: (i32, i32),
    /// Streaming multiprocessors.
    pub sms: u32,
    /// Driver API version, e.g. 13000.
    pub driver_version: i32,
}

/// How many CUDA devices this process sees (`cuInit` + `cuDeviceGetCount`; no context).
///
/// # Errors
/// [`Error::BackendUnavailable`] when the driver cannot be loaded or initialised.
pub fn device_count() -> Result<usize, Error> {
    let unavailable = |reason: String| Error::BackendUnavailable { backend: "cuda", reason };
    if !driver_present() {
        return Err(unavailable("the NVIDIA driver library (libcuda.so.1) could not be loaded".into()));
    }
    result::init().map_err(|e| unavailable(format!("cuInit failed: {e}")))?;
    let count = CudaContext::device_count().map_err(|e| unavailable(format!("cuDeviceGetCount failed: {e}")))?;
    Ok(count.max(0) as usize)
}

/// Loads the driver, runs `cuInit` and reads device `ordinal`'s properties; no context.
///
/// # Errors
/// [`Error::BackendUnavailable`] when the driver library is missing, `cuInit` fails, or there
/// is no such device; [`Error::Cuda`] for other driver failures.
pub fn probe(ordinal: usize) -> Result<DeviceInfo, Error> {
    let unavailable = |reason: String| Error::BackendUnavailable { backend: "cuda", reason };
    if !driver_present() {
        return Err(unavailable("the NVIDIA driver library (libcuda.so.1) could not be loaded".into()));
    }
    result::init().map_err(|e| unavailable(format!("cuInit failed: {e}")))?;
    let count = CudaContext::device_count().map_err(|e| unavailable(format!("cuDeviceGetCount failed: {e}")))?;
    if ordinal >= count.max(0) as usize {
        return Err(unavailable(format!("no CUDA device {ordinal} ({count} present)")));
    }
    let dev = result::device::get(ordinal as i32).map_err(cuda_err("cuDeviceGet"))?;
    use sys::CUdevice_attribute::*;
    // SAFETY: `dev` is a valid device handle (cuDeviceGet succeeded); reads one int each.
    let attr = |a| unsafe { result::device::get_attribute(dev, a) }.map_err(cuda_err("cuDeviceGetAttribute"));
    let version = raw::driver_get_version().map_err(cuda_err("cuDriverGetVersion"))?;
    Ok(DeviceInfo {
        name: result::device::get_name(dev).map_err(cuda_err("cuDeviceGetName"))?,
        arch: (attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?, attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?),
        sms: attr(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as u32,
        driver_version: version,
    })
}

/// Opens GPU `ordinal`.
///
/// # Errors
/// As [`probe`]; [`Error::Cuda`] when the context cannot be created.
pub fn open(ordinal: usize) -> Result<Gpu, Error> {
    let info = probe(ordinal)?;
    let ctx = CudaContext::new_non_primary(ordinal, 0).map_err(cuda_err("cuCtxCreate"))?;
    // SAFETY: ringbridge never lets cudarc's slices order work: every copy and launch names its
    // stream, and a persistent kernel would make event-tracked copies wait forever.
    unsafe { ctx.disable_event_tracking() };
    let attr = |a: sys::CUdevice_attribute| ctx.attribute(a).map_err(cuda_err("cuDeviceGetAttribute"));
    use sys::CUdevice_attribute::*;
    Ok(Gpu {
        name: info.name,
        arch: info.arch,
        sms: info.sms,
        can_map_host: attr(CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY)? != 0,
        host_register: attr(CU_DEVICE_ATTRIBUTE_HOST_REGISTER_SUPPORTED)? != 0,
        concurrent_managed: attr(CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS)? != 0,
        driver_version: info.driver_version,
        ordinal,
        ctx,
    })
}
