#!/bin/sh
# Installs what lmp needs on Debian 12 and is not there yet.  Quiet and quick
# when everything is present, so `make test` and `make demo` run it each time.
#   sh scripts/setup-debian.sh [extra packages...]
# Targets that need more name it: make fuzz adds clang and libclang-rt-14-dev
# (clang's libFuzzer runtime), make test-valgrind adds valgrind.  lua-luv and
# lua-cqueues serve lmp.luv and lmp.cqueues (and their tests) only; luarocks
# serves the test that builds the rockspec; lighttpd and its Lua module are
# the real server the embedding tests run lmp in.
# A named group stands for several packages: bench-brokers is the task
# queues the broker benchmarks measure lmp against (Celery and RQ on
# Redis), which a full bench/run.sh installs; bench-lua is the Lua codec
# the codec benchmark sets lmp's beside (lua-cjson), installed the same way.
set -e
extra=""
for a in "$@"; do
  case $a in
  bench-brokers) extra="$extra python3 python3-celery python3-rq python3-redis" ;;
  bench-lua) extra="$extra lua-cjson" ;;
  *) extra="$extra $a" ;;
  esac
done
PKGS="gcc make pkg-config lua5.4 liblua5.4-dev libmsgpack-dev libreadline-dev lua-busted \
  libhiredis-dev libssl-dev redis-server lua-luv lua-cqueues luarocks lighttpd \
  lighttpd-modules-lua $extra"

missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

echo "lmp setup: installing$missing"
if [ "$(id -u)" -eq 0 ]; then
  SUDO=
elif command -v sudo >/dev/null 2>&1; then
  SUDO=sudo
else
  echo "lmp setup: run as root: apt-get install -y$missing" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
