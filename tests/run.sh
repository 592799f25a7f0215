#!/bin/sh
# tests/run.sh BUILD_DIR [layers|c|lua|bench ...]
#
# Runs the suites and ends with one line summing them all:
#   N passed, N failed[, N skipped]
# Exit status is non-zero when anything failed.  Each C test binary forks per
# test with a timeout (tests/c/runner.c); each busted spec file runs in its own
# interpreter under a timeout, so a crash or hang fails that file, not the run.
B=${1:-build}
shift
[ $# -eq 0 ] && set -- layers c lua bench
LUA=${LUA:-lua5.4}
BUSTED=${BUSTED:-$(command -v busted || echo /usr/bin/busted)}
SPEC_TIMEOUT=${SPEC_TIMEOUT:-300}
export LMP_BUILD="$(cd "$B" && pwd)"
unset LMP_PREFIX LMP_ROOT_PID

passed=0 failed=0 skipped=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

count() { # count TAP lines of $log into the totals; print failures
  p=$(grep -c '^ok ' "$log" | tr -d ' ')
  s=$(grep '^ok ' "$log" | grep -c '# *SKIP' | tr -d ' ')
  f=$(grep -c '^not ok ' "$log" | tr -d ' ')
  passed=$((passed + p - s)) skipped=$((skipped + s)) failed=$((failed + f))
  echo "$1: $((p - s)) passed, $f failed${s:+, $s skipped}" | sed 's/, 0 skipped//'
  [ "$f" -gt 0 ] && grep -A 30 '^not ok ' "$log" | head -120
}

for suite in "$@"; do
  case $suite in
  layers)
    # runtime/ is the C core: it must not see Lua.
    if grep -rlE '#[[:space:]]*include[[:space:]]*[<"](lua|lauxlib|lualib|luaconf)\.h' runtime include/lmp; then
      echo "not ok 1 - check-layers: the files above include a Lua header" > "$log"
    else
      echo "ok 1 - check-layers: runtime/ and include/lmp/ include no Lua header" > "$log"
    fi
    count layers ;;
  c)
    for t in "$B"/tests/test_*; do
      [ -x "$t" ] || continue
      "$t" > "$log" 2>&1
      rc=$?
      if [ $rc -ne 0 ] && ! grep -q '^not ok ' "$log"; then
        echo "not ok - $(basename "$t") exited with status $rc" >> "$log"
      fi
      count "$(basename "$t")"
    done ;;
  lua)
    for spec in tests/*_spec.lua; do
      timeout -k 5 "$SPEC_TIMEOUT" "$LUA" -e "package.cpath='$B/?.so;'..package.cpath" \
        "$BUSTED" -o TAP "$spec" > "$log" 2>&1
      rc=$?
      if [ $rc -ne 0 ] && ! grep -q '^not ok ' "$log"; then
        tail -20 "$log"
        echo "not ok - $spec: busted exited with status $rc (crash or timeout)" >> "$log"
      fi
      count "$spec"
    done ;;
  bench)
    # Every benchmark workload once at tiny size (bench/run.sh --smoke): each
    # must run and print its result line.  No timing is ever checked here.
    sh bench/run.sh "$B" --smoke > "$log" 2>&1
    rc=$?
    if [ $rc -ne 0 ] && ! grep -q '^not ok ' "$log"; then
      tail -20 "$log"
      echo "not ok - bench/run.sh --smoke exited with status $rc" >> "$log"
    fi
    count bench ;;
  *) echo "unknown suite $suite"; exit 2 ;;
  esac
done

line="$passed passed, $failed failed"
[ "$skipped" -gt 0 ] && line="$line, $skipped skipped"
echo "$line"
[ "$failed" -eq 0 ]
