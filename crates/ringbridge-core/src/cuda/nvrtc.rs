//! Run-time compilation of the kernels with NVRTC, for the device's exact architecture, with a
//! disk cache keyed by (source, headers, options, architecture, NVRTC version).
//!
//! A CUBIN for `sm_XY` is preferred: it loads under the driver's minor-version compatibility,
//! while PTX from an NVRTC newer than the driver does not. PTX (`compute_XY`) is the fallback
//! when NVRTC does not know the architecture.

use std::ffi::{c_char, CStr, CString};
use std::path::PathBuf;

use cudarc::nvrtc::sys;

use super::locate;
use crate::Error;

/// What NVRTC produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageKind {
    /// Machine code for one architecture.
    Cubin,
    /// PTX, NUL-terminated, JIT-compiled by the driver at load.
    Ptx,
}

/// A compiled module image.
#[derive(Clone, Debug)]
pub struct Image {
    /// CUBIN bytes, or PTX text ending in NUL.
    pub bytes: Vec<u8>,
    /// Which of the two.
    pub kind: ImageKind,
    /// Whether it came from the disk cache.
    pub cached: bool,
    /// The NVRTC options used.
    pub options: Vec<String>,
}

/// Whether `libnvrtc` can be loaded: first by full path from the places of [`locate`] (once per
/// process), then by name as cudarc opens it.
pub fn nvrtc_present() -> bool {
    locate::ensure_loaded();
    // SAFETY: only tries to open the library.
    unsafe { sys::is_culib_present() }
}

/// The file of the libnvrtc cudarc opened (`dladdr` of `nvrtcVersion`); `None` when NVRTC
/// cannot be loaded.
pub fn loaded_path() -> Option<PathBuf> {
    if !nvrtc_present() {
        return None;
    }
    // SAFETY: the library loads (above), so `culib` returns it rather than panicking; the symbol
    // is only looked up, never called here.
    let lib = unsafe { sys::culib() };
    // SAFETY: as above; the pointer is only passed to dladdr.
    let sym = unsafe { lib.get::<unsafe extern "C" fn()>(b"nvrtcVersion\0") }.ok()?;
    locate::file_of(*sym as *const std::ffi::c_void)
}

/// Why NVRTC is missing: the places searched, for an error message.
fn not_found_reason() -> String {
    let lookup = locate::ensure_loaded();
    let looked: Vec<String> = lookup.places.iter().map(|p| p.dir.display().to_string()).collect();
    let failed: Vec<String> = lookup.failures.iter().map(|(p, e)| format!("{} ({e})", p.display())).collect();
    format!(
        "NVRTC (libnvrtc.so.13 or .12) could not be loaded: looked in {}{}, then by name through the loader; set CUDA_PATH, add CUDA's lib64 to LD_LIBRARY_PATH or `pip install nvidia-cuda-nvrtc` (see `npx ringbridge doctor` and docs/NVRTC.md)",
        looked.join(", "),
        if failed.is_empty() { String::new() } else { format!("; found but failed to load: {}", failed.join("; ")) }
    )
}

/// NVRTC's version (major, minor).
///
/// # Errors
/// [`Error::BackendUnavailable`] when libnvrtc cannot be loaded.
pub fn version() -> Result<(i32, i32), Error> {
    if !nvrtc_present() {
        return Err(Error::BackendUnavailable { backend: "cuda", reason: not_found_reason() });
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: writes two ints; the library is loaded.
    let r = unsafe { sys::nvrtcVersion(&mut major, &mut minor) };
    check(r, "nvrtcVersion")?;
    Ok((major, minor))
}

fn check(r: sys::nvrtcResult, call: &'static str) -> Result<(), Error> {
    if r == sys::nvrtcResult::NVRTC_SUCCESS {
        Ok(())
    } else {
        Err(Error::Cuda { call, message: format!("{r:?}") })
    }
}

struct Program(sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: created by nvrtcCreateProgram; destroyed once. A failure leaks a program.
        let _ = unsafe { sys::nvrtcDestroyProgram(&mut self.0) };
    }
}

