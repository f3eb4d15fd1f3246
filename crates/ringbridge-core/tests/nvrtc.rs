//! The kernels compile through the same NVRTC path the CUDA backend uses, without a GPU: CI
//! installs NVRTC 13.0 from the `nvidia-cuda-nvrtc` wheel,
//! so a kernel that does not compile fails CI. They are ignored by a plain `cargo test` (NVRTC is
//! not on a developer machine by default): CI runs them with `--include-ignored`, and there a
//! missing NVRTC fails them, never passes them.

use ringbridge_core::backend::cuda::{PROTOCOL_HEADER, RING_KERNEL_SOURCE};
use ringbridge_core::cuda::nvrtc::{self, ImageKind};
use ringbridge_core::{Error, ErrorCode};

const HEADERS: &[(&str, &str)] = &[("ringbridge.cuh", PROTOCOL_HEADER)];

fn require_nvrtc() {
    assert!(nvrtc::nvrtc_present(), "libnvrtc cannot be loaded: set LD_LIBRARY_PATH to CUDA's lib64 (CI uses the nvidia-cuda-nvrtc wheel)");
}

#[test]
#[ignore = "needs NVRTC: CI runs it with --include-ignored"]
fn ring_kernel_compiles_to_a_cubin_for_hopper_and_to_ptx() {
    require_nvrtc();
    let cubin = nvrtc::compile(RING_KERNEL_SOURCE, "ring_kernel.cu", HEADERS, (9, 0), true).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cubin.kind, ImageKind::Cubin);
    assert_eq!(&cubin.bytes[..4], b"\x7fELF", "a CUBIN is an ELF image");
    let has = |hay: &[u8], needle: &str| hay.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(has(&cubin.bytes, "rb_ring_kernel"), "the kernel's entry point is in the CUBIN");
    assert!(has(&cubin.bytes, "rb_grid"), "the grid-state global is in the CUBIN");
    let ptx = nvrtc::compile(RING_KERNEL_SOURCE, "ring_kernel.cu", HEADERS, (9, 0), false).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ptx.kind, ImageKind::Ptx);
    assert_eq!(ptx.bytes.last(), Some(&0), "PTX handed to the driver ends in NUL");
    let text = String::from_utf8_lossy(&ptx.bytes);
    assert!(text.contains(".entry rb_ring_kernel"), "PTX entry");
    assert!(text.contains(".sys"), "system-scope loads/stores of the protocol are in the PTX");
}

#[test]
#[ignore = "needs NVRTC: CI runs it with --include-ignored"]
fn a_compile_error_carries_the_log_with_file_and_line() {
    require_nvrtc();
    let source = "#include \"ringbridge.cuh\"\nextern \"C\" __global__ void k() {\n  int x = undeclared_name;\n}\n";
    let err = nvrtc::compile(source, "broken.cu", HEADERS, (9, 0), true).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Compile);
    let Error::Compile { log, options, .. } = &err else { panic!("{err:?}") };
    assert!(log.contains("broken.cu(3)"), "line number in the log: {log}");
    assert!(log.contains("undeclared_name"), "{log}");
    assert!(options.contains("--gpu-architecture=sm_90"), "{options}");
}

