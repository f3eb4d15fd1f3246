#!/usr/bin/env bash
# Builds everything the GPU suite runs, on a CI-like machine (no GPU needed): the addon, the
# compiled JS, the release GPU test and bench binaries (copied to .gpu-run/bin), and .gpu/
# (node and node_modules for a GPU host without Node.js, via ../shared/device/prepare.sh).
# Then, on the GPU host, from the repo root: bash scripts/gpu-suite.sh [smoke|full|sanitizers|routes|reliability]
set -euo pipefail
cd "$(dirname "$0")/.."
npm run build
mkdir -p .gpu-run/bin
grep -qxF '/.gpu-run/' .git/info/exclude || echo '/.gpu-run/' >> .git/info/exclude
# The executable of target $1 (a test or bench; the kernel host binary they depend on is listed too).
bin() { local name=$1; shift; cargo "$@" --message-format=json 2>/dev/null | grep "\"name\":\"$name\"" | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1; }
cp "$(bin gpu_cuda test -p ringbridge-core --release --test gpu_cuda --no-run)" .gpu-run/bin/gpu_cuda
cp "$(bin route test -p ringbridge-core --release --test route --no-run)" .gpu-run/bin/route
# The reliability mode's soak (issue #10) and the transport-selection tests (no GPU needed,
# run beside the GPU ones).
cp "$(bin gpu_soak test -p ringbridge-core --release --test gpu_soak --no-run)" .gpu-run/bin/gpu_soak
cp "$(bin cuda_transport test -p ringbridge-core --release --test cuda_transport --no-run)" .gpu-run/bin/cuda_transport
cp "$(bin cuda_inject test -p ringbridge-core --release --test cuda_inject --no-run)" .gpu-run/bin/cuda_inject
cp "$(bin chunks test -p ringbridge-core --release --test chunks --no-run)" .gpu-run/bin/chunks
cp "$(bin gpu bench -p ringbridge-core --bench gpu --no-run)" .gpu-run/bin/gpu
cargo build -q --release -p ringbridge-core --bin ringbridge-kernel-host
cp target/release/ringbridge-kernel-host .gpu-run/bin/
bash ../shared/device/prepare.sh
