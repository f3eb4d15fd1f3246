//! Where `libnvrtc` is looked for, and loading it by full path.
//!
//! cudarc opens NVRTC by file name only (`libnvrtc.so`, …, `libnvrtc.so.13`, `libnvrtc.so.12`),
//! so the dynamic loader finds it only through `LD_LIBRARY_PATH` or its cache. ringbridge looks
//! in the usual places first and `dlopen`s the first library it finds by its full path; cudarc's
//! later open by name then finds that library already loaded (glibc matches a loaded library's
//! `SONAME`). The order (docs/NVRTC.md):
//!
//! 1. `LD_LIBRARY_PATH`, each directory in turn (what the loader itself would search first);
//! 2. `$CUDA_PATH/lib64`, `$CUDA_PATH/lib`, then the same under `$CUDA_HOME`;
//! 3. `/usr/local/cuda/lib64`, then `/usr/local/cuda-*/lib64`, newest version first;
//! 4. the distribution's `/usr/lib/<multiarch>` (`x86_64-linux-gnu`, `aarch64-linux-gnu`);
//! 5. `/opt/cuda/lib64`;
//! 6. NVIDIA's Python wheels in the usual site-packages directories (`$VIRTUAL_ENV`,
//!    `$CONDA_PREFIX`, `~/.local`, `/usr/local/lib/python3.*`, `/usr/lib/python3*`):
//!    `nvidia/cu13/lib` (CUDA 13 wheels) and `nvidia/cuda_nvrtc/lib` (`nvidia-cuda-nvrtc-cu12`).
//!
//! In each directory `libnvrtc.so.13` comes before `libnvrtc.so.12` and the unversioned
//! `libnvrtc.so`. When nothing is found, cudarc's own open by name (the loader's cache) is the
//! last resort. Only paths are scanned here: no process (such as `python3`) is started.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The library file names tried in each directory, in order.
pub const LIB_NAMES: &[&str] = &["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"];

/// A directory searched for libnvrtc, and why it is on the list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    /// The directory (or, for a pattern that matched nothing, the pattern itself).
    pub dir: PathBuf,
    /// Where it came from: `LD_LIBRARY_PATH`, `CUDA_PATH`, `CUDA_HOME`, `toolkit`, `system`,
    /// `python wheel`.
    pub source: &'static str,
}

/// A libnvrtc file found in a [`Place`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Full path of the file.
    pub path: PathBuf,
    /// The place's source.
    pub source: &'static str,
}

/// The directories searched, in order, for the real environment and file system.
pub fn places() -> Vec<Place> {
    places_with(|k| std::env::var_os(k), Path::new("/"))
}

/// The directories searched, in order, reading environment variables through `var` and taking
/// the fixed system directories (`/usr/local/cuda…`, `/usr/lib/…`, `/opt/cuda`, site-packages)
/// under `root` (`/` outside tests).
pub fn places_with(var: impl Fn(&str) -> Option<OsString>, root: &Path) -> Vec<Place> {
    let mut out = Vec::new();
    let mut push = |dir: PathBuf, source: &'static str| {
        if !out.iter().any(|p: &Place| p.dir == dir) {
            out.push(Place { dir, source });
        }
    };
    if let Some(ld) = var("LD_LIBRARY_PATH") {
        for dir in std::env::split_paths(&ld).filter(|d| !d.as_os_str().is_empty()) {
            push(dir, "LD_LIBRARY_PATH");
        }
    }
    for key in ["CUDA_PATH", "CUDA_HOME"] {
        if let Some(base) = var(key).filter(|v| !v.is_empty()) {
            let base = PathBuf::from(base);
            push(base.join("lib64"), key);
            push(base.join("lib"), key);
        }
    }
    let sys = |p: &str| root.join(p.trim_start_matches('/'));
    push(sys("/usr/local/cuda/lib64"), "toolkit");
    let versioned = newest_first(&sys("/usr/local"), "cuda-");
    if versioned.is_empty() {
        push(sys("/usr/local/cuda-*/lib64"), "toolkit");
    }
    for d in versioned {
        push(d.join("lib64"), "toolkit");
    }
    push(sys(&format!("/usr/lib/{}", multiarch())), "system");
    push(sys("/opt/cuda/lib64"), "toolkit");
    for site in site_packages(&var, root) {
        push(site.join("nvidia").join("cu13").join("lib"), "python wheel");
        push(site.join("nvidia").join("cuda_nvrtc").join("lib"), "python wheel");
    }
    out
}

