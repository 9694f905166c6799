#!/usr/bin/env bash
# bash bench/instructions.sh
# Postgres instructions per job for gen-durable's claim and group commit, counted by valgrind's
# callgrind in the backend that runs them: a figure that does not move with the host's load, where
# a timed run moves by a tenth or more (bench/README.md, "Counting instructions").
#
# A throw-away cluster is made with the server binaries of PG_BINDIR (default: `pg_config
# --bindir`), the schema from the build's `gen-durable sql`, and 20,000 no-op jobs inserted; then
# one backend claims BENCH_BATCH rows (default 256) and commits their `done` outcomes, BENCH_ROUNDS
# times (default 30), each statement its own transaction, as the engine does. Only that loop is
# counted (the DO block that runs it), its own building of the outcomes' JSON included.
#   BENCH_KEYS=2000                         jobs over that many concurrency keys (limit 1)
#   BENCH_QUEUED=200000                     jobs inserted before the loop (default 20,000)
#   BENCH_GEN_DURABLE_DIST=<dir>            the build to take the schema from (default dist/, built
#                                           now); see bench/build-revision.sh for another revision's
#   BENCH_SETUP_SQL=<file>                  SQL run after the rows are in, before the loop: a variant
#                                           to price (an index dropped, a function redefined)
#   BENCH_ANNOTATE=1                        also print the backend's functions, inclusive cost first
set -euo pipefail
cd "$(dirname "$0")/.."

BATCH=${BENCH_BATCH:-256}
ROUNDS=${BENCH_ROUNDS:-30}
KEYS=${BENCH_KEYS:-0}
QUEUED=${BENCH_QUEUED:-20000}
DIST=${BENCH_GEN_DURABLE_DIST:-}
BINDIR=${PG_BINDIR:-$(pg_config --bindir 2>/dev/null || true)}

fail() {
  echo "bench/instructions.sh: $*" >&2
  exit 2
}
[ -x "$BINDIR/postgres" ] && [ -x "$BINDIR/initdb" ] && [ -x "$BINDIR/psql" ] ||
  fail "no postgres, initdb and psql in '${BINDIR}': set PG_BINDIR (Debian: /usr/lib/postgresql/<version>/bin)"
command -v valgrind >/dev/null || fail "valgrind is not installed (Debian: apt-get install valgrind)"
if [ -z "$DIST" ]; then
  echo "bench: building dist/ (npm run build)…" >&2
  npm run --silent build >&2
  DIST=dist
fi
[ -f "$DIST/cli/main.js" ] || fail "$DIST/cli/main.js not found: BENCH_GEN_DURABLE_DIST must name a build"

work=$(mktemp -d)
chmod 777 "$work"
# Postgres refuses to run as root: then the cluster is the postgres user's.
as_server() {
  if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi
}
server=""
cleanup() {
  if [ -n "$server" ]; then
    kill -INT "$server" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$server" 2>/dev/null || break; sleep 0.2; done
  fi
  rm -rf "$work"
}
trap cleanup EXIT

as_server "'$BINDIR/initdb' -D '$work/data' -A trust -U postgres -E UTF8 --locale=C >/dev/null"
port=$((20000 + RANDOM % 20000))
# Collection starts and stops with the DO block (plpgsql_inline_handler): nothing else is counted.
as_server "valgrind --tool=callgrind --collect-atstart=no --toggle-collect=plpgsql_inline_handler \
  --callgrind-out-file='$work/callgrind.%p' '$BINDIR/postgres' -D '$work/data' -p $port -k '$work' \
  -c listen_addresses= -c autovacuum=off >'$work/server.log' 2>&1 & echo \$! > '$work/pid'"
server=$(cat "$work/pid")
psql() { "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$work" -p "$port" -U postgres "$@"; }
for _ in $(seq 1 300); do psql -d postgres -c "select 1" >/dev/null 2>&1 && break; sleep 0.2; done
psql -d postgres -c "select 1" >/dev/null || fail "the server did not start: $(tail -5 "$work/server.log")"

psql -d postgres -c "create database bench" >/dev/null
node "$DIST/cli/main.js" sql --schema gen_durable | psql -d bench >/dev/null
psql -d bench >/dev/null <<SQL
insert into gen_durable.instances (machine, step, state, queue, concurrency_key)
select 'Noop', 'perform', jsonb_build_object('i', g), 'default', case when $KEYS > 0 then 'k' || (g % $KEYS) end
from generate_series(1, $QUEUED) g;
SQL
if [ -n "${BENCH_SETUP_SQL:-}" ]; then psql -d bench -f "$BENCH_SETUP_SQL" >/dev/null; fi
psql -d bench -c "vacuum analyze" -c "checkpoint" >/dev/null

# The loop, as the engine's scheduler and group commit send them: claim_rows(queue, machines, want,
# node, lease ms, global limit, start now, keyed at most), then complete_outcomes(outcomes, release
# keys) with the fields a plain done sends.
release=$([ "$KEYS" -gt 0 ] && echo true || echo false)
pid=$(psql -d bench -At <<SQL
select pg_backend_pid();
do \$\$
declare ids bigint[]; tokens bigint[]; keys text[];
begin
  for round in 1..$ROUNDS loop
    select array_agg(c.id::bigint order by c.id::bigint), array_agg(c.claim_token::bigint order by c.id::bigint),
           array_agg(c.concurrency_key order by c.id::bigint)
    into ids, tokens, keys
    from gen_durable.claim_rows('default', array['Noop'], $BATCH, 'node', 30000, null, least($BATCH, 32), $BATCH) c;
    commit;
    perform * from gen_durable.complete_outcomes(
      (select json_agg(json_strip_nulls(json_build_object('id', x.id, 'token', x.token, 'status', 'done',
                                                          'outcome', 'done', 'duration_ms', 0, 'concurrency_key', x.key))
                       order by x.id)
       from unnest(ids, tokens, keys) as x(id, token, key)), $release);
    commit;
  end loop;
end \$\$;
select count(*) filter (where status = 'done') from gen_durable.instances;
SQL
)
backend=$(echo "$pid" | head -1)
done_rows=$(echo "$pid" | tail -1)
out="$work/callgrind.$backend"
# The backend writes its counts as it exits.
for _ in $(seq 1 100); do [ -s "$out" ] && grep -q '^totals:\|^summary:' "$out" && break; sleep 0.2; done
ir=$(grep -m1 '^totals:\|^summary:' "$out" | awk '{print $2}')
[ -n "$ir" ] || fail "no callgrind counts in $out"
echo "claim + group commit of $done_rows no-op jobs of $QUEUED queued, batches of $BATCH$([ "$KEYS" -gt 0 ] && echo ", $KEYS concurrency keys"): $((ir / done_rows)) instructions a job in the Postgres backend ($ir in all; $DIST)"
if [ -n "${BENCH_ANNOTATE:-}" ]; then
  callgrind_annotate --inclusive=yes "$out" | head -80
fi
