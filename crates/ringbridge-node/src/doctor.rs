//! What `ringbridge doctor` asks the addon: where NVRTC was looked for and found, the driver and
//! the GPUs, the kernel cache directory.

use napi_derive::napi;
use ringbridge_core::cuda::{diagnose, locate, nvrtc};

/// One directory searched for libnvrtc.
#[napi(object)]
pub struct NvrtcPlace {
    /// The directory (a pattern such as `/usr/local/cuda-*/lib64` when nothing matched it).
    pub dir: String,
    /// `LD_LIBRARY_PATH`, `CUDA_PATH`, `CUDA_HOME`, `toolkit`, `system`, `python wheel`, or
    /// `python3 site` for the directories the caller passed in.
    pub source: String,
    /// Whether the directory exists.
    pub exists: bool,
    /// The libnvrtc files in it (`libnvrtc.so.13`, …), full paths.
    pub files: Vec<String>,
}

/// Where NVRTC was looked for, what loaded, and its version.
#[napi(object)]
pub struct NvrtcReport {
    /// Whether NVRTC loads in this process.
    pub loaded: bool,
    /// The file cudarc opened (`dladdr`), when it loaded.
    pub path: Option<String>,
    /// The file the lookup loaded by full path (`None`: none, so the loader's own search by
    /// name is what found it, if anything did).
    pub found_by_lookup: Option<String>,
    /// The place source of `found_by_lookup`.
    pub source: Option<String>,
    /// `major.minor`, when it loaded.
    pub version: Option<String>,
    /// Every place searched, in order.
    pub places: Vec<NvrtcPlace>,
    /// The caller's extra directories (`python3`'s site-packages), which the library itself does
    /// not search: each `<site>/nvidia/cu13/lib` and `<site>/nvidia/cuda_nvrtc/lib`.
    pub extra_places: Vec<NvrtcPlace>,
    /// Files found that failed to load, with the loader's message.
    pub failures: Vec<String>,
    /// The file names tried in each place, in order.
    pub names: Vec<String>,
}

fn place(p: &locate::Place, source: &str) -> NvrtcPlace {
    NvrtcPlace {
        dir: p.dir.display().to_string(),
        source: source.to_owned(),
        exists: p.dir.is_dir(),
        files: locate::candidates(std::slice::from_ref(p)).into_iter().map(|c| c.path.display().to_string()).collect(),
    }
}

/// Looks for NVRTC as the library does (and loads it), and also under `site_dirs`
/// (site-packages directories the caller found, e.g. with `python3`), which are only reported.
#[napi]
pub fn nvrtc_lookup(site_dirs: Vec<String>) -> NvrtcReport {
    let lookup = locate::ensure_loaded();
    let loaded = nvrtc::nvrtc_present();
    let version = if loaded { nvrtc::version().ok().map(|(a, b)| format!("{a}.{b}")) } else { None };
    let extra_places = site_dirs
        .iter()
        .flat_map(|s| {
            let base = std::path::PathBuf::from(s).join("nvidia");
            [base.join("cu13").join("lib"), base.join("cuda_nvrtc").join("lib")]
        })
        .filter(|d| !lookup.places.iter().any(|p| &p.dir == d))
        .map(|dir| place(&locate::Place { dir, source: "python wheel" }, "python3 site"))
        .collect();
    NvrtcReport {
        loaded,
        path: if loaded { nvrtc::loaded_path().map(|p| p.display().to_string()) } else { None },
        found_by_lookup: lookup.loaded.as_ref().map(|c| c.path.display().to_string()),
        source: lookup.loaded.as_ref().map(|c| c.source.to_owned()),
        version,
        places: lookup.places.iter().map(|p| place(p, p.source)).collect(),
        extra_places,
        failures: lookup.failures.iter().map(|(p, e)| format!("{}: {e}", p.display())).collect(),
        names: locate::LIB_NAMES.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// One CUDA device.
#[napi(object)]
pub struct GpuReport {
    /// Device ordinal.
    pub ordinal: u32,
    /// Device name.
    pub name: String,
    /// `sm_XY`.
    pub sm: String,
    /// Streaming multiprocessors.
    pub sms: u32,
    /// Total memory in bytes.
    pub memory_bytes: f64,
}

/// The driver and the devices.
#[napi(object)]
pub struct DriverReport {
    /// Whether `libcuda.so.1` loads.
    pub present: bool,
    /// The driver's CUDA version, `major.minor`.
    pub cuda_version: Option<String>,
    /// Why the devices could not be listed.
    pub error: Option<String>,
    /// Every device.
    pub gpus: Vec<GpuReport>,
}

/// The NVIDIA driver's CUDA version and every GPU; no context is created.
#[napi]
pub fn cuda_driver_report() -> DriverReport {
    let present = ringbridge_core::cuda::driver::driver_present();
    match diagnose::devices() {
        Ok((v, devices)) => DriverReport {
            present,
            cuda_version: Some(format!("{}.{}", v / 1000, v % 1000 / 10)),
            error: None,
            gpus: devices
                .into_iter()
                .map(|d| GpuReport {
                    ordinal: d.ordinal as u32,
                    name: d.name,
                    sm: format!("sm_{}{}", d.arch.0, d.arch.1),
                    sms: d.sms,
                    memory_bytes: d.memory as f64,
                })
                .collect(),
        },
        Err(e) => DriverReport { present, cuda_version: None, error: Some(e.to_string()), gpus: Vec::new() },
    }
}

/// Where compiled kernels are cached (`RINGBRIDGE_CACHE_DIR`, `XDG_CACHE_HOME/ringbridge`,
/// `HOME/.cache/ringbridge`); `None` when the cache is off (an empty `RINGBRIDGE_CACHE_DIR`,
/// or none of them set).
#[napi]
pub fn kernel_cache_dir() -> Option<String> {
    nvrtc::cache_dir().map(|p| p.display().to_string())
}
