#!/usr/bin/env bash
# Runs the pg_regress suite (sql/schedule) against the server in PGHOST/PGPORT.
set -euo pipefail
cd "$(dirname "$0")/.."
pgxs=$(dirname "$(pg_config --pgxs)")
mkdir -p build/regress
"$pgxs/../test/regress/pg_regress" --inputdir=. --outputdir=build/regress \
  --bindir="$(pg_config --bindir)" --dbname=contrib_regression --schedule=sql/schedule "$@"
