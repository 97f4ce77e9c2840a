#!/usr/bin/env bash
# Runs every test suite against a throwaway PostgreSQL cluster (called by
# `make test` after the build and `make install`).
#   scripts/run-tests.sh            all suites
#   SUITES="regress concurrency" scripts/run-tests.sh   only those
#   CONC_SEEDS="1 2 3" CONC_SECONDS=10 CONC_WRITERS=4   concurrency test knobs
# Prints one line per suite and a final "N passed, M failed" (suites); exits
# non-zero when any suite failed. On failure it prints regression.diffs and the
# server log tail.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

. scripts/pgenv.sh
PG_REGRESS=${PG_REGRESS:-$PGXS_DIR/test/regress/pg_regress}
SUITES=${SUITES:-"regress isolation units gateway concurrency example lifecycle e2e powersync demo"}
CONC_SEEDS=${CONC_SEEDS:-"1 2 3"}
CONC_SECONDS=${CONC_SECONDS:-10}
CONC_WRITERS=${CONC_WRITERS:-4}

# Every tool a suite calls, named when it is missing (a fresh machine has
# only what scripts/install-deps.sh installs): a missing curl used to show up
# as "gateway did not become healthy".
missing_tools=()
for tool in psql pg_dump createdb dropdb curl python3 openssl runuser node npm; do
  command -v "$tool" >/dev/null 2>&1 || missing_tools+=("$tool")
