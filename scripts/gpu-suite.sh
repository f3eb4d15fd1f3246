#!/usr/bin/env bash
# GPU suite: anchors, Rust GPU tests and bench, JS GPU suite and bench, compute-sanitizer.
# usage (after scripts/gpu-build.sh): bash scripts/gpu-suite.sh [smoke|full|bench|ab|sanitizers|routes|reliability|hybrid|stream]
set -uo pipefail
mode=${1:-full}
cd "$(dirname "$0")/.."
export RINGBRIDGE_GPU=1 PATH=/tmp/gpu-node/bin:$PATH LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export RINGBRIDGE_CACHE_DIR=/tmp/rb-cache RINGBRIDGE_KERNEL_HOST=$PWD/.gpu-run/bin/ringbridge-kernel-host
O=${OUT:-/tmp/out}; mkdir -p "$O"
# How many GPUs this host has: tests across GPUs run only where there are two (JS reads it too).
export RINGBRIDGE_GPU_COUNT=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
bash .gpu/run.sh true
step() { echo "=== $* ($(date +%T))"; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$O/device.txt"
nvcc --version | tail -2 >> "$O/device.txt"
if [[ $mode == reliability ]]; then
  # Issue #10 ("keep them fixed") on one GPU, in order: the soak (RINGBRIDGE_SOAK_MESSAGES,
  # default 10^9, checksummed on dma through a 2^20-slot ring; small rings and 1 KiB slots on
  # dma; a tenth of the count on mapped), the Rust GPU tests (each test its own process), the JS
  # GPU suites, then compute-sanitizer memcheck, racecheck and synccheck over the soak and the
  # Rust GPU tests at small counts (and the user-kernel JS suite if time is left). Every step
  # runs under `timeout` (its own limit, cut to what is left of RELIABILITY_BUDGET seconds
  # counted from the script's start, default 450: the device allows 10 minutes a command); a
  # step that would start with less than 15 s left is listed NOT RUN. summary.txt has one
  # PASS / FAIL / TIMEOUT / SANITIZER-ERRORS line per step with its key lines (SOAK figures,
  # test totals, sanitizer summaries, panics); the full output is in soak.txt,
  # rust_gpu_tests.txt, js_gpu.txt and sanitizers.log (6 files in $OUT with device.txt).
  budget=${RELIABILITY_BUDGET:-450}
  soak_n=${RINGBRIDGE_SOAK_MESSAGES:-1000000000}
  command -v compute-sanitizer >/dev/null || export PATH=$PATH:/usr/local/cuda/bin
  : > "$O/summary.txt"
  for b in gpu_soak gpu_cuda route cuda_transport cuda_inject ringbridge-kernel-host; do
    [[ -x .gpu-run/bin/$b ]] || echo "MISSING .gpu-run/bin/$b (run scripts/gpu-build.sh, carry .gpu-run)" | tee -a "$O/summary.txt"
  done
  # note FILE LINE: LINE into $O/FILE, summary.txt and the console.
  note() { echo "$2" >> "$O/$1"; echo "$2" >> "$O/summary.txt"; echo "$2"; }
  # bounded LIMIT FILE LABEL CMD...: CMD under timeout (LIMIT, or less if the budget is nearly
  # spent), its output appended to $O/FILE; one verdict line in summary.txt.
  bounded() {
    local limit=$1 file=$2 label=$3; shift 3
    local left=$(( budget - SECONDS ))
    if (( left < 15 )); then
      note "$file" "NOT RUN  $label (the ${budget} s budget is spent)"
      return
    fi
    (( limit > left )) && limit=$left
    local log start=$SECONDS rc verdict
    log=$(mktemp)
    echo "--- $label (timeout ${limit} s, $(date +%T))" >> "$O/$file"
    timeout -k 10 "$limit" "$@" > "$log" 2>&1; rc=$?
    cat "$log" >> "$O/$file"
    case $rc in
      0) verdict=PASS ;;
      124|137) verdict=TIMEOUT ;;
      86) verdict=SANITIZER-ERRORS ;;
      *) verdict=FAIL ;;
    esac
    note "$file" "$verdict $label (exit $rc, $((SECONDS - start)) s)"
    # Key lines: SOAK figures, test totals, sanitizer summaries, a panic and its message.
    awk '/^thread .* panicked/ { print; getline; print; next }
         /^SOAK |^test result:|tests? (passed|failed|skipped)|known failure|uncaught exception|SUMMARY:/' "$log" |
      head -10 | sed 's/^/    /' >> "$O/summary.txt"
    rm -f "$log"
  }
  ignored() { "$1" --ignored --list 2>/dev/null | sed -n 's/: test$//p'; }
  step soak
  export RINGBRIDGE_SOAK_STALL_MS=30000
  for t in dma_soak_checksummed_messages_through_a_large_ring dma_soak_small_rings_and_large_slots mapped_soak_a_tenth_of_the_count hybrid_soak_a_tenth_of_the_count; do
    limit=60; [[ $t == dma_soak_checksummed* ]] && limit=200
    bounded $limit soak.txt "soak $t ($soak_n)" env RINGBRIDGE_SOAK_MESSAGES=$soak_n .gpu-run/bin/gpu_soak --ignored --exact $t --nocapture --test-threads=1
  done
  step rust gpu tests
  export RINGBRIDGE_GPU_MESSAGES=1000000
  bounded 30 rust_gpu_tests.txt "cuda_transport" .gpu-run/bin/cuda_transport
  bounded 30 rust_gpu_tests.txt "cuda_inject" .gpu-run/bin/cuda_inject
  for t in $(ignored .gpu-run/bin/gpu_cuda); do
    bounded 60 rust_gpu_tests.txt "gpu_cuda $t" .gpu-run/bin/gpu_cuda --ignored --exact $t --nocapture
  done
  for t in $(ignored .gpu-run/bin/route); do
    if [[ $t == gpu2_* ]] && (( RINGBRIDGE_GPU_COUNT < 2 )); then
      note rust_gpu_tests.txt "NOT RUN  route $t (this host has $RINGBRIDGE_GPU_COUNT GPU)"
      continue
    fi
    bounded 60 rust_gpu_tests.txt "route $t" .gpu-run/bin/route --ignored --exact $t --nocapture
  done
  step js gpu suites
  # Up to 180 s, less where that would leave the sanitizers under 150 s (never under 60 s).
  js_limit=$(( budget - SECONDS - 150 )); (( js_limit > 180 )) && js_limit=180; (( js_limit < 60 )) && js_limit=60
  bounded $js_limit js_gpu.txt "ava gpu.spec gpu-user.spec route.spec chunk.spec" node node_modules/ava/entrypoints/cli.mjs __test__/gpu.spec.js __test__/gpu-user.spec.js __test__/route.spec.js __test__/chunk.spec.js
  step sanitizers
  # --error-exitcode: a sanitizer finding exits 86 (SANITIZER-ERRORS), apart from a test's own
  # failure. The trap tests are left out: their trap is the point, and a sanitizer reports it.
  san=(compute-sanitizer --error-exitcode 86 --print-limit 20 --tool)
  for tool in memcheck racecheck synccheck; do
    bounded 90 sanitizers.log "$tool: soak (5000 messages)" env RINGBRIDGE_SOAK_MESSAGES=5000 RINGBRIDGE_SOAK_STALL_MS=60000 "${san[@]}" $tool .gpu-run/bin/gpu_soak --ignored --test-threads=1 --nocapture
  done
  for tool in memcheck racecheck synccheck; do
    bounded 90 sanitizers.log "$tool: gpu_cuda --skip trap (2000 messages)" env RINGBRIDGE_GPU_MESSAGES=2000 "${san[@]}" $tool .gpu-run/bin/gpu_cuda --ignored --test-threads=1 --skip trap
  done
  for tool in memcheck racecheck synccheck; do
    bounded 60 sanitizers.log "$tool: route computes + forwards (2000 messages)" env RINGBRIDGE_GPU_MESSAGES=2000 "${san[@]}" $tool .gpu-run/bin/route --ignored --test-threads=1 gpu_route_computes gpu_route_forwards
  done
  for tool in memcheck racecheck synccheck; do
    bounded 90 sanitizers.log "$tool: gpu-user.spec (2000 messages)" env RINGBRIDGE_GPU_MESSAGES=2000 "${san[@]}" $tool node node_modules/ava/entrypoints/cli.mjs __test__/gpu-user.spec.js
  done
  echo "=== summary ($SECONDS s in the steps; budget $budget s)" | tee -a "$O/summary.txt"
  tail -n 3 "$O/soak.txt" "$O/rust_gpu_tests.txt" "$O/js_gpu.txt" "$O/sanitizers.log"
  echo; cat "$O/summary.txt"
  grep -qE '^(FAIL|TIMEOUT|SANITIZER-ERRORS|MISSING)' "$O/summary.txt" && exit 1
  exit 0
