# Sourced by the scripts that start PostgreSQL: picks the server binaries.
# PGBIN, when set, wins; otherwise this checkout's private copy (build/pg, made
# by `make pgtree`, with this checkout's extension installed), else the
# system's. The client tools on PATH (psql, pg_dump, pgbench, pg_config for
# headers) stay the system's: the copy's are the same files.
_pgenv_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "${PGBIN:-}" ]; then
  _pgenv_sys=$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)
  if [ -x "$_pgenv_root/build/pg$_pgenv_sys/postgres" ]; then
    # Resolved: build/pg may be a link to a copy outside the checkout (scripts/pgtree.sh).
    PGBIN=$(cd -P "$_pgenv_root/build/pg" && pwd)$_pgenv_sys
  else
    PGBIN=$_pgenv_sys
  fi
fi
export PGBIN
# pg_regress and isolationtester of the same installation.
PGXS_DIR=$(dirname "$("$PGBIN/pg_config" --pgxs)")/..
export PGXS_DIR
unset _pgenv_root _pgenv_sys

# Runs a server binary as its owner: initdb refuses root, so as root it runs
# as postgres (from /, which that user may enter; the caller's directory,
# /root say, it may not).
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}
