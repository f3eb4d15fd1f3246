//! The protocol's three spellings agree: `docs/PROTOCOL.md`, `protocol.rs` and
//! `kernels/ringbridge.cuh` (layout, constants, example), `docs/errors.md` and `ErrorCode::ALL`;
//! plus the frame encoding, the region layout and the wrapping index arithmetic of spec §7.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::mem::size_of_val;
use std::path::{Path, PathBuf};
use std::process::Command;

use ringbridge_core::backend::cuda::HANDLER_TRAP;
use ringbridge_core::protocol::{
    align_up, free, kernel_error, occupied, offsets, slot_of, ErrorRecord, FrameHeader, KernelState, RegionLayout, RingConfig, CONSTANTS,
    CONTROL_BLOCK_BYTES, FIELD_OFFSETS, FLAG_ERROR, FRAME_HEADER_BYTES, LINE_BYTES, MAGIC, MAX_CAPACITY, MAX_SLOT_SIZE, MIN_SLOT_SIZE,
    REGION_ALIGN, VERSION,
};
use ringbridge_core::transport::Region;
use ringbridge_core::ErrorCode;

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(relative)
}

fn read(relative: &str) -> String {
    let path = repo_path(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Cells of a markdown table row, trimmed; `None` for a line that is not a row.
fn cells(line: &str) -> Option<Vec<&str>> {
    let line = line.trim();
    let inner = line.strip_prefix('|')?.strip_suffix('|')?;
    Some(inner.split('|').map(str::trim).collect())
}

/// Body rows of the first table whose header starts with `header` (separator row skipped).
fn table<'a>(doc: &'a str, header: &[&str]) -> Vec<Vec<&'a str>> {
    let mut lines = doc.lines();
    lines
        .by_ref()
        .find(|l| cells(l).is_some_and(|c| c.len() >= header.len() && c[..header.len()] == *header))
        .unwrap_or_else(|| panic!("no table with header {header:?}"));
    let separator = lines.next().and_then(cells).expect("table has a separator row");
    assert!(separator.iter().all(|c| c.chars().all(|ch| ch == '-' || ch == ':')), "bad separator {separator:?}");
    lines.map_while(cells).collect()
}

fn backticked(cell: &str) -> &str {
    cell.strip_prefix('`').and_then(|c| c.strip_suffix('`')).unwrap_or_else(|| panic!("expected a `backticked` name, got {cell:?}"))
}

/// Size of every control-block field, taken from the Rust types of a real control block.
fn field_sizes() -> BTreeMap<&'static str, usize> {
    let ring = RingConfig { capacity: 1, slot_size: MIN_SLOT_SIZE };
    let region = Region::alloc(ring, ring).unwrap();
    let cb = region.control();
    BTreeMap::from([
        ("magic", size_of_val(&cb.magic)),
        ("version", size_of_val(&cb.version)),
        ("input_capacity", size_of_val(&cb.input_capacity)),
        ("input_slot_size", size_of_val(&cb.input_slot_size)),
        ("output_capacity", size_of_val(&cb.output_capacity)),
        ("output_slot_size", size_of_val(&cb.output_slot_size)),
        ("user_arg", size_of_val(&cb.user_arg)),
        ("handler_id", size_of_val(&cb.handler_id)),
        ("input_buffer", size_of_val(&cb.input_buffer)),
        ("output_buffer", size_of_val(&cb.output_buffer)),
        ("input_tail_addr", size_of_val(&cb.input_tail_addr)),
        ("output_tail_addr", size_of_val(&cb.output_tail_addr)),
        ("output_head_addr", size_of_val(&cb.output_head_addr)),
        ("input_producer", size_of_val(&cb.input_producer)),
        ("direct_max", size_of_val(&cb.direct_max)),
        ("host_input_buffer", size_of_val(&cb.host_input_buffer)),
        ("host_output_buffer", size_of_val(&cb.host_output_buffer)),
        ("direct_upto_addr", size_of_val(&cb.direct_upto_addr)),
        ("active", size_of_val(&cb.active)),
        ("terminate", size_of_val(&cb.terminate)),
        ("host_waiting", size_of_val(&cb.host_waiting)),
        ("state", size_of_val(&cb.state)),
        ("error_code", size_of_val(&cb.error_code)),
        ("error_count", size_of_val(&cb.error_count)),
        ("kernel_sleeping", size_of_val(&cb.kernel_sleeping)),
        ("messages_processed", size_of_val(&cb.messages_processed)),
        ("last_activity", size_of_val(&cb.last_activity)),
        ("input_head", size_of_val(&cb.input_head.value)),
        ("input_tail", size_of_val(&cb.input_tail.value)),
        ("output_head", size_of_val(&cb.output_head.value)),
        ("output_tail", size_of_val(&cb.output_tail.value)),
    ])
}