fi
if [[ $mode == hybrid ]]; then
  # The hybrid transport (spec §11.2) on the GPU: selection, the mixed shallow/deep echo,
  # every per-transport test with hybrid among them, chunks, a route through it, its soak, the
  # JS GPU suites (with issue #14's timer tests), then compute-sanitizer over the mixed echo.
  # One line per step in summary.txt; full output in hybrid_tests.txt and sanitizers.log.
  command -v compute-sanitizer >/dev/null || export PATH=$PATH:/usr/local/cuda/bin
  : > "$O/summary.txt"
  run_step() {
    local limit=$1 label=$2; shift 2
    echo "--- $label ($(date +%T))" >> "$O/hybrid_tests.txt"
    local start=$SECONDS
    timeout -k 5 "$limit" "$@" >> "$O/hybrid_tests.txt" 2>&1
    local rc=$?
    echo "exit $rc $label ($((SECONDS - start)) s)" | tee -a "$O/summary.txt" >> "$O/hybrid_tests.txt"
  }
  export RINGBRIDGE_GPU_MESSAGES=${RINGBRIDGE_GPU_MESSAGES:-1000000} RINGBRIDGE_CHUNK_MESSAGES=${RINGBRIDGE_CHUNK_MESSAGES:-2000000}
  step hybrid tests
  run_step 20 "cuda_transport" .gpu-run/bin/cuda_transport
  run_step 20 "cuda_inject" .gpu-run/bin/cuda_inject
  for t in hybrid_switches_between_direct_and_bridged_rounds_without_loss echo_ten_million_per_transport_in_order_with_checksums small_capacities_stress_the_copy_engine_ordering pause_resume_drain_and_abandon saxpy_matches_the_cpu_backend_bit_for_bit; do
    run_step 90 "gpu_cuda $t" .gpu-run/bin/gpu_cuda --ignored --exact $t --nocapture
  done
  run_step 90 "chunks" .gpu-run/bin/chunks --ignored --test-threads=1 --nocapture gpu_chunks
  run_step 60 "route per transport" .gpu-run/bin/route --ignored --nocapture gpu_route_to_itself_loses_nothing_per_transport
  run_step 60 "hybrid soak" env RINGBRIDGE_SOAK_MESSAGES=${RINGBRIDGE_SOAK_MESSAGES:-100000000} RINGBRIDGE_SOAK_STALL_MS=30000 .gpu-run/bin/gpu_soak --ignored --exact hybrid_soak_a_tenth_of_the_count --nocapture
  step js gpu suites
  run_step 200 "ava gpu.spec cuda-schema.spec lifecycle.spec chunk.spec" env RINGBRIDGE_NVRTC=1 node node_modules/ava/entrypoints/cli.mjs --verbose __test__/gpu.spec.js __test__/cuda-schema.spec.js __test__/lifecycle.spec.js __test__/chunk.spec.js
  step sanitizers
  for tool in memcheck racecheck; do
    RINGBRIDGE_GPU_MESSAGES=20000 timeout 120 compute-sanitizer --tool $tool --error-exitcode 86 --print-limit 20 .gpu-run/bin/gpu_cuda --ignored --exact hybrid_switches_between_direct_and_bridged_rounds_without_loss --nocapture 2>&1 | grep -E "hybrid mixed|panicked|assert|left|right|SUMMARY|=====|test result" | tail -30 >> "$O/sanitizers.log"
    echo "exit ${PIPESTATUS[0]} $tool hybrid mixed echo" | tee -a "$O/summary.txt" >> "$O/sanitizers.log"
  done
  grep -E "hybrid mixed|gpu_echo|CHUNKS ok|SOAK|test result|✘|✔.*(timers|hybrid)|tests? (passed|failed)|panicked|assert" "$O/hybrid_tests.txt" | head -80
  echo; cat "$O/summary.txt"
  exit 0
