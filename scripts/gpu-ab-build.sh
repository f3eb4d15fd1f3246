#!/usr/bin/env bash
# Builds the Rust GPU bench of earlier revisions beside this tree's, for a same-call A/B on the
# GPU host (a figure that moved between two GPU runs may be the card, the host or the code: only
# an A/B in one call tells). Usage, after scripts/gpu-build.sh: bash scripts/gpu-ab-build.sh REV...
# then on the GPU host: bash scripts/gpu-suite.sh ab (carrying .gpu and .gpu-run).
# Each revision is checked out in a worktree under target/ab/ and built there (its own target
# directory, shared between revisions); its bench lands in .gpu-run/bin/gpu-<rev>.
set -euo pipefail
cd "$(dirname "$0")/.."
(( $# > 0 )) || { echo "usage: $0 REV..." >&2; exit 2; }
mkdir -p .gpu-run/bin target/ab
for rev in "$@"; do
  short=$(git rev-parse --short "$rev")
  dir=target/ab/$short
  [[ -d $dir ]] || git worktree add -f --detach "$dir" "$short" >/dev/null
  exe=$(cd "$dir" && CARGO_TARGET_DIR="$PWD/../target" cargo bench -p ringbridge-core --bench gpu --no-run --message-format=json 2>/dev/null |
    grep '"name":"gpu"' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
  cp "$exe" ".gpu-run/bin/gpu-$short"
  echo "built .gpu-run/bin/gpu-$short"
done