#[test]
fn spec_table_matches_field_offsets() {
    let doc = read("docs/PROTOCOL.md");
    let rows = table(&doc, &["field", "offset", "size"]);
    let mut spec: Vec<(&str, usize, usize)> = Vec::new();
    for row in &rows {
        let name = backticked(row[0]);
        let offset = row[1].parse().unwrap_or_else(|_| panic!("{name}: offset {:?} is not a decimal number", row[1]));
        let size = row[2].parse().unwrap_or_else(|_| panic!("{name}: size {:?} is not a decimal number", row[2]));
        spec.push((name, offset, size));
    }

    let code: BTreeMap<&str, usize> = FIELD_OFFSETS.iter().copied().collect();
    assert_eq!(code.len(), FIELD_OFFSETS.len(), "FIELD_OFFSETS repeats a name");
    let documented: BTreeMap<&str, usize> = spec.iter().map(|&(n, o, _)| (n, o)).collect();
    assert_eq!(documented.len(), spec.len(), "the spec's field table repeats a name");
    for (name, offset) in &code {
        assert_eq!(documented.get(name), Some(offset), "FIELD_OFFSETS entry `{name}` at {offset} is not in the spec table");
    }
    for (name, offset) in &documented {
        assert_eq!(code.get(name), Some(offset), "spec table row `{name}` at {offset} is not in FIELD_OFFSETS");
    }
    // Same order, too: the table is the field list JS receives.
    let names: Vec<&str> = spec.iter().map(|s| s.0).collect();
    let code_names: Vec<&str> = FIELD_OFFSETS.iter().map(|f| f.0).collect();
    assert_eq!(names, code_names, "spec table order differs from FIELD_OFFSETS");

    let sizes = field_sizes();
    assert_eq!(sizes.len(), FIELD_OFFSETS.len(), "field_sizes() must cover every field");
    for &(name, offset, size) in &spec {
        assert_eq!(sizes.get(name), Some(&size), "spec size of `{name}` differs from its Rust type");
        assert_eq!(offset % size, 0, "`{name}` is not naturally aligned");
        assert!(offset + size <= CONTROL_BLOCK_BYTES, "`{name}` runs past the control block");
    }
    for pair in spec.windows(2) {
        assert!(pair[0].1 + pair[0].2 <= pair[1].1, "`{}` overlaps `{}`", pair[0].0, pair[1].0);
    }
}

#[test]
fn spec_frame_table_matches_offsets() {
    let doc = read("docs/PROTOCOL.md");
    let rows = table(&doc, &["frame field", "offset", "size"]);
    let got: Vec<(&str, usize, usize)> = rows.iter().map(|r| (backticked(r[0]), r[1].parse().unwrap(), r[2].parse().unwrap())).collect();
    assert_eq!(
        got,
        [
            ("length", offsets::FRAME_LENGTH, 4),
            ("type_id", offsets::FRAME_TYPE_ID, 2),
            ("flags", offsets::FRAME_FLAGS, 2),
            ("correlation_id", offsets::FRAME_CORRELATION_ID, 8),
        ]
    );
    assert_eq!(got.iter().map(|f| f.2).sum::<usize>(), FRAME_HEADER_BYTES);
}