fi
if [[ $mode == stream ]]; then
  # Issue #12: the streaming bar (ringbench's launch pipeline, persistent_stream's raw
  # persistent ring) beside this tree's chunk figures, the chunk tests on the GPU and the
  # sanitizers over the chunk paths, in one call. STREAM_JS=1 adds the JS bench.
  step anchors
  (nvcc -O3 -std=c++17 -arch=sm_90 -o /tmp/ringbench .gpu/anchors/ringbench.cu -lpthread && timeout 120 /tmp/ringbench 2000 20000000) 2>&1 | grep -E "^device|pipelined|rtt_lean|bw_" | tee "$O/anchors.txt"
  (nvcc -O3 -std=c++17 -arch=sm_90 -o /tmp/ps .gpu/anchors/persistent_stream.cu -lcuda -lpthread && timeout 60 /tmp/ps 50000000 1048576 1) 2>&1 | grep -vE "^#   " | tee -a "$O/anchors.txt"
  # The Python user's batching (CuPy) and the round-trip floor, for the ratios' other columns.
  timeout 60 python3 .gpu/anchors/cupy_peer.py 5000 2>&1 | tail -8 | tee -a "$O/anchors.txt"
  (nvcc -O3 -std=c++17 -arch=sm_90 -o /tmp/floor .gpu/anchors/pingpong_floor.cu && timeout 30 /tmp/floor 200000) 2>&1 | grep -vE "^#   " | tail -12 | tee -a "$O/anchors.txt"
  step rust stream
  RINGBRIDGE_BRIDGE_STATS=1 timeout 150 .gpu-run/bin/gpu --bench --stream 2>&1 | tee "$O/rust_bench.txt"
  # STREAM_TUNE="A;B": the same figures again with each set of kernel tuning defines (NVRTC -D).
  IFS=';' read -ra tunes <<< "${STREAM_TUNE:-}"
  for t in "${tunes[@]}"; do
    echo "--- tuning $t" | tee -a "$O/rust_bench.txt"
    RINGBRIDGE_NVRTC_DEFINES="$t" RINGBRIDGE_BRIDGE_STATS=1 timeout 100 .gpu-run/bin/gpu --bench --stream 2>&1 | grep -E "chunk|echo64|dma bridge" | tee -a "$O/rust_bench.txt"
  done
  step chunk tests
  timeout 150 .gpu-run/bin/chunks --ignored --nocapture --test-threads=1 2>&1 | grep -E "CHUNKS|test result|panicked|^test " | tee "$O/chunk_tests.txt"
  if [[ ${STREAM_JS:-0} == 1 ]]; then
    step js bench
    timeout 150 node bench/gpu.js 2>&1 | tee "$O/js_bench.txt"
    step js chunk tests
    RINGBRIDGE_GPU_MESSAGES=10000000 timeout 150 node node_modules/ava/entrypoints/cli.mjs __test__/chunk.spec.js 2>&1 | tail -15 | tee "$O/js_chunk_tests.txt"
    # Goal 3: struct objects through sendBatch/receiveBatch (bench/echo.js on the cuda backend)
    # and the generated codecs beside hand-written ones, on this host's CPU.
    step js struct bench
    timeout 150 node bench/echo.js 2>&1 | grep -E "^(cuda|cpu|worker|ratio)" | tee "$O/js_struct_bench.txt"
    timeout 60 node bench/codec.js 2>&1 | tee -a "$O/js_struct_bench.txt"
  fi
  step sanitizers
  command -v compute-sanitizer >/dev/null || export PATH=$PATH:/usr/local/cuda/bin
  for tool in memcheck racecheck; do
    RINGBRIDGE_CHUNK_MESSAGES=20000 timeout 120 compute-sanitizer --tool $tool --error-exitcode 86 --print-limit 20 .gpu-run/bin/chunks --ignored --test-threads=1 gpu_chunks 2>&1 | tail -3 | tee -a "$O/sanitizers.log"
    echo "exit ${PIPESTATUS[0]} $tool" | tee -a "$O/sanitizers.log"
  done
  exit 0
