#!/usr/bin/env bash
# bash bench/compare.sh <before-revision> [pairs]
# The working tree against an earlier revision, in alternating pairs of `bench/run.sh --investigate`
# runs (BENCH_INVESTIGATE picks the sections, gd by default; the other BENCH_* settings apply too).
# Prints every run's throughput lines, then per run label the ratio after ÷ before of each pair and
# their median. Pairs alternate which build goes first, so a drift in the host's load falls on both.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
  echo "usage: bash bench/compare.sh <before-revision> [pairs]" >&2
  exit 2
fi
pairs=${2:-6}
# Inside the checkout: the builds find their dependencies there (see build-revision.sh).
mkdir -p node_modules/.cache
builds=$(mktemp -d node_modules/.cache/gd-compare.XXXXXX)
trap 'rm -rf "$builds"' EXIT
bash bench/build-revision.sh "$1" "$builds/before"
bash bench/build-revision.sh --working-tree "$builds/after"
export BENCH_INVESTIGATE=${BENCH_INVESTIGATE:-gd}
results="$builds/results"
for ((i = 1; i <= pairs; i++)); do
  order="before after"
  if ((i % 2 == 0)); then order="after before"; fi
  for build in $order; do
    BENCH_GEN_DURABLE_DIST="$builds/$build" bash bench/run.sh --investigate 2>&1 |
      grep -E '^[^ ].*: [0-9,]+ jobs/s' | grep -v 'warm-up (untimed)' | sed "s/^/$i $build | /" | tee -a "$results"
  done
done
node --import tsx bench/compare-summary.ts "$results"
