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
      grep -E '^[^ ].*: [0-9,]+ jobs/s' | sed "s/^/$i $build | /" | tee -a "$results"
  done
done
node - "$results" <<'JS'
const { readFileSync } = require("node:fs");
// "3 after | gen-durable c=10 pool=10: 12,024 jobs/s; …" → pair 3, build after, label, jobs/s
const runs = readFileSync(process.argv[2], "utf8").trim().split("\n").map((line) => {
  const [, pair, build, label, rate] = /^(\d+) (\w+) \| (.*?): ([\d,]+) jobs\/s/.exec(line);
  return { pair, build, label, rate: Number(rate.replaceAll(",", "")) };
});
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
console.log("\nafter ÷ before, by pair:");
for (const label of new Set(runs.map((r) => r.label))) {
  const ratios = [];
  for (const pair of new Set(runs.map((r) => r.pair))) {
    // A section that runs a label several times in one run (gd-rate-limit) counts their median.
    const of = (build) => {
      const rates = runs.filter((r) => r.pair === pair && r.label === label && r.build === build).map((r) => r.rate);
      return rates.length > 0 ? median(rates) : undefined;
    };
    if (of("before") && of("after")) ratios.push(of("after") / of("before"));
  }
  if (ratios.length > 0)
    console.log(`  ${label}: ${ratios.map((r) => r.toFixed(3)).join(" ")}; median ${median(ratios).toFixed(3)}`);
}
JS
