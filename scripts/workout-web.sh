# Sourced by scripts/run.sh and scripts/demo.sh: builds the workout web app
# (examples/workout/web) with the pinned Node and its package-lock.json.
#   workout_web_build     npm ci once into build/workout-web-npm (again when the lock file
#                         changes), vite build into build/workout-web/dist (when a source
#                         is newer than the last build)
# Needs scripts/node-env.sh sourced and syncline_node_env run first.
workout_web_build() {
  local root web
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  web=$root/examples/workout/web
  syncline_npm_ci "$web" "$root/build/workout-web-npm" || return 1
  # The app imports its packages from there (a node_modules of its own is replaced).
  if [ -e "$web/node_modules" ] && [ ! -L "$web/node_modules" ]; then rm -rf "$web/node_modules"; fi
  ln -sfn ../../../build/workout-web-npm/node_modules "$web/node_modules"
  # Built already from these sources: nothing to do.
  local dist=$root/build/workout-web/dist
  if [ -f "$dist/index.html" ] && [ -z "$(find "$web/index.html" "$web/src" "$web/vite.config.mjs" \
      "$root/build/workout-web-npm/.stamp" -newer "$dist/index.html" 2>/dev/null)" ]; then
    return 0
  fi
  (cd "$web" && WORKOUT_WEB_DIST="$root/build/workout-web/dist" "$SYNCLINE_NODE" node_modules/vite/bin/vite.js build --logLevel warn) || return 1
}
