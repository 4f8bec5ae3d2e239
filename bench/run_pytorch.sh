#!/usr/bin/env bash
# The PyTorch comparison (optional, not part of CI): makes bench/.venv with torch from PyPI,
# then, for each description, runs `onionnet bench` and the same three networks in PyTorch at
# the same p (2 threads, same batch) back to back, and prints the ratio onionnet / PyTorch.
# Results go to docs/bench/pytorch/.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x bench/.venv/bin/python ] || { python3 -m venv bench/.venv && bench/.venv/bin/pip install -q torch; }
cargo build --release
PY=bench/.venv/bin/python
O=docs/bench/pytorch
mkdir -p $O
run() { # name batch reps
  target/release/onionnet bench specs/$1.toml --batch $2 --reps $3 --out $O/$1-onionnet > /dev/null
  $PY bench/pytorch_bench.py specs/$1.toml --batch $2 --reps $3 --threads 2 --onionnet $O/$1-onionnet/bench.csv 2> /dev/null | tee $O/$1.txt
}
run fashion-retrieval 128 7
run 2ch-deep 128 7
run alexnet-64 32 5
