#!/usr/bin/env bash
# Gateway benchmarks (figures only, nothing asserted):
#   1. initial sync of one bucket of BENCH_BIG_OPS ops (default 1,000,000): ops/s
#   2. live latency commit -> client receipt, BENCH_LIVE_CLIENTS clients (default 1,000)
#      each in its own bucket plus one shared bucket: p50/p99 (BENCH_LIVE_THREADS receiving
#      threads, default 1)
#   3. BENCH_IDLE_CLIENTS idle, synced connections (default 10,000): gateway RSS per connection
# Starts its own throwaway cluster (fsync off: we measure the gateway, not the disk) and the
# optimized gateway build. Usage: bench/gateway_bench.sh [initial|live|idle ...]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/pgenv.sh
BIG_OPS=${BENCH_BIG_OPS:-1000000}
LIVE_CLIENTS=${BENCH_LIVE_CLIENTS:-1000}
LIVE_WRITES=${BENCH_LIVE_WRITES:-400}
# Receiving threads of the load generator (each its own event loop). One by default: on
# 2 cores a second one competes with the gateway's send threads. In three alternated pairs
# at 1,000 clients two threads gave p99 19.7 / 27.6 / 20.3 ms against 16.8 / 17.5 / 20.9;
# at 10,000 clients two gave p99 101 ms, one 122 ms (one run each).
LIVE_THREADS=${BENCH_LIVE_THREADS:-1}
IDLE_CLIENTS=${BENCH_IDLE_CLIENTS:-10000}
# Live runs first: right after loading 1M rows, autovacuum/analyze of the op log competes
# for the 2 cores and commit->NOTIFY alone takes ~20 ms (database side, printed in the split).
PARTS=${*:-live idle initial}
OUT=build/gateway
mkdir -p build/bench
make --no-print-directory -f gateway/gateway.mk all >build/bench/gateway_build.log 2>&1 ||
  { tail -n 30 build/bench/gateway_build.log; exit 1; }
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

dir=$(mktemp -d /tmp/syncline-gwbench.XXXXXX)
gw_pid=""
cleanup() {
  [ -n "$gw_pid" ] && kill "$gw_pid" 2>/dev/null && wait "$gw_pid" 2>/dev/null
  bash scripts/pgcluster.sh stop "$dir"
  rm -rf "$dir"
}
trap cleanup EXIT
eval "$(PG_FSYNC=off bash scripts/pgcluster.sh start "$dir")"
export PGHOST PGPORT PGUSER PGDATA PGDATABASE=syncline  # pgcluster.sh created it
psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
CREATE EXTENSION syncline;
CREATE TABLE bench_items (id text PRIMARY KEY, owner text NOT NULL, v text);
CREATE TABLE bench_shared (id text PRIMARY KEY, v text);
SELECT syncline.create_bucket('bench_user', 'SELECT syncline.user_id() AS user_id',
  ARRAY['SELECT * FROM bench_items WHERE owner = bucket.user_id']);
SELECT syncline.create_bucket('bench_global', NULL, ARRAY['SELECT * FROM bench_shared']);
INSERT INTO bench_shared VALUES ('hello', 'world');
SELECT syncline.flush();
SQL
# The flusher attaches to database "syncline" as the server starts: make sure it is up.
for _ in $(seq 1 150); do
  [ "$(psql -X -q -tAc "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'syncline flusher' AND datname = 'syncline'")" -ge 1 ] && break
  sleep 0.1
done
# Let the worker publish the rule change (it goes out with the next data flush)
# so that the measurement does not start with every client rechecking.
psql -X -q -c "INSERT INTO bench_shared VALUES ('warmup', 'x')" && sleep 1

secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$OUT/syncline-gateway" --listen "127.0.0.1:$port" --jwt-hs256-secret "$secret" \
  --database-url "host=$PGHOST port=$PGPORT user=$PGUSER dbname=syncline" \
  --max-connections 20000 --hello-timeout 600 >build/bench/gateway.log 2>&1 &
gw_pid=$!
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
export SYNCLINE_GW_HOST=127.0.0.1 SYNCLINE_GW_PORT=$port SYNCLINE_JWT_SECRET=$secret

echo "== gateway benchmarks ($(nproc) cores; Postgres fsync off; gateway pool 4)"
for part in $PARTS; do
  case $part in
  initial)
    t0=$(date +%s%N)
    psql -X -q -c "INSERT INTO bench_items SELECT 'big-' || g, 'big', md5(g::text) FROM generate_series(1, $BIG_OPS) g" \
      -c "SELECT syncline.flush()" >/dev/null
    echo "loaded $BIG_OPS rows in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
    "$OUT/gateway_load" initial
    ;;
  live)
    # CPU of the gateway and of the load generator (same machine) over the run,
    # as a share of one core: how much of the 2 cores each took.
    ticks=$(getconf CLK_TCK)
    gw_cpu0=$(awk '{print $14 + $15}' "/proc/$gw_pid/stat")
    t0=$(date +%s%N)
    TIMEFORMAT="%U %S" && { time "$OUT/gateway_load" live "$LIVE_CLIENTS" "$LIVE_WRITES" "$LIVE_THREADS" 2>&1; } 2>build/bench/load_cpu.txt
    wall_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    gw_cpu1=$(awk '{print $14 + $15}' "/proc/$gw_pid/stat")
    awk -v wall="$wall_ms" -v g="$((gw_cpu1 - gw_cpu0))" -v hz="$ticks" '{
      printf "  cpu over %.1f s (connect, sync, %s): load generator %.0f%% of a core, gateway %.0f%%\n",
        wall / 1000, "live rounds", ($1 + $2) * 100000 / wall, g / hz * 100000 / wall }' build/bench/load_cpu.txt
    curl -s "http://127.0.0.1:$port/metrics" | awk '
      /^syncline_live_round_seconds_sum/ {s=$2} /^syncline_live_round_seconds_count/ {c=$2}
      /^syncline_notifications_total/ {n=$2}
      END { if (c > 0) printf "  gateway: %d notifications, %d live rounds, mean round %.2f ms (NOTIFY -> queued)\n", n, c, s / c * 1000 }'
    ;;
  idle) "$OUT/gateway_load" idle "$IDLE_CLIENTS" "$gw_pid" ;;
  *) echo "unknown part $part" >&2; exit 2 ;;
  esac
done
