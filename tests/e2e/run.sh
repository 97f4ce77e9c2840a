#!/usr/bin/env bash
# End-to-end tests of the gateway against a real PostgreSQL with the syncline
# extension. Called by `make test` (scripts/run-tests.sh) with a running
# throwaway cluster: PGHOST/PGPORT/PGUSER set, SYNCLINE_TEST_CLUSTER = its dir.
# Run alone, it starts (and stops) its own cluster.
#   tests/e2e/run.sh [TEST_NAME_SUBSTRING]
# Starts the ASan build of the gateway (and a release build serving wss:// on a
# second port, which also takes RS256 tokens from a JWKS file), runs
# build/gateway/e2e_client, then
# checks the gateway stopped cleanly on SIGTERM with no sanitizer report.
# Prints "N passed, M failed" last; exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
. scripts/pgenv.sh
OUT=build/gateway
LOG_DIR=build/e2e
mkdir -p "$LOG_DIR"

make --no-print-directory -f gateway/gateway.mk all >"$LOG_DIR/build.log" 2>&1 || {
  tail -n 40 "$LOG_DIR/build.log"
  echo "0 passed, 1 failed"
  exit 1
}

own_cluster=""
if [ -z "${SYNCLINE_TEST_CLUSTER:-}" ]; then
  if [ -n "${PGHOST:-}" ] && [ -d "${PGHOST}/data" ]; then
    SYNCLINE_TEST_CLUSTER=$PGHOST
  else
    own_cluster=$(mktemp -d /tmp/syncline-e2e.XXXXXX)
    eval "$(bash scripts/pgcluster.sh start "$own_cluster")" || { echo "0 passed, 1 failed"; exit 1; }
    export PGHOST PGPORT PGUSER PGDATA
    SYNCLINE_TEST_CLUSTER=$own_cluster
  fi
fi
export SYNCLINE_TEST_CLUSTER
export PGDATABASE=syncline

gw_pid=""
tls_pid=""
bounded_pid=""
cleanup() {
  [ -n "$gw_pid" ] && kill "$gw_pid" 2>/dev/null
  [ -n "$bounded_pid" ] && kill "$bounded_pid" 2>/dev/null
  [ -n "$tls_pid" ] && kill "$tls_pid" 2>/dev/null
  if [ -n "$own_cluster" ]; then
    bash scripts/pgcluster.sh stop "$own_cluster"
    rm -rf "$own_cluster"
  fi
}
trap cleanup EXIT

# The extension's background worker serves database "syncline": pgcluster.sh
# creates it; a cluster given through PGHOST may not have it yet.
psql -X -q -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'syncline'" | grep -q 1 ||
  createdb syncline
psql -X -q -v ON_ERROR_STOP=1 >"$LOG_DIR/setup.log" 2>&1 <<'SQL' || { cat "$LOG_DIR/setup.log"; echo "0 passed, 1 failed"; exit 1; }
CREATE EXTENSION IF NOT EXISTS syncline;
DO $$ BEGIN PERFORM syncline.drop_bucket('e2e_user'); EXCEPTION WHEN others THEN NULL; END $$;
DO $$ BEGIN PERFORM syncline.drop_bucket('e2e_global'); EXCEPTION WHEN others THEN NULL; END $$;
DO $$ BEGIN PERFORM syncline.drop_bucket('e2e_list'); EXCEPTION WHEN others THEN NULL; END $$;
DROP TABLE IF EXISTS e2e_items, e2e_shared, e2e_members, e2e_todos;
CREATE TABLE e2e_items (id text PRIMARY KEY, owner text NOT NULL, title text);
CREATE TABLE e2e_shared (id text PRIMARY KEY, body text);
CREATE TABLE e2e_members (user_id text, list_id text, PRIMARY KEY (user_id, list_id));
CREATE TABLE e2e_todos (id text PRIMARY KEY, list_id text NOT NULL, title text);
INSERT INTO e2e_shared VALUES ('welcome', 'hello everyone'), ('rules', 'be nice');
GRANT SELECT, INSERT, UPDATE, DELETE ON e2e_items TO syncline_writer;
SELECT syncline.create_bucket('e2e_user', 'SELECT syncline.user_id() AS user_id',
  ARRAY['SELECT * FROM e2e_items WHERE owner = bucket.user_id']);
SELECT syncline.create_bucket('e2e_global', NULL, ARRAY['SELECT * FROM e2e_shared']);
SELECT syncline.create_bucket('e2e_list',
  'SELECT list_id FROM e2e_members WHERE user_id = syncline.user_id()',
  ARRAY['SELECT * FROM e2e_todos WHERE list_id = bucket.list_id']);
SQL