/// Compiles `source` (named `name` in diagnostics) with `headers` (name, text) for `arch`,
/// to a CUBIN (`sm_XY`) or, when `cubin` is false, to PTX (`compute_XY`).
///
/// # Errors
/// [`Error::Compile`] with NVRTC's log (file names and line numbers) when the source does not
/// compile; [`Error::BackendUnavailable`] without NVRTC; [`Error::InvalidConfig`] for a NUL
/// byte in the source, a header or a name.
pub fn compile(source: &str, name: &str, headers: &[(&str, &str)], arch: (i32, i32), cubin: bool) -> Result<Image, Error> {
    version()?;
    let cstr = |s: &str| {
        CString::new(s).map_err(|_| Error::InvalidConfig {
            what: format!("the CUDA source '{name}', its headers or options"),
            value: None,
            expected: "text without NUL bytes".into(),
        })
    };
    let src = cstr(source)?;
    let cname = cstr(name)?;
    let header_texts = headers.iter().map(|(_, t)| cstr(t)).collect::<Result<Vec<_>, _>>()?;
    let header_names = headers.iter().map(|(n, _)| cstr(n)).collect::<Result<Vec<_>, _>>()?;
    let text_ptrs: Vec<*const c_char> = header_texts.iter().map(|c| c.as_ptr()).collect();
    let name_ptrs: Vec<*const c_char> = header_names.iter().map(|c| c.as_ptr()).collect();
    let target = if cubin { "sm" } else { "compute" };
    let mut options =
        vec![format!("--gpu-architecture={target}_{}{}", arch.0, arch.1), "-std=c++17".to_owned(), "-default-device".to_owned()];
    options.extend(tuning_defines().into_iter().map(|d| format!("-D{d}")));
    let mut raw = std::ptr::null_mut();
    // SAFETY: every pointer is a live NUL-terminated string for the duration of the call; the
    // two header arrays have the same length.
    let r = unsafe {
        sys::nvrtcCreateProgram(&mut raw, src.as_ptr(), cname.as_ptr(), headers.len() as i32, text_ptrs.as_ptr(), name_ptrs.as_ptr())
    };
    check(r, "nvrtcCreateProgram")?;
    let program = Program(raw);
    let copts = options.iter().map(|o| cstr(o)).collect::<Result<Vec<_>, _>>()?;
    let opt_ptrs: Vec<*const c_char> = copts.iter().map(|c| c.as_ptr()).collect();
    // SAFETY: the program is live; options are live C strings.
    let compiled = unsafe { sys::nvrtcCompileProgram(program.0, opt_ptrs.len() as i32, opt_ptrs.as_ptr()) };
    if compiled != sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(Error::Compile { name: name.to_owned(), options: options.join(" "), log: log_of(&program) });
    }
    let bytes = if cubin {
        let mut size = 0;
        // SAFETY: program compiled; writes one usize.
        check(unsafe { sys::nvrtcGetCUBINSize(program.0, &mut size) }, "nvrtcGetCUBINSize")?;
        let mut buf = vec![0u8; size];
        // SAFETY: `buf` has exactly the size NVRTC reported.
        check(unsafe { sys::nvrtcGetCUBIN(program.0, buf.as_mut_ptr().cast()) }, "nvrtcGetCUBIN")?;
        buf
    } else {
        let mut size = 0;
        // SAFETY: as above.
        check(unsafe { sys::nvrtcGetPTXSize(program.0, &mut size) }, "nvrtcGetPTXSize")?;
        let mut buf = vec![0u8; size];
        // SAFETY: as above; the PTX size includes its NUL.
        check(unsafe { sys::nvrtcGetPTX(program.0, buf.as_mut_ptr().cast()) }, "nvrtcGetPTX")?;
        buf
    };
    Ok(Image { bytes, kind: if cubin { ImageKind::Cubin } else { ImageKind::Ptx }, cached: false, options })
}

fn log_of(program: &Program) -> String {
    let mut size = 0;
    // SAFETY: program is live; writes one usize.
    if unsafe { sys::nvrtcGetProgramLogSize(program.0, &mut size) } != sys::nvrtcResult::NVRTC_SUCCESS || size == 0 {
        return String::new();
    }
    let mut buf = vec![0u8; size];
    // SAFETY: `buf` has the size NVRTC reported, NUL included.
    if unsafe { sys::nvrtcGetProgramLog(program.0, buf.as_mut_ptr().cast()) } != sys::nvrtcResult::NVRTC_SUCCESS {
        return String::new();
    }
    CStr::from_bytes_until_nul(&buf).map(|c| c.to_string_lossy().trim_end().to_owned()).unwrap_or_default()
}

