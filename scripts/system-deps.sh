#!/usr/bin/env bash
# The system programs the tests use, installed when this machine allows it.
#
# Used by `make test` and by .ci/run. When a program is missing and apt-get
# can be run (as root, or through passwordless `sudo -n`), the missing
# Debian packages are installed. Otherwise one line says what to install and
# the script succeeds: the tests that need a missing program skip, naming it.
#
#   scripts/system-deps.sh            install what is missing if possible, else say so
#   scripts/system-deps.sh --check    only say what is missing (exit 0)
#   scripts/system-deps.sh --strict   install, and fail if anything is still missing (CI)
#
# STREAMGATE_SYSTEM_DEPS=skip makes `make test` leave the system alone.
set -euo pipefail

mode="${1:-install}"
case "$mode" in
  install|--install) mode=install ;;
  --check) mode=check ;;
  --strict) mode=strict ;;
  *) echo "usage: $0 [--check|--strict]" >&2; exit 2 ;;
esac
if [ "${STREAMGATE_SYSTEM_DEPS:-}" = "skip" ] && [ "$mode" = install ]; then
  exit 0
fi

# program:Debian package. redis-server is needed by nearly every test; the
# others by the failover, Redis Cluster (redis-cli forms it), proxy,
# browser, ops and network-fault tests.
wanted=(
  redis-server:redis-server
  redis-sentinel:redis-sentinel
  redis-cli:redis-tools
  nginx:nginx
  nft:nftables
  ip:iproute2
  promtool:prometheus
  amtool:prometheus-alertmanager
  docker-compose:docker-compose
  chromium:chromium
  chromedriver:chromium-driver
  node:nodejs
  openssl:openssl
)

missing() {
  local pair
  for pair in "${wanted[@]}"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || echo "${pair#*:}"
  done
}

# Looked up on the same PATH the tests will use (Debian puts nginx, nft and
# ip in /usr/sbin, which a user's PATH may lack: add it to PATH then).
mapfile -t need < <(missing)
[ ${#need[@]} -eq 0 ] && exit 0

as_root=()
if [ "$(id -u)" -ne 0 ]; then
  as_root=(sudo -n)
fi
can_install=false
if [ "$mode" != check ] && command -v apt-get >/dev/null 2>&1; then
  if [ ${#as_root[@]} -eq 0 ] || { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; }; then
    can_install=true
  fi
fi

if $can_install; then
  echo "installing: ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  "${as_root[@]}" apt-get update -qq >&2 || true
  if ! "${as_root[@]}" apt-get install -y -qq "${need[@]}" >&2; then
    # One package this distribution lacks (chromium is a snap on Ubuntu)
    # must not keep the others out: one at a time.
    for package in "${need[@]}"; do
      "${as_root[@]}" apt-get install -y -qq "$package" >&2 || true
    done
  fi
  mapfile -t need < <(missing)
fi

if [ ${#need[@]} -gt 0 ]; then
  echo "streamgate: tests needing them will skip; to run them: apt-get install ${need[*]}" >&2
  [ "$mode" = strict ] && exit 1
fi
exit 0
