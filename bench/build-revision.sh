#!/usr/bin/env bash
# bash bench/build-revision.sh <revision|--working-tree> <directory>
# Compiles gen-durable's src/ at a git revision (or as it is in the working tree) into <directory>,
# for BENCH_GEN_DURABLE_DIST: the bench then runs that build (bench/README.md, "Before and after a
# change"). Uses this checkout's node_modules and tsconfig.json; the revision's migrations are the
# ones embedded in its src/. <directory> must be inside this checkout: the build finds its
# dependencies, and that it is an ES module, through the checkout's node_modules and package.json.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -ne 2 ]; then
  echo "usage: bash bench/build-revision.sh <revision|--working-tree> <directory>" >&2
  exit 2
fi
revision=$1
out=$(realpath -m "$2")
case "$out/" in
  "$PWD"/*) ;;
  *)
    echo "bench/build-revision.sh: $2 is outside this checkout ($PWD): the build could not find its dependencies" >&2
    exit 2
    ;;
esac
mkdir -p "$out"
# Inside the checkout, so that the sources find its node_modules.
mkdir -p node_modules/.cache
work=$(mktemp -d node_modules/.cache/gd-build.XXXXXX)
trap 'rm -rf "$work"' EXIT
if [ "$revision" = "--working-tree" ]; then
  node scripts/embed-migrations.mjs >/dev/null
  cp -r src "$work/src"
else
  git rev-parse --verify --quiet "$revision^{commit}" >/dev/null || {
    echo "bench/build-revision.sh: no such revision: $revision" >&2
    exit 2
  }
  mkdir "$work/src"
  git archive "$revision" src | tar -x -C "$work/src" --strip-components=1
fi
cat >"$work/tsconfig.json" <<JSON
{
  "extends": "../../../tsconfig.json",
  "compilerOptions": { "noEmit": false, "rootDir": "src", "outDir": "$out", "declaration": false, "sourceMap": false },
  "include": ["src"]
}
JSON
rm -rf "$out"/*
npx tsc -p "$work/tsconfig.json"
echo "$revision → $out" >&2
