#!/usr/bin/env bash
# Regenerates the committed benchmark results (tables, CSVs, plots) under docs/bench/: each
# description on the own inference path (the default engine) in docs/bench/NAME, the same with
# survivors pooled across a stream of input batches (`--pool K`) in docs/bench/pooled/NAME, and
# on burn's modules in docs/bench/burn/NAME, back to back.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release
B=target/release/onionnet
run() { # name batch reps burn-reps pool
  # (ONLY=NAME reruns one description; ENGINES="own pooled" leaves burn's results as they
  # are, for a change that touches only the own path)
  if [ -n "${ONLY:-}" ] && [ "$ONLY" != "$1" ]; then return; fi
  for e in ${ENGINES:-own pooled burn}; do
    o=docs/bench/$1; args="--engine own --reps $3"
    [ $e = pooled ] && o=docs/bench/pooled/$1 && args="--engine own --pool $5 --reps $3"
    [ $e = burn ] && o=docs/bench/burn/$1 && args="--engine burn --reps $4"
    mkdir -p $o
    $B bench specs/$1.toml $args --batch $2 --out $o | tee $o/bench.txt
  done
}
# more repetitions on the own path: the machine's speed drifts by several % over minutes,
# and a median over more runs spread over more time follows it less (each row's 95% interval
# of the median shows how much is left): 61 for the retrieval network, whose runs are short,
# 41 and 33 for the others (21 and 17 left some intervals straddling the 10% target)
# the pooled stream: 16 batches for the retrieval network, so that even at p = 0.05 half a
# batch of survivors gathers before stage 2 runs (4 batches left it 24 rows at the stream's
# end); 4 for the others, whose runs take 20-100x longer per example
run fashion-retrieval 128 61 7 16
run 2ch-deep 128 41 7 4
# the large network: smaller batch and fewer repetitions to stay within minutes on 2 cores
run alexnet-64 32 33 5 4
# three stages (the same p forced at both early stages): the own path only
ENGINES="${ENGINES:-own}" run fashion-3stage 128 21 5 16
# ResNet-18 at 32x32 (0.56 G multiply-adds per image): batch 16, fewer repetitions
ENGINES="${ENGINES:-own burn}" run resnet18-32 16 9 3 4