/// Where compiled images are cached: `$RINGBRIDGE_CACHE_DIR`, else `$XDG_CACHE_HOME/ringbridge`,
/// else `$HOME/.cache/ringbridge`; `None` disables the cache.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("RINGBRIDGE_CACHE_DIR") {
        return (!d.is_empty()).then(|| PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("ringbridge"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("ringbridge"))
}

/// The kernels' tuning macros to override (`RB_RING_ROUND_PASSES=16`, …: the `#ifndef` block
/// at the top of `kernels/ring_kernel.cu`), from `RINGBRIDGE_NVRTC_DEFINES`, comma-separated:
/// a benchmark's knob for trying settings on a GPU in one run. Each must be `NAME` or
/// `NAME=VALUE` of ASCII letters, digits and `_`; anything else is ignored with a warning.
fn tuning_defines() -> Vec<String> {
    let Ok(text) = std::env::var("RINGBRIDGE_NVRTC_DEFINES") else { return Vec::new() };
    let ok = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'=');
    text.split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .filter(|d| {
            let keep = ok(d);
            if !keep {
                eprintln!("ringbridge: RINGBRIDGE_NVRTC_DEFINES: ignoring {d:?} (expected NAME or NAME=VALUE)");
            }
            keep
        })
        .map(str::to_owned)
        .collect()
}

/// FNV-1a, 64-bit: a stable file name for a cache key (the full key is stored beside the image
/// and compared on load, so a collision is a miss, never a wrong kernel).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x100_0000_01b3))
}

/// [`compile`] through the disk cache: CUBIN for the exact architecture first, PTX if NVRTC
/// rejects the architecture. A cache that cannot be read or written is skipped silently (it
/// only costs a compile).
///
/// # Errors
/// As [`compile`].
pub fn compile_cached(source: &str, name: &str, headers: &[(&str, &str)], arch: (i32, i32)) -> Result<Image, Error> {
    let (major, minor) = version()?;
    let mut key = format!("ringbridge-nvrtc-cache-v1\nnvrtc {major}.{minor}\narch {}.{}\nname {name}\n", arch.0, arch.1);
    for d in tuning_defines() {
        key.push_str(&format!("define {d}\n"));
    }
    for (n, t) in headers {
        key.push_str(&format!("header {n} {}\n{t}\n", t.len()));
    }
    key.push_str(source);
    let stem = format!("{:016x}", fnv1a(key.as_bytes()));
    let dir = cache_dir();
    if let Some(dir) = &dir {
        let stored_key = std::fs::read(dir.join(format!("{stem}.key")));
        let image = std::fs::read(dir.join(format!("{stem}.img")));
        let kind = std::fs::read_to_string(dir.join(format!("{stem}.kind")));
        if let (Ok(k), Ok(bytes), Ok(kind)) = (stored_key, image, kind) {
            if k == key.as_bytes() {
                let kind = if kind.trim() == "cubin" { ImageKind::Cubin } else { ImageKind::Ptx };
                return Ok(Image { bytes, kind, cached: true, options: Vec::new() });
            }
        }
    }
    let image = match compile(source, name, headers, arch, true) {
        // NVRTC older than the device: fall back to PTX of the newest arch it knows is not
        // attempted here; an unknown arch reports through the PTX attempt's log.
        Err(Error::Compile { log, .. }) if log.contains("invalid value for --gpu-architecture") => {
            compile(source, name, headers, arch, false)?
        }
        other => other?,
    };
    if let Some(dir) = &dir {
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(dir)?;
            let tmp = dir.join(format!("{stem}.{}.tmp", std::process::id()));
            std::fs::write(&tmp, &image.bytes)?;
            std::fs::write(dir.join(format!("{stem}.kind")), if image.kind == ImageKind::Cubin { "cubin" } else { "ptx" })?;
            std::fs::write(dir.join(format!("{stem}.key")), key.as_bytes())?;
            std::fs::rename(tmp, dir.join(format!("{stem}.img")))
        };
        let _ = write();
    }
    Ok(image)
}