done
if [ ${#missing_tools[@]} -gt 0 ]; then
  echo "missing tools: ${missing_tools[*]} (run scripts/install-deps.sh, or make test, which does)" >&2
  echo "0 passed, 1 failed"
  exit 1
fi

CLUSTER_DIR=""
cleanup() {
  [ -n "$CLUSTER_DIR" ] || return 0
  bash "$ROOT/scripts/pgcluster.sh" stop "$CLUSTER_DIR" || true
  rm -rf "$CLUSTER_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Another cluster starting at the same moment may take the port pgcluster.sh
# picked: try again with a fresh directory.
exports=""
for attempt in 1 2 3; do
  CLUSTER_DIR=$(mktemp -d /tmp/syncline-test.XXXXXX)
  echo "== starting throwaway cluster in $CLUSTER_DIR"
  exports=$(bash scripts/pgcluster.sh start "$CLUSTER_DIR") && break
  exports=""
  cleanup
  CLUSTER_DIR=""
  sleep 1
done
if [ -z "$exports" ]; then
  echo "could not start the test cluster (is the extension installed? try: make install)" >&2
  echo "0 passed, 1 failed"
  exit 1
fi
eval "$exports"
export PGHOST PGPORT PGUSER PGDATA
export PGDATABASE=postgres

passed=0
failed=0
results=()
show_server_log=0

# record NAME STATUS(0 ok, 77 skipped, else failed) SECONDS
record() {
  local name=$1 rc=$2 secs=$3
  if [ "$rc" -eq 0 ]; then
    passed=$((passed + 1)); results+=("$(printf '%-24s ok      %4ss' "$name" "$secs")")
  elif [ "$rc" -eq 77 ]; then
    results+=("$(printf '%-24s skipped' "$name")")
  else
    failed=$((failed + 1)); show_server_log=1
    results+=("$(printf '%-24s FAILED  %4ss (exit %s)' "$name" "$secs" "$rc")")
  fi
}

# run_suite NAME COMMAND...: runs it with its output streamed, then records it.
run_suite() {
  local name=$1; shift
  echo
  echo "== $name"
  local start=$SECONDS rc=0
  "$@" || rc=$?
  record "$name" "$rc" $((SECONDS - start))
}

suite_wanted() { case " $SUITES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

regress() {
  if [ ! -f sql/schedule ]; then
    echo "sql/schedule is missing: no pg_regress suite yet"
    return 77
  fi
  mkdir -p build/regress
  "$PG_REGRESS" --inputdir=. --outputdir=build/regress --bindir="$PGBIN" \
    --host="$PGHOST" --port="$PGPORT" --user="$PGUSER" \
    --dbname=contrib_regression --schedule=sql/schedule
  local rc=$?
  if [ $rc -ne 0 ] && [ -f build/regress/regression.diffs ]; then
    echo "---- build/regress/regression.diffs"
    head -c 20000 build/regress/regression.diffs
  fi
  return $rc
}

# Concurrent sessions (isolationtester): specs/*.spec, expected/*.out.
isolation() {
  local runner=$PGXS_DIR/test/isolation/pg_isolation_regress
  mkdir -p build/isolation
  "$runner" --inputdir=. --outputdir=build/isolation --bindir="$PGBIN" \
    --host="$PGHOST" --port="$PGPORT" --user="$PGUSER" \
    --dbname=isolation_regression --schedule=specs/schedule
  local rc=$?
  if [ $rc -ne 0 ] && [ -f build/isolation/regression.diffs ]; then
    echo "---- build/isolation/regression.diffs"
    head -c 20000 build/isolation/regression.diffs
  fi
  return $rc
}

units() {
  if [ ! -x build/unit/extension_tests ]; then
    echo "build/unit/extension_tests was not built"
    return 1
  fi
  build/unit/extension_tests
}

gateway_units() {
  if [ ! -x build/gateway/gateway_tests ]; then
    echo "build/gateway/gateway_tests is not there: skipped"
    return 77
  fi
  build/gateway/gateway_tests
}

concurrency() {
  local seed=$1
  if [ ! -x build/tests/concurrency ]; then
    echo "build/tests/concurrency was not built"
    return 1
  fi
  build/tests/concurrency --seed "$seed" --writers "$CONC_WRITERS" --seconds "$CONC_SECONDS"
}

# The workout example loads, syncs alice's data and enforces its write rules.
example() {
  local db=workout_example out
  PGOPTIONS="-c client_min_messages=warning" psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" || return 1
  psql -X -q -v ON_ERROR_STOP=1 -d "$db" -c "CREATE EXTENSION syncline" \
    -f examples/workout/schema.sql -f examples/workout/rules.sql >/dev/null || return 1
  out=$(psql -X -At -v ON_ERROR_STOP=1 -d "$db" <<'SQL'
SELECT syncline.flush() > 0;
SELECT string_agg(b->>'bucket' || '=' || (b->>'count'), ' ' ORDER BY b->>'bucket')
  FROM jsonb_array_elements(syncline.checkpoint('{"sub": "alice"}')->'buckets') b;
SELECT syncline.apply_writes('{"sub": "alice"}', 'example-test', $${"seq": 1, "ops": [
  {"op": "PUT", "type": "sets", "id": "d0000000-0000-4000-8000-000000000001",
   "data": {"workout_id": "a0000000-0000-4000-8000-000000000001", "user_id": "alice", "exercise_id": 2, "reps": 3, "weight_kg": 60}}]}$$)->>'status';
SELECT syncline.apply_writes('{"sub": "alice"}', 'example-test', $${"seq": 2, "ops": [
  {"op": "PUT", "type": "sets", "id": "d0000000-0000-4000-8000-000000000002",
   "data": {"workout_id": "b0000000-0000-4000-8000-000000000001", "user_id": "alice", "exercise_id": 2, "reps": 3}}]}$$)->>'status';
SELECT syncline.apply_writes('{"sub": "alice"}', 'example-test', $${"seq": 3, "ops": [
  {"op": "PATCH", "type": "exercises", "id": 1, "data": {"name": "Squat"}}]}$$)->>'status';
SELECT syncline.write_checkpoint('example-test', 1) AS wc \gset
SELECT count(*) FROM syncline.bucket_data('user_workouts["alice"]', 0, :wc, 1000)
 WHERE object_id = 'd0000000-0000-4000-8000-000000000001';
SQL
) || { echo "$out"; return 1; }
  local want
  want=$(printf '%s\n' t 'exercises[]=8 user_workouts["alice"]=8' applied rejected rejected 1)
  psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db"
  if [ "$out" != "$want" ]; then
    echo "unexpected result from the workout example:"
    diff <(echo "$want") <(echo "$out")
    return 1
  fi
  echo "workout example: loads, alice gets her buckets, her own write applies, others are rejected"
}

# pg_dump/restore round trip and the worker surviving errors.
lifecycle() {
  bash tests/lifecycle/run.sh
}

e2e() {
  if [ ! -f tests/e2e/run.sh ]; then
    echo "tests/e2e/run.sh is not there: skipped"
    return 77
  fi
  SYNCLINE_TEST_CLUSTER="$CLUSTER_DIR" bash tests/e2e/run.sh
}

# The PowerSync front with the real PowerSync Node SDK (tests/powersync).
powersync() {
  SYNCLINE_TEST_CLUSTER="$CLUSTER_DIR" bash tests/powersync/run.sh
}

# The workout web app in headless Chromium (scripts/demo.sh, its own cluster and gateway).
demo() {
  bash scripts/demo.sh
}

suite_wanted regress && run_suite regress regress
suite_wanted isolation && run_suite isolation isolation
suite_wanted units && run_suite unit/extension_tests units
suite_wanted units && run_suite "error rules (source)" bash tests/unit/error_rules.sh
suite_wanted gateway && run_suite gateway/gateway_tests gateway_units
if suite_wanted concurrency; then
  for seed in $CONC_SEEDS; do run_suite "concurrency seed $seed" concurrency "$seed"; done
fi
suite_wanted example && run_suite "workout example" example
suite_wanted lifecycle && run_suite lifecycle lifecycle
suite_wanted e2e && run_suite e2e e2e
suite_wanted powersync && run_suite powersync powersync
suite_wanted demo && run_suite "demo (web app)" demo

if [ "$show_server_log" -eq 1 ]; then
  echo
  # Errors first (without the worker's retries while database "syncline" does
  # not exist), then the raw tail.
  echo "---- server log: last errors ($CLUSTER_DIR/server.log)"
  grep -E 'ERROR|PANIC|TRAP|terminated by signal|server process' "$CLUSTER_DIR/server.log" 2>/dev/null |
    grep -v 'database "syncline" does not exist' | tail -n 40 || true
  echo "---- server log tail"
  grep -vE 'database "syncline" does not exist|"syncline (flusher|maintenance)" \(PID [0-9]+\) exited with exit code 1' \
    "$CLUSTER_DIR/server.log" 2>/dev/null | tail -n 30 || true
fi

echo
echo "== summary"
for line in "${results[@]}"; do echo "$line"; done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