/// `x86_64-linux-gnu` or `aarch64-linux-gnu`: the Debian multiarch directory of this target.
fn multiarch() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "aarch64-linux-gnu"
    } else {
        "x86_64-linux-gnu"
    }
}

/// The entries of `parent` named `prefix…`, sorted by the version numbers after the prefix,
/// newest first: `cuda-13.0`, `cuda-12.10`, `cuda-12.9`.
fn newest_first(parent: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(parent) else { return Vec::new() };
    let mut found: Vec<(Vec<u64>, String, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let rest = name.strip_prefix(prefix)?;
            let version = rest.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).map(|s| s.parse().unwrap_or(0)).collect();
            Some((version, name, e.path()))
        })
        .collect();
    found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    found.into_iter().map(|(_, _, p)| p).collect()
}

/// Site-packages directories that exist, scanned (no Python is run): the active virtual
/// environment and conda environment, the user's, then the system's.
fn site_packages(var: &impl Fn(&str) -> Option<OsString>, root: &Path) -> Vec<PathBuf> {
    let mut bases: Vec<PathBuf> = Vec::new();
    for key in ["VIRTUAL_ENV", "CONDA_PREFIX"] {
        if let Some(v) = var(key).filter(|v| !v.is_empty()) {
            bases.push(PathBuf::from(v).join("lib"));
        }
    }
    if let Some(home) = var("HOME").filter(|v| !v.is_empty()) {
        bases.push(PathBuf::from(home).join(".local").join("lib"));
    }
    bases.push(root.join("usr/local/lib"));
    bases.push(root.join("usr/lib"));
    let mut out = Vec::new();
    for base in bases {
        for py in newest_first(&base, "python3") {
            for leaf in ["site-packages", "dist-packages"] {
                let d = py.join(leaf);
                if d.is_dir() && !out.contains(&d) {
                    out.push(d);
                }
            }
        }
    }
    out
}

/// The libnvrtc files in `places`, in search order ([`LIB_NAMES`] order within a place).
pub fn candidates(places: &[Place]) -> Vec<Candidate> {
    places
        .iter()
        .flat_map(|p| LIB_NAMES.iter().map(move |n| (p, p.dir.join(n))))
        .filter(|(_, path)| path.is_file())
        .map(|(p, path)| Candidate { path, source: p.source })
        .collect()
}

/// What the lookup found and loaded, once per process.
#[derive(Clone, Debug)]
pub struct Lookup {
    /// Every directory searched, in order.
    pub places: Vec<Place>,
    /// Every libnvrtc file found, in order.
    pub candidates: Vec<Candidate>,
    /// The candidate loaded by full path (the first that loads); `None`: none did, and cudarc's
    /// open by name is all that is left.
    pub loaded: Option<Candidate>,
    /// Candidates that failed to load, with `dlerror()`'s message.
    pub failures: Vec<(PathBuf, String)>,
}

static LOOKUP: OnceLock<Lookup> = OnceLock::new();

/// Searches [`places`] and loads the first libnvrtc that loads, by full path, once per process;
/// later calls return the same answer. Call before anything opens NVRTC by name.
pub fn ensure_loaded() -> &'static Lookup {
    LOOKUP.get_or_init(|| {
        let places = places();
        let candidates = candidates(&places);
        let mut failures = Vec::new();
        let mut loaded = None;
        for c in &candidates {
            preload_builtins(&c.path);
            match dl::open(&c.path) {
                Ok(()) => {
                    loaded = Some(c.clone());
                    break;
                }
                Err(e) => failures.push((c.path.clone(), e)),
            }
        }
        Lookup { places, candidates, loaded, failures }
    })
}