#[test]
fn tested_example_matches_doctest() {
    let lib = read("crates/ringbridge-core/src/lib.rs");
    let doc_lines: Vec<&str> = lib.lines().filter_map(|l| l.strip_prefix("//!")).map(|l| l.strip_prefix(' ').unwrap_or(l)).collect();
    let start = doc_lines.iter().position(|l| *l == "```").expect("lib.rs has a doctest") + 1;
    let len = doc_lines[start..].iter().position(|l| *l == "```").expect("doctest ends");
    let doctest = doc_lines[start..start + len].join("\n");

    let spec = read("docs/PROTOCOL.md");
    let section = spec.split("## 13. Tested example").nth(1).expect("spec has §13");
    let body = section.split("```rust\n").nth(1).expect("§13 has a rust block");
    let example = body.split("\n```").next().unwrap();
    assert_eq!(example, doctest, "PROTOCOL.md §13 differs from the lib.rs doctest");
}

/// A C++ compiler: `$CXX`, else the first of c++, g++ and clang++ that runs.
fn cxx() -> Option<String> {
    let candidates = std::env::var("CXX").into_iter().chain(["c++".to_owned(), "g++".to_owned(), "clang++".to_owned()]);
    candidates.into_iter().find(|c| Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()))
}

/// The C++ compiler the header check needs. Without one the check fails rather than passes
/// unchecked; a machine that cannot build C++ opts out knowingly with `RINGBRIDGE_ALLOW_NO_CXX=1`
/// (CI has g++ and never sets it).
fn require_cxx() -> Option<String> {
    if let Some(compiler) = cxx() {
        return Some(compiler);
    }
    assert!(
        std::env::var("RINGBRIDGE_ALLOW_NO_CXX").as_deref() == Ok("1"),
        "no C++ compiler ($CXX, c++, g++, clang++), so kernels/ringbridge.cuh cannot be checked against protocol.rs: \
         install one, or set RINGBRIDGE_ALLOW_NO_CXX=1 to skip this check knowingly"
    );
    eprintln!("skipped: no C++ compiler, and RINGBRIDGE_ALLOW_NO_CXX=1");
    None
}

/// `#define`s of the header that are not protocol numbers, so have no entry in `CONSTANTS`: the
/// host/device qualifiers, the offset macro, a tunable, the test-only handler (checked against
/// its own Rust constant below) and the kernel's own outcome kinds.
const HEADER_ONLY: &[&str] =
    &["RB_HOST_DEVICE", "RB_DEVICE", "RB_OFFSETOF", "RB_SPIN_LIMIT", "RB_HANDLER_TRAP", "RB_OUTCOME_REPLY", "RB_OUTCOME_ERROR"];

