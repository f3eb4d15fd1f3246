#!/usr/bin/env bash
# GPU suite: anchors, Rust GPU tests and bench, JS GPU suite and bench, compute-sanitizer.
# usage (after scripts/gpu-build.sh): bash scripts/gpu-suite.sh [smoke|full|sanitizers|routes]
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
