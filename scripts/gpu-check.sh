#!/usr/bin/env bash
# One prepared check of onionnet's GPU path (burn's wgpu backend) on a machine with a GPU.
#
#   scripts/gpu-check.sh [--debs DIR] [--out DIR] [--quick]
#
# Run from the repository root. Needs, built beforehand (on any machine of the same
# architecture; the GPU machine needs no Rust toolchain):
#   cargo build --release --features wgpu                 -> target/release/onionnet
#   cargo test --release --features wgpu --no-run --test gpu
#                                                         -> target/release/deps/gpu-*
# --debs DIR: Debian packages of the Vulkan loader to unpack when the machine has none
#   (e.g. libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2, fetched with
#   `apt-get download`); the NVIDIA driver's ICD file is found under /usr/local/nvidia,
#   /usr/share/vulkan or /etc/vulkan, or taken from VK_DRIVER_FILES.
# --quick: shorter training and fewer benchmark repetitions (a smoke test).
# Writes to --out (default gpu-check/): tests.txt, train.txt, bench-<spec>.{txt,json,csv,png},
# machine.txt and summary.txt. Exits non-zero at the first failing step.
set -euo pipefail

debs="" out="gpu-check" quick=0
while [ $# -gt 0 ]; do
  case "$1" in
    --debs) debs="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --quick) quick=1; shift ;;
    *) echo "gpu-check: unknown argument $1" >&2; exit 2 ;;
  esac
done

bin="${ONIONNET_BIN:-target/release/onionnet}"
tests="$(ls -t target/release/deps/gpu-* 2>/dev/null | grep -v '\.d$' | head -1 || true)"
[ -x "$bin" ] || { echo "gpu-check: $bin missing: cargo build --release --features wgpu" >&2; exit 2; }
[ -n "$tests" ] || { echo "gpu-check: GPU test binary missing: cargo test --release --features wgpu --no-run --test gpu" >&2; exit 2; }
mkdir -p "$out"

# the Vulkan loader, unpacked from the packages given, when the system has none
if [ -n "$debs" ]; then
  root="$(mktemp -d)"
  for d in "$debs"/*.deb; do dpkg -x "$d" "$root"; done
  libs="$(dirname "$(find "$root" -name 'libvulkan.so.1' | head -1)")"
  [ -d "$libs" ] || { echo "gpu-check: no libvulkan.so.1 in $debs" >&2; exit 2; }
  export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
if [ -z "${VK_DRIVER_FILES:-}" ]; then
  icd="$(find /usr/local/nvidia /usr/share/vulkan /etc/vulkan -name 'nvidia_icd*.json' 2>/dev/null | head -1 || true)"
  [ -n "$icd" ] && export VK_DRIVER_FILES="$icd"
fi

{
  echo "date: $(date -u)"
  echo "onionnet: $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  echo "cpus: $(nproc)"
  echo "VK_DRIVER_FILES=${VK_DRIVER_FILES:-}"
} | tee "$out/machine.txt"

step() { echo "== $1" | tee -a "$out/summary.txt"; }
: > "$out/summary.txt"

# 1. the GPU tests: forward and gradients against the CPU, a small train + calibrate + eval
step "GPU tests ($tests)"
ONIONNET_REQUIRE_GPU=1 ONIONNET_BIN="$bin" "$tests" --include-ignored --test-threads 1 2>&1 \
  | tee "$out/tests.txt"
grep -E "^test result" "$out/tests.txt" >> "$out/summary.txt"

# 2. a short training run of the three networks, timed per epoch (the first compiles kernels)
epochs=3; [ "$quick" = 1 ] && epochs=2
step "fit fashion-retrieval on the committed subset, $epochs epochs"
start=$SECONDS
"$bin" --device wgpu fit fashion-retrieval --data data/fashion-mnist-subset \
  --epochs "$epochs" --engine burn --out "$out/fit" 2>&1 | tee "$out/train.txt"
echo "  wall: $((SECONDS - start)) s" >> "$out/summary.txt"
grep -E "mAP" "$out/train.txt" >> "$out/summary.txt" || true
for k in monolithic non-sharing onion; do
  # seconds per epoch, from the run's train.json (the first epoch compiles the kernels)
  secs="$(grep -o '"seconds": *[0-9.]*' "$out/fit/$k/train.json" 2>/dev/null | sed 's/.*: *//' | tr '\n' ' ' || true)"
  echo "  $k epoch seconds: $secs" >> "$out/summary.txt"
done

# 3. the synthetic benchmark on burn's modules on the GPU, batch 1024
reps=10; [ "$quick" = 1 ] && reps=3
for spec in 2ch-deep alexnet-64 fashion-retrieval; do
  step "bench $spec --engine burn --device wgpu --batch 1024"
  "$bin" --device wgpu bench "$spec" --engine burn --batch 1024 --reps "$reps" \
    --out "$out/bench-$spec" 2>&1 | tee "$out/bench-$spec.txt"
  tail -n 12 "$out/bench-$spec.txt" >> "$out/summary.txt"
done

# 4. burn's autotune and kernel cache, kept for the next run
step "cubecl cache"
ls -la target/environment "${XDG_CACHE_HOME:-$HOME/.cache}/cubecl" 2>/dev/null >> "$out/summary.txt" || true
echo "gpu-check: done; results in $out/" | tee -a "$out/summary.txt"