/// Compiles `kernels/ringbridge.cuh` as host C++ with a program that prints every offset, size
/// and constant, and compares them with `FIELD_OFFSETS`, `offsets::FRAME_*` and the whole of
/// `protocol::CONSTANTS` (each `NAME` there is `RB_NAME` in the header). A constant added to
/// `CONSTANTS` without its `RB_` twin fails the compile with an `#error` naming it; a header
/// `#define` that is neither in `CONSTANTS` nor in `HEADER_ONLY` fails too.
#[test]
fn cuda_header_matches_layout_and_constants() {
    let source = read("kernels/ringbridge.cuh");
    let mut names: Vec<&str> = CONSTANTS.iter().map(|c| c.0).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), CONSTANTS.len(), "protocol::CONSTANTS repeats a name");
    for line in source.lines() {
        let Some(rest) = line.trim_start().strip_prefix("#define ") else { continue };
        let macro_name = rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).next().unwrap();
        let in_table = macro_name.strip_prefix("RB_").is_some_and(|n| names.binary_search(&n).is_ok());
        assert!(
            in_table || HEADER_ONLY.contains(&macro_name),
            "kernels/ringbridge.cuh defines {macro_name}, which protocol::CONSTANTS lacks: add it there if it is a \
             protocol number, else to HEADER_ONLY in this test"
        );
    }

    let Some(compiler) = require_cxx() else { return };
    let header = repo_path("kernels/ringbridge.cuh").canonicalize().expect("kernels/ringbridge.cuh exists");
    let mut program = format!("#include \"{}\"\n#include <cstdio>\n", header.display());
    for (name, _) in CONSTANTS {
        writeln!(program, "#ifndef RB_{name}\n#error \"RB_{name} missing: protocol::CONSTANTS has {name}\"\n#endif").unwrap();
    }
    program.push_str("int main() {\n");
    for (name, _) in FIELD_OFFSETS {
        writeln!(program, "  std::printf(\"field {name} %zu\\n\", offsetof(rb_control_block, {name}));").unwrap();
    }
    for name in ["length", "type_id", "flags", "correlation_id"] {
        writeln!(program, "  std::printf(\"frame {name} %zu\\n\", offsetof(rb_frame_header, {name}));").unwrap();
    }
    for (name, _) in CONSTANTS {
        writeln!(program, "  std::printf(\"const {name} %llu\\n\", (unsigned long long)(RB_{name}));").unwrap();
    }
    program.push_str(concat!(
        "  std::printf(\"const HANDLER_TRAP %llu\\n\", (unsigned long long)(RB_HANDLER_TRAP));\n",
        "  std::printf(\"size control_block %zu\\n\", sizeof(rb_control_block));\n",
        "  std::printf(\"align control_block %zu\\n\", alignof(rb_control_block));\n",
        "  std::printf(\"size frame_header %zu\\n\", sizeof(rb_frame_header));\n",
        "  return 0;\n}\n",
    ));

    let dir = std::env::temp_dir().join(format!("ringbridge-protocol-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let source = dir.join("layout.cpp");
    let binary = dir.join("layout");
    std::fs::write(&source, &program).unwrap();
    let compiled = Command::new(&compiler)
        .args(["-std=c++17", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&binary)
        .arg(&source)
        .output()
        .expect("run the C++ compiler");
    assert!(
        compiled.status.success(),
        "{compiler} could not compile kernels/ringbridge.cuh:\n{}",
        String::from_utf8_lossy(&compiled.stderr)
    );
    let run = Command::new(&binary).output().expect("run the layout program");
    assert!(run.status.success());
    let _ = std::fs::remove_dir_all(&dir);

    let stdout = String::from_utf8(run.stdout).unwrap();
    let printed: BTreeMap<String, u64> = stdout
        .lines()
        .map(|l| {
            let mut it = l.split(' ');
            let (kind, name, value) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
            (format!("{kind} {name}"), value.parse().unwrap())
        })
        .collect();
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for (name, offset) in FIELD_OFFSETS {
        expected.insert(format!("field {name}"), *offset as u64);
    }
    for (name, offset) in [
        ("length", offsets::FRAME_LENGTH),
        ("type_id", offsets::FRAME_TYPE_ID),
        ("flags", offsets::FRAME_FLAGS),
        ("correlation_id", offsets::FRAME_CORRELATION_ID),
    ] {
        expected.insert(format!("frame {name}"), offset as u64);
    }
    for (name, value) in CONSTANTS {
        expected.insert(format!("const {name}"), *value);
    }
    expected.insert("const HANDLER_TRAP".into(), HANDLER_TRAP.into());
    expected.insert("size control_block".into(), CONTROL_BLOCK_BYTES as u64);
    expected.insert("align control_block".into(), LINE_BYTES as u64);
    expected.insert("size frame_header".into(), FRAME_HEADER_BYTES as u64);
    assert_eq!(printed, expected, "kernels/ringbridge.cuh disagrees with protocol.rs");
}

/// Every kernel error code has its name, and the table's `KERNEL_ERROR_*` entries are exactly
/// the codes `kernel_error::NAMES` names, in order.
#[test]
fn kernel_error_names_cover_every_code() {
    assert_eq!(kernel_error::NAMES.len(), kernel_error::SKIPPED as usize + 1, "kernel_error::NAMES ends at SKIPPED");
    let table: Vec<(String, u64)> = CONSTANTS
        .iter()
        .filter_map(|&(name, value)| name.strip_prefix("KERNEL_ERROR_").map(|n| (n.to_lowercase().replace('_', "-"), value)))
        .collect();
    let names: Vec<(String, u64)> = kernel_error::NAMES.iter().zip(0u64..).map(|(n, code)| ((*n).to_owned(), code)).collect();
    assert_eq!(table, names, "protocol::CONSTANTS' KERNEL_ERROR_* entries differ from kernel_error::NAMES");
}

#[test]
fn frame_header_round_trips() {
    let header = FrameHeader { length: 0x0102_0304, type_id: 0xA1B2, flags: FLAG_ERROR, correlation_id: u64::MAX - 5 };
    let mut slot = [0xEEu8; 64];
    header.write_to(&mut slot);
    assert_eq!(FrameHeader::read_from(&slot), header);
    // Little-endian, at the spec's offsets; the payload area is untouched.
    assert_eq!(slot[offsets::FRAME_LENGTH..offsets::FRAME_LENGTH + 4], [0x04, 0x03, 0x02, 0x01]);
    assert_eq!(slot[offsets::FRAME_TYPE_ID..offsets::FRAME_TYPE_ID + 2], [0xB2, 0xA1]);
    assert_eq!(slot[offsets::FRAME_FLAGS..offsets::FRAME_FLAGS + 2], [0x01, 0x00]);
    assert_eq!(slot[offsets::FRAME_CORRELATION_ID..offsets::FRAME_CORRELATION_ID + 8], (u64::MAX - 5).to_le_bytes());
    assert!(slot[FRAME_HEADER_BYTES..].iter().all(|&b| b == 0xEE));

    let zero = FrameHeader::default();
    zero.write_to(&mut slot);
    assert_eq!(FrameHeader::read_from(&slot), zero);

    let record = ErrorRecord { code: kernel_error::BAD_PAYLOAD, detail: 0xDEAD_BEEF };
    let bytes = record.to_bytes();
    assert_eq!(bytes.len(), ErrorRecord::BYTES);
    assert_eq!(bytes, [2, 0, 0, 0, 0xEF, 0xBE, 0xAD, 0xDE]);
    assert_eq!(ErrorRecord::from_bytes(&bytes), Some(record));
    assert_eq!(ErrorRecord::from_bytes(&bytes[..7]), None);
}

#[test]
fn region_layout_offsets() {
    assert_eq!(CONTROL_BLOCK_BYTES, 896);
    let small = RingConfig { capacity: 1, slot_size: 32 };
    let l = RegionLayout::new(small, small).unwrap();
    assert_eq!(l.input_offset, 896);
    assert_eq!(l.output_offset, 1024, "896 + 32 rounds up to the next 128");
    assert_eq!(l.total_bytes, 1152);

    let input = RingConfig { capacity: 8, slot_size: 64 };
    let output = RingConfig { capacity: 4, slot_size: 256 };
    let l = RegionLayout::new(input, output).unwrap();
    assert_eq!(l.input_offset, align_up(CONTROL_BLOCK_BYTES, REGION_ALIGN));
    assert_eq!(l.output_offset, 896 + 512);
    assert_eq!(l.total_bytes, 896 + 512 + 1024);
    for (cap, slot) in [(1u32, 32u32), (2, 64), (1 << 10, 128), (1 << 24, 32), (1, 1 << 20)] {
        let r = RingConfig { capacity: cap, slot_size: slot };
        let l = RegionLayout::new(r, small).unwrap();
        assert_eq!(l.input_offset % REGION_ALIGN, 0);
        assert_eq!(l.output_offset % REGION_ALIGN, 0);
        assert_eq!(l.total_bytes % REGION_ALIGN, 0);
        assert_eq!(l.output_offset, align_up(896 + cap as usize * slot as usize, 128));
        assert_eq!(l.total_bytes, align_up(l.output_offset + 32, 128));
    }

    // The limits of spec §7.
    let bad = [(0, 64), (3, 64), (MAX_CAPACITY * 2, 64), (8, 16), (8, 48), (8, MAX_SLOT_SIZE * 2)];
    for (capacity, slot_size) in bad {
        let r = RingConfig { capacity, slot_size };
        let e = RegionLayout::new(r, small).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument, "{capacity} x {slot_size}");
        assert!(RegionLayout::new(small, r).is_err());
    }
    assert_eq!(RingConfig { capacity: 8, slot_size: 64 }.max_payload(), 48);

    // An initialised region carries the layout in its setup line (L1).
    let region = Region::alloc(input, output).unwrap();
    let cb = region.control();
    let relaxed = ringbridge_core::Ordering::Relaxed;
    assert_eq!(cb.magic.load(relaxed), MAGIC);
    assert_eq!(cb.version.load(relaxed), VERSION);
    assert_eq!(cb.active.load(relaxed), 1);
    assert_eq!(cb.state.load(relaxed), KernelState::Launching as u32);
    let base = region.base_ptr() as u64;
    assert_eq!(base % REGION_ALIGN as u64, 0);
    assert_eq!(cb.input_buffer.load(relaxed), base + 896);
    assert_eq!(cb.output_buffer.load(relaxed), base + 896 + 512);
}

#[test]
fn index_arithmetic_wraps() {
    let cap = 8u32;
    assert_eq!(slot_of(0, cap), 0);
    assert_eq!(slot_of(7, cap), 7);
    assert_eq!(slot_of(8, cap), 0);
    assert_eq!(slot_of(u64::MAX, cap), 7);
    assert_eq!(slot_of(u64::MAX, 1), 0);
    assert_eq!(slot_of(u64::MAX, MAX_CAPACITY), (MAX_CAPACITY - 1) as usize);

    // Empty and full, far from zero.
    assert_eq!(occupied(1000, 1000), 0);
    assert_eq!(free(1000, 1000, cap), 8);
    assert_eq!(occupied(1000, 1008), 8);
    assert_eq!(free(1000, 1008, cap), 0);

    // Across the u64 wrap: head before it, tail after it.
    let head = u64::MAX - 2; // positions MAX-2, MAX-1, MAX, 0, 1 are occupied
    let tail = head.wrapping_add(5);
    assert_eq!(tail, 2);
    assert_eq!(occupied(head, tail), 5);
    assert_eq!(free(head, tail, cap), 3);
    let slots: Vec<usize> = (0..5).map(|i| slot_of(head.wrapping_add(i), cap)).collect();
    assert_eq!(slots, [5, 6, 7, 0, 1], "consecutive positions take consecutive slots across the wrap");
    assert_eq!(occupied(u64::MAX, 0), 1);
    assert_eq!(occupied(u64::MAX - 7, 0), 8);
    assert_eq!(free(u64::MAX - 7, 0, cap), 0);

    // Every (head, occupied) pair near the wrap agrees with the plain definition.
    for base in [0u64, 1 << 53, u64::MAX - 16] {
        for start in 0..32u64 {
            let head = base.wrapping_add(start);
            for n in 0..=u64::from(cap) {
                let tail = head.wrapping_add(n);
                assert_eq!(occupied(head, tail), n);
                assert_eq!(free(head, tail, cap), u64::from(cap) - n);
            }
        }
    }
}

#[test]
fn error_codes_match_errors_md() {
    let doc = read("docs/errors.md");
    let documented: Vec<&str> = table(&doc, &["code", "meaning", "remedy"]).iter().map(|r| backticked(r[0])).collect();
    let code: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(documented, code, "docs/errors.md must list ErrorCode::ALL in order");
    for row in table(&doc, &["code", "meaning", "remedy"]) {
        assert!(row.len() == 3 && !row[1].is_empty() && !row[2].is_empty(), "incomplete row {row:?}");
    }
}
