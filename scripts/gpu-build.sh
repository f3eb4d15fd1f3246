#!/usr/bin/env bash
# Builds everything the GPU suite runs, on a CI-like machine (no GPU needed): the addon, the
# compiled JS, the release GPU test and bench binaries (copied to .gpu-run/bin), and .gpu/
# (node and node_modules for a GPU host without Node.js, via ../shared/device/prepare.sh).
# Then, on the GPU host, from the repo root: bash scripts/gpu-suite.sh [smoke|full]
set -euo pipefail
cd "$(dirname "$0")/.."
npm run build
mkdir -p .gpu-run/bin
grep -qxF '/.gpu-run/' .git/info/exclude || echo '/.gpu-run/' >> .git/info/exclude
bin() { cargo "$@" --message-format=json 2>/dev/null | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1; }
cp "$(bin test -p ringbridge-core --release --test gpu_cuda --no-run)" .gpu-run/bin/gpu_cuda
cp "$(bin test -p ringbridge-core --release --test route --no-run)" .gpu-run/bin/route
cp "$(bin bench -p ringbridge-core --bench gpu --no-run)" .gpu-run/bin/gpu
cargo build -q --release -p ringbridge-core --bin ringbridge-kernel-host
cp target/release/ringbridge-kernel-host .gpu-run/bin/
bash ../shared/device/prepare.sh