fi
if [[ $mode == ab ]]; then
  # This tree's Rust GPU bench and each earlier one that scripts/gpu-ab-build.sh built
  # (.gpu-run/bin/gpu-<rev>), three rounds, alternating, beside the anchors' streaming bar.
  step anchors
  (nvcc -O3 -std=c++17 -arch=sm_90 -o /tmp/ringbench .gpu/anchors/ringbench.cu -lpthread && timeout 120 /tmp/ringbench 2000 20000000) 2>&1 | grep -E "pipelined|rtt_lean" | tee "$O/anchors.txt"
  for round in 1 2 3; do
    for b in .gpu-run/bin/gpu .gpu-run/bin/gpu-*; do
      echo "--- round $round $(basename "$b")"
      timeout 90 "$b" --bench 2>&1 | grep -E "stream|rtt_mapped_p50|bw_"
    done
  done | tee "$O/ab.txt"
  exit 0
fi
if [[ $mode == sanitizers ]]; then
  for tool in memcheck racecheck; do
    RINGBRIDGE_GPU_MESSAGES=20000 timeout 200 compute-sanitizer --tool $tool --print-limit 20 .gpu-run/bin/gpu_cuda --ignored --test-threads=1 saxpy pause 2>&1 | tail -4
    RINGBRIDGE_GPU_MESSAGES=2000 timeout 200 compute-sanitizer --tool $tool --print-limit 20 node node_modules/ava/entrypoints/cli.mjs __test__/gpu-user.spec.js 2>&1 | tail -12
  done
  exit 0