# The flusher (background worker) restarts every 10 s while database "syncline" is
# missing: wait until it is attached, or live updates would depend on its timing.
for _ in $(seq 1 150); do
  [ "$(psql -X -q -tAc "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'syncline flusher' AND datname = 'syncline'")" -ge 1 ] && break
  sleep 0.1
done
psql -X -q -tAc "SELECT syncline.wait_for_initial_copy(30000)" | grep -q t || { echo "initial copy did not finish"; echo "0 passed, 1 failed"; exit 1; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
secret="e2e-secret-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
send_queue=1048576
max_conn=40
max_per_user=8
gw_log="$LOG_DIR/gateway.log"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
  "$OUT/syncline-gateway-asan" --listen "127.0.0.1:$port" --jwt-hs256-secret "$secret" --jwt-leeway 5 \
  --database-url "host=$PGHOST port=$PGPORT user=$PGUSER dbname=syncline" \
  --send-queue-bytes "$send_queue" --max-connections "$max_conn" --max-connections-per-user "$max_per_user" --page-ops 1000 \
  --write-queue-bytes 2M --log-level debug \
  >"$gw_log" 2>&1 &
gw_pid=$!
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
if ! curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then
  echo "gateway did not become healthy:"; tail -n 30 "$gw_log"
  echo "0 passed, 1 failed"
  exit 1
fi

# A second gateway (release build) serving wss:// and https:// with a throwaway
# self-signed certificate, and RS256 tokens from a JWKS file next to HS256:
# checked here over https, and by the tls_* / rs256_* tests of e2e_client.
tls_ok=0
tls_pid=""
tls_port=""
jwks_kid=e2e-rsa
if openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
    -keyout "$LOG_DIR/tls.key" -out "$LOG_DIR/tls.crt" >/dev/null 2>&1 &&
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$LOG_DIR/jwt-rsa.key" 2>/dev/null &&
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$LOG_DIR/jwt-other-rsa.key" 2>/dev/null &&
  python3 - "$LOG_DIR/jwt-rsa.key" "$jwks_kid" >"$LOG_DIR/jwks.json" <<'PY'
import base64, json, re, subprocess, sys
def openssl_rsa(flag):
    return subprocess.run(["openssl", "rsa", "-in", sys.argv[1], "-noout", flag],
                          check=True, capture_output=True, text=True).stdout
def b64url(n):
    return base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()
modulus = int(openssl_rsa("-modulus").strip().split("=", 1)[1], 16)
exponent = int(re.search(r"publicExponent: (\d+)", openssl_rsa("-text")).group(1))
json.dump({"keys": [{"kty": "RSA", "kid": sys.argv[2], "use": "sig", "alg": "RS256",
                     "n": b64url(modulus), "e": b64url(exponent)}]}, sys.stdout)
PY
then
  tls_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$OUT/syncline-gateway" --listen "127.0.0.1:$tls_port" --jwt-hs256-secret "$secret" \
    --jwks "$LOG_DIR/jwks.json" \
    --database-url "host=$PGHOST port=$PGPORT user=$PGUSER dbname=syncline" \
    --tls-cert "$LOG_DIR/tls.crt" --tls-key "$LOG_DIR/tls.key" >"$LOG_DIR/gateway-tls.log" 2>&1 &
  tls_pid=$!
  for _ in $(seq 1 50); do
    body=$(curl -fs --cacert "$LOG_DIR/tls.crt" "https://localhost:$tls_port/healthz" 2>/dev/null) && break
    sleep 0.1
  done
  plain=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$tls_port/healthz" 2>/dev/null)
  [[ "${body:-}" == ok* ]] && [ "$plain" != 200 ] && tls_ok=1
else
  echo "cannot make the TLS certificate / RSA keys / JWKS with openssl and python3"
fi

# A release gateway (its memory is what it would be in production, ASan's quarantine would
# hide it) with small pages and send queue and short statement timeouts, for e2e_bounds.cpp.
bounded_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$OUT/syncline-gateway" --listen "127.0.0.1:$bounded_port" --jwt-hs256-secret "$secret" \
  --database-url "host=$PGHOST port=$PGPORT user=$PGUSER dbname=syncline" \
  --page-bytes 1M --send-queue-bytes 2M --live-round-bytes 4M --db-statement-timeout 1500 \
  --db-lock-timeout 1000 \
  >"$LOG_DIR/gateway-bounded.log" 2>&1 &
bounded_pid=$!
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$bounded_port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done

# --listen with an IPv6 literal binds that address only (IPv6-only, no IPv4-mapped wildcard):
# [::1]:PORT answers, 127.0.0.1:PORT is refused. Skipped when this host has no ::1.
v6_ok=1
v6_detail=""
if grep -q '^0\{31\}1 ' /proc/net/if_inet6 2>/dev/null; then
  v6_port=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET6); s.bind(("::1",0)); print(s.getsockname()[1])')
  "$OUT/syncline-gateway" --listen "[::1]:$v6_port" --jwt-hs256-secret "$secret" \
    --database-url "host=$PGHOST port=$PGPORT user=$PGUSER dbname=syncline" >"$LOG_DIR/gateway-v6.log" 2>&1 &
  v6_pid=$!
  v6_code=000
  for _ in $(seq 1 50); do
    v6_code=$(curl -s -o /dev/null -w '%{http_code}' -g "http://[::1]:$v6_port/healthz" 2>/dev/null)
    [ "$v6_code" != 000 ] && break
    sleep 0.1
  done
  v4_code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$v6_port/healthz" 2>/dev/null)
  kill -TERM "$v6_pid" 2>/dev/null
  wait "$v6_pid" 2>/dev/null
  if [ "$v6_code" = 000 ] || [ "$v4_code" != 000 ]; then
    v6_ok=0
    v6_detail="[::1] answered $v6_code, 127.0.0.1 answered $v4_code"
    tail -n 5 "$LOG_DIR/gateway-v6.log"
  fi
