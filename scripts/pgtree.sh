#!/usr/bin/env bash
# Makes a private copy of the system's PostgreSQL installation under DIR (hard
# links where the file system allows, plain copies otherwise), keeping the
# absolute layout (DIR/usr/lib/postgresql/15/bin, DIR/usr/share/postgresql/15):
# PostgreSQL finds its share and lib directories relative to its own binary,
# so the copy serves the extension `make install DESTDIR=DIR` puts there.
# Tests, `make run` and the benchmarks use it: they need no write access to
# the system's PostgreSQL, and two checkouts never overwrite each other's
# extension. Rebuilt when the system's PostgreSQL changes.
#   pgtree.sh DIR
#
# The server runs as an unprivileged user (`postgres` when we are root), which must be
# able to reach the copy. A checkout under a directory that user may not enter (/root is
# mode 700 on a fresh machine) keeps the copy in /var/tmp instead, with DIR a symbolic
# link to it; pgenv.sh and the Makefile resolve the link, so the server never walks
# through the checkout's path.
set -euo pipefail
dir=${1:?usage: pgtree.sh DIR}
mkdir -p "$(dirname "$dir")"
if [ "$(id -u)" -eq 0 ] && ! (cd / && runuser -u postgres -- test -x "$(dirname "$dir")") 2>/dev/null; then
  real=/var/tmp/syncline-pgtree-$(printf '%s' "$dir" | cksum | cut -d' ' -f1)
  if [ ! -L "$dir" ] || [ "$(readlink "$dir")" != "$real" ]; then
    rm -rf "$dir"
    ln -s "$real" "$dir"
  fi
  mkdir -p "$real"
  chmod 755 "$real"
  dir=$real
fi
pg_config=${PG_CONFIG:-$(command -v pg_config || echo /usr/lib/postgresql/15/bin/pg_config)}
bindir=$("$pg_config" --bindir)
pkglibdir=$("$pg_config" --pkglibdir)
sharedir=$("$pg_config" --sharedir)
stamp="$(stat -c '%i %Y' "$bindir/postgres") $("$pg_config" --version)"
if [ -f "$dir/.stamp" ] && [ "$(cat "$dir/.stamp")" = "$stamp" ]; then
  exit 0
fi
rm -rf "$dir"
for src in "$bindir" "$pkglibdir" "$sharedir"; do
  mkdir -p "$dir$(dirname "$src")"
  [ -d "$dir$src" ] && continue  # bindir and pkglibdir may share a parent
  cp -al "$src" "$dir$src" 2>/dev/null || { rm -rf "${dir:?}$src"; cp -a "$src" "$dir$src"; }
done
# Whatever a system-wide `make install` left there is not this checkout's.
rm -f "$dir$pkglibdir"/syncline.so "$dir$sharedir"/extension/syncline*
# The server runs as an unprivileged user (initdb refuses root): it must be
# able to reach the copy (the linked files keep the system's modes).
find "$dir" -type d -exec chmod a+rx {} +
echo "$stamp" >"$dir/.stamp"
