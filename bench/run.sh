#!/bin/sh
# bench/run.sh BUILD_DIR [--smoke] [--rounds N] [--against OLD_BUILD_DIR] [WORKLOAD ...]
#
# Runs each workload in lmp (bench/lua/GROUP.lua NAME under BUILD_DIR/lmp)
# and in Python 3 multiprocessing with fork (bench/py/bench_GROUP.py NAME),
# plus the raw C socketpair ping-pong (bench/c/pingpong.c) beside the Pipe
# one and the CPU loop in plain interpreter processes beside the CPU
# speedups, all in this one run.  GROUP is NAME up to its first underscore.  Each
# run prints one JSON line; bench/report.lua assembles them into the table
# and bench/results.json.
#
#   --smoke (or BENCH_SMOKE=1)  every workload once at tiny size; prints one
#       TAP line per run (ok / not ok / ok # SKIP) and checks only that each
#       printed a well-formed line.  Timings mean nothing there and are not
#       kept: results.json is left alone.  Without python3 the Python runs
#       are skipped.  tests/run.sh runs this as its `bench` suite.
#   --rounds N  run each workload N times, alternating implementations, and
#       report the median (the Pipe trio always runs at least 3 rounds,
#       since its target compares two figures of the same run).
#   --against OLD_BUILD_DIR  lmp against another build of lmp instead of
#       Python: each workload runs under BUILD_DIR/lmp and OLD_BUILD_DIR/lmp
#       alternately (which goes first alternates by round), and the table
#       shows new/old ratios (> 1: the new build is better) with a check
#       that each is at least 0.95.  results.json is left alone.
#
# apply_async also runs against LuaLanes (impl "lanes", bench/lua/lanes.lua
# under lua5.4) when one is found: BENCH_LANES=DIR, the directory holding
# lanes.lua and lanes_core.so, or `require "lanes"` working in lua5.4 as
# installed; otherwise its line says n/a.
#
# The broker workloads run lmp's broker against RQ (impl "python") and
# Celery (impl "celery") on one loopback redis-server; broker_rtt (lmp only)
# puts bench/c/delayproxy between Redis and its clients.
#
# The codec runs a third time under lua-cjson (impl "cjson"): the same table
# through cjson.encode and cjson.decode, n/a without the module.
#
# PYTHON (default python3) and CC (default cc) may be overridden.  A full run
# installs python3 through scripts/setup-debian.sh when it is missing,
# Celery and RQ (its bench-brokers group) when a broker workload is asked
# for, and lua-cjson (bench-lua) for the codec.
set -e

B=${1:-build}
[ $# -gt 0 ] && shift
root=$(cd "$(dirname "$0")/.." && pwd)
B=$(cd "$B" 2>/dev/null && pwd) || { echo "bench: no build directory $B (run make)" >&2; exit 2; }
cd "$root"

ALL="apply_rt apply_async queue_small queue_1k queue_1m pipe_rt map cpu_proc cpu_pool scale \
start_fork start_spawn start_forkserver lock_uncontended lock_contended lock_semaphore lock_event value_add value_add_contended \
array codec broker_tput broker_rt broker_rtt broker_cluster shm_normal shm_64m shm_8m"
smoke=0
case ${BENCH_SMOKE:-0} in 0 | '') ;; *) smoke=1 ;; esac
rounds=1
names=
against=
while [ $# -gt 0 ]; do
  case $1 in
  --smoke) smoke=1 ;;
  --rounds) rounds=$2; shift ;;
  --against)
    against=$(cd "$2" 2>/dev/null && pwd) || { echo "bench: no build directory $2" >&2; exit 2; }
    [ -x "$against/lmp" ] || { echo "bench: $against/lmp is missing" >&2; exit 2; }
    shift ;;
  -*) echo "bench: unknown option $1" >&2; exit 2 ;;
  *) names="$names $1" ;;
  esac
  shift
done
[ -n "$names" ] || names=$ALL
for n in $names; do
  case " $ALL " in *" $n "*) ;; *) echo "bench: unknown workload $n" >&2; exit 2 ;; esac
done

PYTHON=${PYTHON:-python3}
CC=${CC:-cc}
# bench/py/common.py is imported by every Python workload: no __pycache__.
export PYTHONDONTWRITEBYTECODE=1
LMP="$B/lmp"
# The sanitizer build's lmp carries its own runtime; a preload meant for
# lua5.4 (make test-asan) would only get into Python's and the compiler's way.
unset LD_PRELOAD
[ -x "$LMP" ] || { echo "bench: $LMP is missing (run make)" >&2; exit 2; }

mult=${LMP_TEST_TIMEOUT_MULT:-1}
if [ $smoke = 1 ]; then
  export BENCH_SMOKE=1
  limit=$((60 * mult))