else
  v6_detail="skipped: no ::1 on this host"
fi

SYNCLINE_GW_BOUNDED_PORT=$bounded_port SYNCLINE_GW_BOUNDED_PID=$bounded_pid \
SYNCLINE_GW_HOST=127.0.0.1 SYNCLINE_GW_PORT=$port SYNCLINE_JWT_SECRET=$secret \
  SYNCLINE_GW_PID=$gw_pid SYNCLINE_GW_SEND_QUEUE=$send_queue SYNCLINE_GW_MAX_CONNECTIONS=$max_conn SYNCLINE_GW_MAX_PER_USER=$max_per_user \
  SYNCLINE_GW_TLS_PORT=$tls_port SYNCLINE_JWKS_KID=$jwks_kid \
  SYNCLINE_JWKS_PRIVATE_KEY="$LOG_DIR/jwt-rsa.key" SYNCLINE_OTHER_PRIVATE_KEY="$LOG_DIR/jwt-other-rsa.key" \
  "$OUT/e2e_client" "${1:-}" | tee "$LOG_DIR/client.out"
summary=$(tail -n 1 "$LOG_DIR/client.out")
passed=$(echo "$summary" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1/p')
failed=$(echo "$summary" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\2/p')
[ -n "$passed" ] || { passed=0; failed=1; echo "FAIL  e2e_client did not finish (crashed?)"; }

if [ "$tls_ok" -eq 1 ]; then
  passed=$((passed + 1)); echo "ok    tls_https_healthz"
else
  failed=$((failed + 1)); echo "FAIL  tls_https_healthz (body \"${body:-}\", plain http got ${plain:-})"
  tail -n 5 "$LOG_DIR/gateway-tls.log"
fi
if [ "$v6_ok" -eq 1 ]; then
  passed=$((passed + 1)); echo "ok    listen_ipv6_literal_exact ${v6_detail}"
else
  failed=$((failed + 1)); echo "FAIL  listen_ipv6_literal_exact ($v6_detail)"
fi
if [ -n "$bounded_pid" ]; then
  kill -TERM "$bounded_pid" 2>/dev/null
  wait "$bounded_pid" 2>/dev/null
  bounded_pid=""
fi
if [ -n "$tls_pid" ]; then
  kill -TERM "$tls_pid" 2>/dev/null
  wait "$tls_pid" 2>/dev/null
  tls_pid=""
fi

# The gateway got SIGTERM from the last test (or gets it now): it must exit 0
# with no AddressSanitizer / UBSan / leak report.
kill -TERM "$gw_pid" 2>/dev/null
gw_rc=0
for _ in $(seq 1 100); do kill -0 "$gw_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$gw_pid" 2>/dev/null; then
  gw_rc=124
  kill -KILL "$gw_pid"
fi
wait "$gw_pid" 2>/dev/null || gw_rc=$?
gw_pid=""
if [ "$gw_rc" -eq 0 ] && ! grep -qE "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:" "$gw_log"; then
  passed=$((passed + 1)); echo "ok    gateway_exit_clean_no_sanitizer_report"
else
  failed=$((failed + 1)); echo "FAIL  gateway_exit_clean_no_sanitizer_report (exit $gw_rc)"
  grep -A30 -E "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:" "$gw_log" | head -60
fi
if [ "$failed" -ne 0 ]; then
  # Kept under a name of its own: a rerun overwrites gateway.log, and a rare failure is only
  # understood from the log of the run that failed.
  kept="$LOG_DIR/failed-$(date +%Y%m%d-%H%M%S)-$$"
  mkdir -p "$kept"
  cp "$LOG_DIR"/gateway*.log "$LOG_DIR/client.out" "$kept/" 2>/dev/null
  echo "---- gateway log tail ($gw_log; the logs of this run are kept in $kept)"
  tail -n 40 "$gw_log"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
