#!/usr/bin/env bash
# Throwaway PostgreSQL 15 cluster for tests, benchmarks and `make run`.
#   pgcluster.sh start DIR [PORT]   initdb into DIR, create the extension worker's
#                                   database ($SYNCLINE_WORKER_DB, default syncline),
#                                   start it, print shell exports
#   pgcluster.sh stop DIR           stop it (DIR is kept; rm -rf it yourself)
# The server runs as an unprivileged user (initdb refuses root): the current
# user, or `postgres` when run as root. The unix socket lives in DIR.
set -euo pipefail
. "$(dirname "$0")/pgenv.sh"

# True when a TCP socket of this host uses local port $1 in any state: a listener, or the
# local end of a connection (54320-54420 lies in Linux's ephemeral range, so a test's
# outgoing connection can hold one, and the server's bind would then fail).
port_in_use() {
  local hex f files=()
  hex=$(printf ':%04X' "$1")
  for f in /proc/net/tcp /proc/net/tcp6; do [ -r "$f" ] && files+=("$f"); done
  [ ${#files[@]} -gt 0 ] || return 1
  awk -v h="$hex" 'FNR > 1 && substr($2, length($2) - 4) == h { found = 1 } END { exit !found }' \
    "${files[@]}"
}

free_port() {
  local p
  for p in $(seq 54320 54420); do
    if ! port_in_use "$p" && ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null &&
      [ ! -e "/tmp/.s.PGSQL.$p" ]; then
      echo "$p"; return 0
    fi
  done
  echo "no free port in 54320-54420" >&2; return 1
}

cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR [PORT]" >&2; exit 2; }

case "$cmd" in
start)
  port=${3:-$(free_port)}
  worker_db=${SYNCLINE_WORKER_DB:-syncline}
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
  as_owner "$PGBIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
  cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
shared_preload_libraries = 'syncline'
syncline.database = '$worker_db'
max_connections = ${PG_MAX_CONNECTIONS:-300}
shared_buffers = 256MB
fsync = ${PG_FSYNC:-on}
log_min_messages = warning
log_line_prefix = '%m [%p] %d '
timezone = 'UTC'
CONF
  # The extension's worker connects to $worker_db as soon as the server is up and
  # retries only every 10 s: create the database first (single-user mode, without
  # loading the extension), so nobody has to and the worker attaches at once.
  if ! echo "CREATE DATABASE \"${worker_db//\"/\"\"}\"" |
    as_owner "$PGBIN/postgres" --single -D "$dir/data" -c shared_preload_libraries= postgres \
      >"$dir/createdb.log" 2>&1 || grep -qE 'ERROR|FATAL' "$dir/createdb.log"; then
    echo "cannot create database \"$worker_db\" in $dir:" >&2
    cat "$dir/createdb.log" >&2
    exit 1
  fi
  as_owner "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null \
    || { cat "$dir/server.log" >&2; exit 1; }
  echo "export PGHOST='$dir' PGPORT=$port PGUSER=postgres PGDATA='$dir/data'"
  ;;
stop)
  [ -d "$dir/data" ] && as_owner "$PGBIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
  ;;
restart)
  as_owner "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -m fast -w -t 60 restart >/dev/null
  ;;
*) echo "unknown command $cmd" >&2; exit 2 ;;
esac
