#!/usr/bin/env bash
# Installs the Debian packages Syncline builds and tests with, only when one is
# missing: the compilers and libraries, and every tool the tests and scripts
# call (curl, python3, openssl, runuser from util-linux, procps for ps/pkill), and Node.js with
# npm for the PowerSync front's tests and benchmark (tests/powersync; scripts/node-env.sh adds a
# pinned Node >= 20 from the npm registry when this one is older, as Debian 12's 18 is), and
# Chromium with a font for `make demo` (the workout web app driven headless, examples/workout/web).
set -euo pipefail
packages=(
  build-essential pkg-config
  postgresql-15 postgresql-server-dev-15 libpq-dev
  libwebsockets-dev libwebsockets-evlib-ev libev-dev libprotobuf-dev protobuf-compiler
  libssl-dev libsqlite3-dev libgtest-dev
  nlohmann-json3-dev libjwt-dev
  curl ca-certificates python3 openssl util-linux procps git
  chromium fonts-dejavu-core
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js and npm: Debian's packages unless a node with npm is already installed (another
# distribution of Node, e.g. one bundling npm, conflicts with Debian's npm package).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi
[ ${#missing[@]} -eq 0 ] && exit 0
echo "Installing missing packages: ${missing[*]}"
sudo_cmd=()
[ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq
"${sudo_cmd[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}"