else
  unset BENCH_SMOKE
  limit=$((600 * mult))
  if ! command -v "$PYTHON" >/dev/null 2>&1; then
    sh scripts/setup-debian.sh python3 ||
      echo "bench: could not install python3: the Python side is skipped" >&2
  fi
fi
have_python=1
command -v "$PYTHON" >/dev/null 2>&1 || have_python=0
case " $names " in
*" broker_"*)
  if [ $smoke = 0 ] && ! /usr/bin/python3 -c 'import celery, rq, redis' >/dev/null 2>&1; then
    sh scripts/setup-debian.sh bench-brokers ||
      echo "bench: could not install Celery and RQ: their side is n/a" >&2
  fi ;;
esac

case " $names " in
*" codec "*)
  if [ $smoke = 0 ] && ! "$LMP" -e 'require "cjson"' >/dev/null 2>&1; then
    sh scripts/setup-debian.sh bench-lua ||
      echo "bench: could not install lua-cjson: its side is n/a" >&2
  fi ;;
esac

tmp=$(mktemp -d)
trap '[ -n "${BENCH_REDIS_PORT:-}" ] && redis-cli -p "$BENCH_REDIS_PORT" shutdown nosave >/dev/null 2>&1; rm -rf "$tmp"' EXIT

# The broker workloads (lmp's and RQ's) share one loopback redis-server,
# started here on a free port when redis-server is installed.
case " $names " in
*" broker_"*)
  if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
    mkdir -p "$tmp/redis"
    for try in 1 2 3 4 5; do
      port=$(( $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 40000 + 20000 ))
      redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$tmp/redis" \
        --daemonize yes --pidfile "$tmp/redis/r.pid" --logfile "$tmp/redis/r.log" >/dev/null 2>&1 || true
      sleep 0.2
      if redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; then
        export BENCH_REDIS_PORT=$port
        break
      fi
    done
  fi ;;
esac
lines=$tmp/lines
: > "$lines"

# The C helpers, rebuilt when their source is newer: the raw C reference
# (pingpong) and broker_rtt's delay proxy (which finds it through
# BENCH_DELAYPROXY, and says n/a without it).
cc_error=
for tool in pingpong delayproxy; do
  bin=$B/bench/$tool
  if [ ! -x "$bin" ] || [ -n "$(find "bench/c/$tool.c" -newer "$bin")" ]; then
    mkdir -p "$B/bench"
    if ! "$CC" -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror "bench/c/$tool.c" \
      -o "$bin" 2> "$tmp/cc.err"; then
      [ $tool = pingpong ] && cc_error="cannot compile bench/c/pingpong.c: $(head -1 "$tmp/cc.err")"
      rm -f "$bin"
    fi
  fi
done
pingpong=$B/bench/pingpong
export BENCH_DELAYPROXY=$B/bench/delayproxy

tap=0
ok() {
  tap=$((tap + 1))
  if [ $smoke = 1 ]; then echo "ok $tap - $1"; fi
}
skip() {
  tap=$((tap + 1))
  if [ $smoke = 1 ]; then echo "ok $tap - $1 # SKIP $2"; fi
}
notok() {
  tap=$((tap + 1))
  if [ $smoke = 1 ]; then
    echo "not ok $tap - $1: $2"
    [ -s "$tmp/err" ] && tail -15 "$tmp/err" | sed 's/^/#   /'
  else
    echo "bench: $1 failed: $2" >&2
    [ -s "$tmp/err" ] && tail -15 "$tmp/err" | sed 's/^/  /' >&2
  fi
  return 0
}

# Something JSON can carry in a string.
clean() { tr -d '"\\' | tr '\t\n\r' '   ' | cut -c1-300; }

# run NAME IMPL COMMAND...: one workload, one implementation
run() {
  name=$1 impl=$2
  shift 2
  what="$name ($impl)"
  [ $smoke = 1 ] || printf 'bench: %-18s %-7s\n' "$name" "$impl" >&2
  : > "$tmp/err"
  rc=0
  timeout -k 5 "$limit" "$@" > "$tmp/out" 2> "$tmp/err" < /dev/null || rc=$?
  line=$(grep '^{"name":' "$tmp/out" | tail -1)
  # Against another build, both builds' lines say "lmp" (or "normal"):
  # name them by the build that ran.
  [ -n "$against" ] && line=$(echo "$line" | sed "s/\"impl\":\"[a-z]*\"/\"impl\":\"$impl\"/")
  if [ $rc -ne 0 ] || ! echo "$line" | grep -Eq \
    "^\{\"name\":\"$name\",\"impl\":\"$impl\",\"value\":(null|-?[0-9][0-9.e+-]*),\"unit\":\"[^\"]+\".*\}\$"; then
    why="exit status $rc"
    [ $rc -eq 124 ] && why="timed out after ${limit}s"
    [ $rc -eq 0 ] && why="no well-formed result line"
    notok "$what" "$why"
    echo "{\"name\":\"$name\",\"impl\":\"$impl\",\"value\":null,\"unit\":\"\",\"error\":\"$why: $(tail -1 "$tmp/err" | clean)\"}" >> "$lines"
    return 0
  fi
  echo "$line" >> "$lines"
  case $line in
  *'"value":null'*) skip "$what" "n/a: $(echo "$line" | sed -n 's/.*"note":"\([^"]*\)".*/\1/p')" ;;
  *) ok "$what" ;;
  esac
}

