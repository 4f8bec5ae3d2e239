#!/usr/bin/env bash
# Regenerates the committed benchmark results (tables, CSVs, plots) under docs/bench/.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release
B=target/release/onionnet
for s in fashion-retrieval 2ch-deep; do
  $B bench specs/$s.toml --batch 128 --reps 7 --out docs/bench/$s | tee docs/bench/$s/bench.txt
done
# the large network: smaller batch and fewer repetitions to stay within minutes on 2 cores
$B bench specs/alexnet-64.toml --batch 32 --reps 5 --out docs/bench/alexnet-64 | tee docs/bench/alexnet-64/bench.txt
# the same 2ch-deep benchmark with burn-flex's AVX-512 kernels
cargo build --release --features x86-v4
$B bench specs/2ch-deep.toml --batch 128 --reps 7 --out docs/bench/2ch-deep-x86-v4 | tee docs/bench/2ch-deep-x86-v4/bench.txt
cargo build --release
