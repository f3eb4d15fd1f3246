//! What `ringbridge doctor` reports about the GPUs: the driver and every device, read without
//! creating a context.

use cudarc::driver::result;

use super::{cuda_err, driver};
use crate::Error;

/// One CUDA device as the doctor prints it.
#[derive(Clone, Debug)]
pub struct DeviceReport {
    /// Device ordinal.
    pub ordinal: usize,
    /// Device name.
    pub name: String,
    /// Compute capability (major, minor).
    pub arch: (i32, i32),
    /// Streaming multiprocessors.
    pub sms: u32,
    /// Total device memory in bytes (`cuDeviceTotalMem`).
    pub memory: u64,
}

/// The driver's CUDA version (e.g. 13000) and every device; no context is created.
///
/// # Errors
/// [`Error::BackendUnavailable`] without a driver or when `cuInit` fails; [`Error::Cuda`] when
/// a device cannot be read.
pub fn devices() -> Result<(i32, Vec<DeviceReport>), Error> {
    let count = driver::device_count()?;
    let version = super::raw::driver_get_version().map_err(cuda_err("cuDriverGetVersion"))?;
    let mut out = Vec::with_capacity(count);
    for ordinal in 0..count {
        let info = driver::probe(ordinal)?;
        let dev = result::device::get(ordinal as i32).map_err(cuda_err("cuDeviceGet"))?;
        // SAFETY: `dev` is a valid device handle (cuDeviceGet succeeded after cuInit, in
        // `probe`); reads one size.
        let memory = unsafe { result::device::total_mem(dev) }.map_err(cuda_err("cuDeviceTotalMem"))? as u64;
        out.push(DeviceReport { ordinal, name: info.name, arch: info.arch, sms: info.sms, memory });
    }
    Ok((version, out))
}