[ $smoke = 1 ] && echo "TAP version 13"
for name in $names; do
  group=${name%%_*}
  n=$rounds
  [ "$name" = pipe_rt ] && [ $smoke = 0 ] && [ "$n" -lt 3 ] && n=3
  i=0
  while [ $i -lt "$n" ]; do
    i=$((i + 1))
    if [ -n "$against" ]; then
      # the two builds of lmp, in turn; the first to run alternates
      if [ $((i % 2)) = 1 ]; then
        run "$name" lmp "$LMP" "bench/lua/$group.lua" "$name"
        run "$name" old "$against/lmp" "bench/lua/$group.lua" "$name"
      else
        run "$name" old "$against/lmp" "bench/lua/$group.lua" "$name"
        run "$name" lmp "$LMP" "bench/lua/$group.lua" "$name"
      fi
      continue
    fi
    if [ "$name" = shm_normal ]; then
      # the reference of shm_64m and shm_8m: lmp itself on this /dev/shm
      run "$name" normal "$LMP" "bench/lua/$group.lua" "$name"
    else
      run "$name" lmp "$LMP" "bench/lua/$group.lua" "$name"
    fi
    if [ "$group" = shm ] || [ "$name" = broker_rtt ] || [ "$name" = broker_cluster ]; then
      : # lmp only: no Python twin
    elif [ $have_python = 1 ]; then
      run "$name" python "$PYTHON" "bench/py/bench_$group.py" "$name"
    else
      skip "$name (python)" "$PYTHON not found"
    fi
    # apply_async's other reference: LuaLanes, found (never built) through
    # BENCH_LANES=DIR (its lanes.lua and lanes_core.so) or as lua5.4 finds it
    if [ "$name" = apply_async ]; then
      if ! command -v lua5.4 >/dev/null 2>&1; then
        skip "$name (lanes)" "lua5.4 not found"
      elif [ -n "${BENCH_LANES:-}" ]; then
        run "$name" lanes env LUA_PATH="$BENCH_LANES/?.lua;;" LUA_CPATH="$BENCH_LANES/?.so;;" \
          lua5.4 bench/lua/lanes.lua "$name"
      else
        run "$name" lanes lua5.4 bench/lua/lanes.lua "$name"
      fi
    fi
    # the broker's other reference: Celery on the same redis-server
    case $name in
    broker_tput | broker_rt)
      if [ $have_python = 1 ]; then
        run "$name" celery "$PYTHON" bench/py/bench_broker.py "$name" celery
      else
        skip "$name (celery)" "$PYTHON not found"
      fi ;;
    esac
    # the codec's Lua reference: lua-cjson under the same interpreter
    [ "$name" = codec ] && run "$name" cjson "$LMP" bench/lua/codec.lua codec cjson
    # the cluster's reference: the same queues on one master
    [ "$name" = broker_cluster ] && run "$name" one "$LMP" bench/lua/broker.lua broker_cluster one
    # the CPU ceiling: the same loop in plain processes of the interpreter
    [ "$name" = cpu_proc ] && run "$name" plain "$LMP" bench/lua/cpu.lua cpu_plain
    if [ "$name" = pipe_rt ]; then
      if [ -n "$cc_error" ]; then
        echo "$cc_error" > "$tmp/err"
        notok "$name (c)" "$cc_error"
      elif [ $smoke = 1 ]; then
        run "$name" c "$pingpong" "$name" 20 1
      else
        run "$name" c "$pingpong" "$name"
      fi
    fi
  done
done

pyver=$([ $have_python = 1 ] && "$PYTHON" -c 'import platform; print(platform.python_version())' || echo none)
set -- date="$(date -u +%Y-%m-%dT%H:%M:%SZ)" python="$pyver" kernel="$(uname -r)" \
  cpus="$(getconf _NPROCESSORS_ONLN)" lmp="$("$LMP" -v | head -1)" rounds="$rounds"
if [ $smoke = 1 ]; then
  # The report must keep working too; its output is thrown away.
  if "$LMP" bench/report.lua "$lines" "$tmp/results.json" "$@" > "$tmp/err" 2>&1; then
    ok "report"
  else
    notok "report" "bench/report.lua failed"
  fi
  echo "1..$tap"
elif [ -n "$against" ]; then
  echo
  "$LMP" bench/report.lua "$lines" "$tmp/against.json" "$@" against="$against"
else
  echo
  "$LMP" bench/report.lua "$lines" bench/results.json "$@"
  echo "(written to bench/results.json)"
fi