/// Loads `libnvrtc-builtins.so.<major>*` beside a `libnvrtc.so.<major>` (NVRTC opens it by
/// name when it compiles); a failure is left for NVRTC to report.
fn preload_builtins(nvrtc: &Path) {
    let (Some(dir), Some(name)) = (nvrtc.parent(), nvrtc.file_name().and_then(|n| n.to_str())) else { return };
    let Some(major) = name.strip_prefix("libnvrtc.so.") else { return };
    let prefix = format!("libnvrtc-builtins.so.{major}");
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.filter_map(Result::ok) {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = dl::open(&e.path());
        }
    }
}

/// The file a loaded symbol lives in (`dladdr`), e.g. the libnvrtc cudarc really opened.
pub fn file_of(addr: *const std::ffi::c_void) -> Option<PathBuf> {
    dl::file_of(addr)
}

#[cfg(target_os = "linux")]
mod dl {
    use std::ffi::{c_char, c_int, c_void, CStr, CString};
    use std::os::unix::ffi::OsStrExt;
    use std::path::{Path, PathBuf};

    const RTLD_NOW: c_int = 2;

    #[repr(C)]
    struct DlInfo {
        dli_fname: *const c_char,
        dli_fbase: *mut c_void,
        dli_sname: *const c_char,
        dli_saddr: *mut c_void,
    }

    extern "C" {
        fn dlopen(filename: *const c_char, flag: c_int) -> *mut c_void;
        fn dlerror() -> *mut c_char;
        fn dladdr(addr: *const c_void, info: *mut DlInfo) -> c_int;
    }

    /// `dlopen(path, RTLD_NOW)`, never closed: the library stays loaded for the process's life.
    pub fn open(path: &Path) -> Result<(), String> {
        let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| "a NUL byte in the path".to_owned())?;
        // SAFETY: `c` is a live NUL-terminated path. Loading runs the library's initialisers, as
        // cudarc's own open would; the handle is deliberately leaked.
        let handle = unsafe { dlopen(c.as_ptr(), RTLD_NOW) };
        if !handle.is_null() {
            return Ok(());
        }
        // SAFETY: dlerror returns NULL or a NUL-terminated message valid until the next dl call
        // of this thread; it is copied at once.
        let msg = unsafe { dlerror() };
        Err(if msg.is_null() {
            "dlopen failed".to_owned()
        } else {
            // SAFETY: non-null, NUL-terminated (above).
            unsafe { CStr::from_ptr(msg) }.to_string_lossy().into_owned()
        })
    }

    pub fn file_of(addr: *const c_void) -> Option<PathBuf> {
        let mut info = DlInfo {
            dli_fname: std::ptr::null(),
            dli_fbase: std::ptr::null_mut(),
            dli_sname: std::ptr::null(),
            dli_saddr: std::ptr::null_mut(),
        };
        // SAFETY: dladdr only reads its own tables for `addr` and fills `info`.
        let found = unsafe { dladdr(addr, &mut info) };
        if found == 0 || info.dli_fname.is_null() {
            return None;
        }
        // SAFETY: non-null and NUL-terminated, owned by the loader while the library is loaded
        // (it never is unloaded: see `open`).
        let name = unsafe { CStr::from_ptr(info.dli_fname) };
        Some(PathBuf::from(std::ffi::OsStr::from_bytes(name.to_bytes())))
    }
}

#[cfg(not(target_os = "linux"))]
mod dl {
    use std::path::{Path, PathBuf};

    pub fn open(_path: &Path) -> Result<(), String> {
        Err("loading by path is implemented on Linux only".into())
    }