fi
if [[ $mode == routes ]]; then
  # Issue #5 on one GPU: route tests (Rust and JS), the kernel's own suite (protocol v3 changed
  # it), route figures beside one kernel with the anchors and raw GPU→GPU baselines, sanitizers.
  step rust gpu tests
  for t in gpu_route_computes_in_the_second_stage gpu_route_forwards_stage_errors gpu_route_terminates_with_messages_at_every_hop gpu_route_to_itself_loses_nothing_per_transport gpu_route_in_a_kernel_host gpu_route_round_trip_latency; do
    RINGBRIDGE_GPU_MESSAGES=1000000 timeout 60 .gpu-run/bin/route --ignored --exact $t --nocapture >> "$O/rust_gpu_tests.txt" 2>&1; echo "exit $? $t" >> "$O/rust_gpu_tests.txt"
  done
  RINGBRIDGE_GPU_MESSAGES=1000000 timeout 90 .gpu-run/bin/gpu_cuda --ignored --test-threads=1 --skip trapping >> "$O/rust_gpu_tests.txt" 2>&1
  if (( RINGBRIDGE_GPU_COUNT >= 2 )); then
    RINGBRIDGE_GPU_MESSAGES=1000000 timeout 120 .gpu-run/bin/route --ignored --exact gpu2_routes_across_gpus_peer_and_host_staged --nocapture >> "$O/rust_gpu_tests.txt" 2>&1
    echo "exit $? gpu2_routes_across_gpus_peer_and_host_staged" >> "$O/rust_gpu_tests.txt"
  else
    echo "NOT RUN: gpu2_routes_across_gpus_peer_and_host_staged (this host has $RINGBRIDGE_GPU_COUNT GPU)" >> "$O/rust_gpu_tests.txt"
  fi
  step anchors
  (nvcc -O3 -std=c++17 -arch=sm_90 -o /tmp/ringbench .gpu/anchors/ringbench.cu -lpthread && timeout 120 /tmp/ringbench 20000 20000000) > "$O/anchors.txt" 2>&1
  (cd .gpu/anchors && timeout 60 python3 cupy_peer.py 20000) >> "$O/anchors.txt" 2>&1
  (nvcc -O3 -std=c++17 -arch=sm_90 -o /tmp/peer_copy bench/gpu/peer_copy.cu && timeout 60 /tmp/peer_copy) >> "$O/anchors.txt" 2>&1
  step rust route bench
  timeout 120 .gpu-run/bin/gpu --bench --routes > "$O/rust_bench.txt" 2>&1
  step js gpu suite
  RINGBRIDGE_GPU_MESSAGES=1000000 timeout 150 node node_modules/ava/entrypoints/cli.mjs __test__/route.spec.js __test__/gpu.spec.js > "$O/js_gpu.txt" 2>&1
  step sanitizers
  for tool in memcheck racecheck; do
    RINGBRIDGE_GPU_MESSAGES=20000 timeout 90 compute-sanitizer --tool $tool --print-limit 20 .gpu-run/bin/route --ignored --test-threads=1 gpu_route_computes gpu_route_forwards >> "$O/sanitizers.log" 2>&1
  done
  tail -n 4 "$O"/*.txt "$O/sanitizers.log"
  exit 0
fi
if [[ $mode == smoke ]]; then
  step rust gpu tests smoke
  RINGBRIDGE_GPU_MESSAGES=200000 timeout 240 .gpu-run/bin/gpu_cuda --ignored --test-threads=1 --skip trapping 2>&1 | tail -40
  timeout 60 .gpu-run/bin/gpu_cuda --ignored --test-threads=1 trapping 2>&1 | tail -30
  step js gpu smoke
  RINGBRIDGE_GPU_MESSAGES=200000 timeout 240 node node_modules/ava/entrypoints/cli.mjs __test__/gpu.spec.js __test__/gpu-user.spec.js 2>&1 | tail -40
  exit 0
fi
step anchors
(nvcc -O3 -std=c++17 -arch=sm_90 -o /tmp/ringbench .gpu/anchors/ringbench.cu -lpthread && timeout 120 /tmp/ringbench 20000 20000000) > "$O/anchors.txt" 2>&1
(cd .gpu/anchors && timeout 120 python3 cupy_peer.py 20000) >> "$O/anchors.txt" 2>&1
(nvcc -O3 -std=c++17 -arch=sm_90 -o /tmp/pp .gpu/anchors/pingpong_floor.cu && timeout 60 /tmp/pp 200000) >> "$O/anchors.txt" 2>&1
step rust bench
timeout 200 .gpu-run/bin/gpu --bench > "$O/rust_bench.txt" 2>&1
step js bench
timeout 150 node bench/gpu.js > "$O/js_bench.txt" 2>&1
step demo and examples
timeout 120 node examples/demo.js >> "$O/js_bench.txt" 2>&1
for ex in vector-rpc running-stats key-counter; do
  echo "--- example $ex" >> "$O/examples.txt"
  timeout 120 node examples/$ex.js >> "$O/examples.txt" 2>&1; echo "exit $?" >> "$O/examples.txt"
done
# bench: the figures only (anchors, Rust and JS benches, demo and examples), for a call that
# runs the tests and sanitizers in reliability mode.
if [[ $mode == bench ]]; then
  tail -n 3 "$O"/*.txt
  exit 0
fi
step rust gpu tests
RINGBRIDGE_GPU_MESSAGES=10000000 timeout 240 .gpu-run/bin/gpu_cuda --ignored --test-threads=1 --skip trapping > "$O/rust_gpu_tests.txt" 2>&1
timeout 60 .gpu-run/bin/gpu_cuda --ignored --test-threads=1 trapping >> "$O/rust_gpu_tests.txt" 2>&1
step js gpu suite
RINGBRIDGE_GPU_MESSAGES=10000000 timeout 300 node node_modules/ava/entrypoints/cli.mjs __test__/gpu.spec.js __test__/gpu-user.spec.js __test__/errors.spec.js > "$O/js_gpu.txt" 2>&1
step sanitizers
for tool in memcheck racecheck; do
  RINGBRIDGE_GPU_MESSAGES=20000 timeout 200 compute-sanitizer --tool $tool --print-limit 20 .gpu-run/bin/gpu_cuda --ignored --test-threads=1 saxpy pause > "$O/sanitizer_$tool.txt" 2>&1
done
# The user kernels too (a kernel host per launch: the sanitizer follows child processes).
for tool in memcheck racecheck; do
  RINGBRIDGE_GPU_MESSAGES=2000 timeout 200 compute-sanitizer --tool $tool --print-limit 20 node node_modules/ava/entrypoints/cli.mjs __test__/gpu-user.spec.js > "$O/sanitizer_user_$tool.txt" 2>&1
done
# One file for the four sanitizer runs (the device tool returns at most 8 files).
for f in "$O"/sanitizer_*.txt; do echo "### $(basename "$f")"; cat "$f"; done > "$O/sanitizers.log" && rm -f "$O"/sanitizer_*.txt
tail -n 3 "$O"/*.txt "$O/sanitizers.log"