#[test]
#[ignore = "needs NVRTC: CI runs it with --include-ignored"]
fn the_disk_cache_returns_the_same_image_and_misses_on_any_change() {
    require_nvrtc();
    let dir = std::env::temp_dir().join(format!("ringbridge-nvrtc-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::env::set_var("RINGBRIDGE_CACHE_DIR", &dir);
    let first = nvrtc::compile_cached(RING_KERNEL_SOURCE, "ring_kernel.cu", HEADERS, (9, 0)).unwrap();
    let second = nvrtc::compile_cached(RING_KERNEL_SOURCE, "ring_kernel.cu", HEADERS, (9, 0)).unwrap();
    let other_arch = nvrtc::compile_cached(RING_KERNEL_SOURCE, "ring_kernel.cu", HEADERS, (8, 0)).unwrap();
    let changed = format!("{RING_KERNEL_SOURCE}\n// changed\n");
    let other_source = nvrtc::compile_cached(&changed, "ring_kernel.cu", HEADERS, (9, 0)).unwrap();
    std::env::remove_var("RINGBRIDGE_CACHE_DIR");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!first.cached && second.cached, "second compile is a cache hit");
    assert_eq!(first.bytes, second.bytes);
    assert!(!other_arch.cached && !other_source.cached, "arch and source are part of the key");
}

const SCHEMA: &str = "struct rb_input { float a; unsigned int n; };\nstruct rb_output { double product; };\nstatic_assert(sizeof(rb_input) == 8, \"rb_input\");\n";

fn user(source: &str, entry: &str) -> ringbridge_core::backend::user::UserKernel {
    ringbridge_core::backend::user::UserKernel { source: source.into(), entry: entry.into(), schema_header: SCHEMA.into(), max_replies: 0 }
}

#[test]
#[ignore = "needs NVRTC: CI runs it with --include-ignored"]
fn a_user_handler_compiles_into_the_ring_kernel() {
    require_nvrtc();
    let k = user(
        "__device__ unsigned int multiply(const rb_input& in, rb_output& out, rb_context& ctx) {\n  if (in.n == 0) { ctx.detail = 7; return 300; }\n  out.product = double(in.a) * in.n;\n  return 0;\n}\n",
        "multiply",
    );
    let image = k.compile((9, 0)).unwrap_or_else(|e| panic!("{e}"));
    let has = |needle: &str| image.bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(has("rb_ring_kernel"), "the ring kernel's entry point is in the image");
}

#[test]
#[ignore = "needs NVRTC: CI runs it with --include-ignored"]
fn user_compile_errors_name_the_users_file_and_line() {
    require_nvrtc();
    let k = user("__device__ unsigned int f(const rb_input& in, rb_output& out, rb_context& ctx) {\n  return in.missing_field;\n}\n", "f");
    let err = k.compile((9, 0)).unwrap_err();
    let Error::Compile { log, .. } = &err else { panic!("{err:?}") };
    assert!(log.contains("handler.cu(2)"), "the user's own line: {log}");
    assert!(log.contains("missing_field"), "{log}");
    // A handler declared over other types than the launch's schemas is a compile error at
    // launch, never garbage at run time.
    let k =
        user("struct other { int x; };\n__device__ unsigned int g(const other& in, rb_output& out, rb_context& ctx) { return 0; }\n", "g");
    let Error::Compile { log, .. } = k.compile((9, 0)).unwrap_err() else { panic!() };
    assert!(log.contains("ring_kernel.cu") || log.contains("no suitable") || log.contains("argument"), "{log}");
    let bad_entry = user("", "not an identifier").compile((9, 0)).unwrap_err();
    assert_eq!(bad_entry.code(), ErrorCode::InvalidArgument, "{bad_entry}");
}

#[test]
#[ignore = "needs NVRTC: CI runs it with --include-ignored"]
fn nvrtc_enforces_the_offset_asserts_of_a_schema_header() {
    require_nvrtc();
    // The generated headers' offset check under NVRTC 13.0 (ts/cuda.ts): a wrong offset must
    // stop the compile, or the asserts would prove nothing on the GPU side.
    let header = |offset: u32| {
        format!(
            "#define RB_OFFSETOF(T, m) ((unsigned long long)__INTADDR__(&(((T*)0)->m)))\nstruct rb_input {{ unsigned char a; unsigned char _rb_pad0[7]; double b; }};\ntypedef rb_input rb_output;\nstatic_assert(RB_OFFSETOF(rb_input, b) == {offset}, \"rb_input.b\");\n"
        )
    };
    let source = "__device__ unsigned int f(const rb_input& in, rb_output& out, rb_context&) { out = in; return 0; }";
    let k = |offset| ringbridge_core::backend::user::UserKernel {
        source: source.into(),
        entry: "f".into(),
        schema_header: header(offset),
        max_replies: 0,
    };
    k(8).compile((9, 0)).unwrap_or_else(|e| panic!("the true offset compiles: {e}"));
    let Error::Compile { log, .. } = k(4).compile((9, 0)).unwrap_err() else { panic!("a wrong offset compiled") };
    assert!(log.contains("static assertion failed") || log.contains("static_assert"), "{log}");
}

#[test]
#[ignore = "needs NVRTC: CI runs it with --include-ignored"]
fn a_handler_with_several_replies_compiles() {
    require_nvrtc();
    let k = ringbridge_core::backend::user::UserKernel {
        source: "__device__ unsigned int fan(const rb_input& in, rb_replies& out, rb_context&) {\n  for (unsigned int i = 0; i < in.n && i < 4; ++i) { rb_output r; r.product = i; out.push(r); }\n  return 0;\n}\n".into(),
        entry: "fan".into(),
        schema_header: SCHEMA.into(),
        max_replies: 4,
    };
    k.compile((9, 0)).unwrap_or_else(|e| panic!("{e}"));
    let too_many = ringbridge_core::backend::user::UserKernel { max_replies: 5000, ..k };
    assert_eq!(too_many.compile((9, 0)).unwrap_err().code(), ErrorCode::InvalidArgument);
}