    pub fn file_of(_addr: *const std::ffi::c_void) -> Option<PathBuf> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let d = std::env::temp_dir().join(format!("ringbridge-locate-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            Self(d)
        }
        fn lib(&self, rel: &str, name: &str) -> PathBuf {
            let dir = self.0.join(rel);
            std::fs::create_dir_all(&dir).unwrap();
            let f = dir.join(name);
            std::fs::write(&f, b"not a real library").unwrap();
            f
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn env(pairs: &[(&str, PathBuf)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone().into_os_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn lookup_order_with_fake_dirs() {
        let t = TempDir::new("order");
        let root = t.0.join("root");
        let wheel = t.lib("root/usr/local/lib/python3.12/dist-packages/nvidia/cu13/lib", "libnvrtc.so.13");
        let opt = t.lib("root/opt/cuda/lib64", "libnvrtc.so.13");
        let system = t.lib(&format!("root/usr/lib/{}", multiarch()), "libnvrtc.so.12");
        let old = t.lib("root/usr/local/cuda-12.9/lib64", "libnvrtc.so.12");
        let newer = t.lib("root/usr/local/cuda-12.10/lib64", "libnvrtc.so.12");
        let newest = t.lib("root/usr/local/cuda-13.0/lib64", "libnvrtc.so.13");
        let link = t.lib("root/usr/local/cuda/lib64", "libnvrtc.so.13");
        let home = t.lib("home/lib64", "libnvrtc.so.13");
        let cuda_path_12 = t.lib("cudapath/lib64", "libnvrtc.so.12");
        let cuda_path_13 = t.lib("cudapath/lib64", "libnvrtc.so.13");
        let cuda_path_lib = t.lib("cudapath/lib", "libnvrtc.so");
        let ld = t.lib("ld", "libnvrtc.so.13");
        let vars = env(&[
            ("LD_LIBRARY_PATH", std::env::join_paths([t.0.join("nothing-here"), t.0.join("ld")]).unwrap().into()),
            ("CUDA_PATH", t.0.join("cudapath")),
            ("CUDA_HOME", t.0.join("home")),
        ]);
        let places = places_with(vars, &root);
        let found: Vec<PathBuf> = candidates(&places).into_iter().map(|c| c.path).collect();
        // LD_LIBRARY_PATH, CUDA_PATH (.13 before .12, lib64 before lib), CUDA_HOME, the toolkit
        // link, versioned toolkits newest first, the distribution, /opt/cuda, the wheel.
        assert_eq!(found, vec![ld, cuda_path_13, cuda_path_12, cuda_path_lib, home, link, newest, newer, old, system, opt, wheel]);
        let sources: Vec<&str> = candidates(&places).iter().map(|c| c.source).collect();
        assert_eq!(sources[0], "LD_LIBRARY_PATH");
        assert_eq!(sources[1], "CUDA_PATH");
        assert_eq!(sources[4], "CUDA_HOME");
        assert_eq!(*sources.last().unwrap(), "python wheel");
        // Every place is listed, found or not (doctor prints them).
        assert!(places.iter().any(|p| p.dir == t.0.join("nothing-here")));
    }

    #[test]
    fn empty_system_lists_every_place_and_finds_nothing() {
        let t = TempDir::new("empty");
        let places = places_with(|_| None, &t.0);
        let dirs: Vec<String> = places.iter().map(|p| p.dir.strip_prefix(&t.0).unwrap().display().to_string()).collect();
        assert_eq!(
            dirs,
            vec![
                "usr/local/cuda/lib64".to_owned(),
                "usr/local/cuda-*/lib64".into(),
                format!("usr/lib/{}", multiarch()),
                "opt/cuda/lib64".into()
            ]
        );
        assert!(candidates(&places).is_empty());
    }

    #[test]
    fn cuda_path_wheel_variants() {
        let t = TempDir::new("wheel");
        let venv = t.0.join("venv");
        let cu12 = t.lib("venv/lib/python3.11/site-packages/nvidia/cuda_nvrtc/lib", "libnvrtc.so.12");
        let cu13 = t.lib("venv/lib/python3.11/site-packages/nvidia/cu13/lib", "libnvrtc.so.13");
        let places = places_with(env(&[("VIRTUAL_ENV", venv)]), &t.0.join("root"));
        let found: Vec<PathBuf> = candidates(&places).into_iter().map(|c| c.path).collect();
        assert_eq!(found, vec![cu13, cu12]);
    }

    #[test]
    fn a_dummy_file_fails_to_load_with_the_loaders_message() {
        let t = TempDir::new("dl");
        let f = t.lib("x", "libnvrtc.so.13");
        let err = dl::open(&f).unwrap_err();
        assert!(!err.is_empty());
    }
}
