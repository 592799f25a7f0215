#!/bin/sh
# tests/run.sh BUILD_DIR [layers|c|lua|fuzz|bench ...]
#
# Runs the suites and ends with one line summing them all:
#   N passed, N failed[, N skipped]
# preceded, when anything was skipped, by the list of what and why (each
# skip's TAP line carries its reason: "ok 3 - name # SKIP reason").
# Exit status is non-zero when anything failed.  Each C test binary forks per
# test with a timeout (tests/c/runner.c); each busted spec file runs in its own
# interpreter under a timeout, so a crash or hang fails that file, not the run.
#
# The environment narrows or wraps a run (make stress, test-asan and
# test-valgrind use it):
#   C_TESTS="build/tests/test_faults ..."   C test binaries (default: all)
#   SPECS="tests/queue_spec.lua ..."        spec files (default: all)
#   LMP_WRAP="valgrind ..."                 a command the C tests and the
#                                           specs' interpreter run under
#   LMP_REPORTS=DIR                         sanitizer reports land here; each
#                                           file in it at the end is a failure
#   FUZZ_SHORT=N                            inputs per fuzz target (30000)
B=${1:-build}
shift
[ $# -eq 0 ] && set -- layers c lua fuzz bench
LUA=${LUA:-lua5.4}
BUSTED=${BUSTED:-$(command -v busted || echo /usr/bin/busted)}
SPEC_TIMEOUT=${SPEC_TIMEOUT:-300}
export LMP_BUILD="$(cd "$B" && pwd)"
unset LMP_PREFIX LMP_ROOT_PID

passed=0 failed=0 skipped=0
log=$(mktemp)
skips=$(mktemp)
trap 'rm -f "$log" "$skips"' EXIT

count() { # count TAP lines of $log into the totals; print failures
  p=$(grep -c '^ok ' "$log" | tr -d ' ')
  s=$(grep '^ok ' "$log" | grep -c '# *SKIP' | tr -d ' ')
  f=$(grep -c '^not ok ' "$log" | tr -d ' ')
  passed=$((passed + p - s)) skipped=$((skipped + s)) failed=$((failed + f))
  grep '^ok ' "$log" | grep '# *SKIP' | sed "s|^ok [0-9]* - *# *SKIP *||; s|^ok [0-9]* - \(.*\) # *SKIP *|\1: |; s|^|  $1: |" >> "$skips"
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
    # What the libraries export and the public headers declare.
    sh tests/surface.sh "$B" >> "$log"
    # The call graph of the built objects: no circle wider than 2 files in
    # bindings/, none in runtime/ but those listed, nothing below reaching
    # up into bindings/.
    "$LUA" tests/callgraph.lua "$B" | sed 's/^\(not \)\{0,1\}ok [0-9]* /\1ok /' >> "$log"
    count layers ;;
  c)
    for t in ${C_TESTS:-"$B"/tests/test_*}; do
      [ -x "$t" ] || continue
      $LMP_WRAP "$t" > "$log" 2>&1
      rc=$?
      if [ $rc -ne 0 ] && ! grep -q '^not ok ' "$log"; then
        echo "not ok - $(basename "$t") exited with status $rc" >> "$log"
      fi
      count "$(basename "$t")"
    done ;;
  lua)
    for spec in ${SPECS:-tests/*_spec.lua}; do
      timeout -k 5 "$SPEC_TIMEOUT" $LMP_WRAP "$LUA" -e "package.cpath='$B/?.so;'..package.cpath" \
        "$BUSTED" -o tests/tap.lua "$spec" > "$log" 2>&1
      rc=$?
      if [ $rc -ne 0 ] && ! grep -q '^not ok ' "$log"; then
        tail -20 "$log"
        echo "not ok - $spec: busted exited with status $rc (crash or timeout)" >> "$log"
      fi
      count "$spec"
    done ;;
  fuzz)
    # A short run of each fuzz target (make fuzz runs the long one): the
    # wire room's readers (decoder, plain lists, handle walker), and the pipe
    # frame and queue record readers, under ASan.
    : > "$log"
    for f in "$B"/fuzz/fuzz_decode "$B"/fuzz/fuzz_frame; do
      if [ ! -x "$f" ]; then
        echo "not ok - $(basename "$f"): not built (make test builds it)" >> "$log"
      elif out=$("$f" "${FUZZ_SHORT:-30000}" 2>&1); then
        echo "ok - $(basename "$f"): $(echo "$out" | tail -1)" >> "$log"
      else
        echo "not ok - $(basename "$f") failed:" >> "$log"
        echo "$out" | tail -30 >> "$log"
      fi
    done
    count fuzz ;;
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

# Sanitizer reports written to files (test-asan's log_path) fail the run
# even when the process that wrote one was a child whose exit status the
# tests accepted (a pool worker lost, a killed process).
if [ -n "$LMP_REPORTS" ] && [ -d "$LMP_REPORTS" ]; then
  : > "$log"
  for r in "$LMP_REPORTS"/*; do
    [ -f "$r" ] || continue
    # An allocation refused on purpose (allocator_may_return_null: the
    # caller gets NULL, as from malloc) is a warning, not a report.
    grep -qv 'WARNING: AddressSanitizer failed to allocate' "$r" || continue
    echo "not ok - sanitizer report $r" >> "$log"
    head -40 "$r" >> "$log"
  done
  [ -s "$log" ] || echo "ok - no sanitizer report" > "$log"
  count reports
fi

if [ -s "$skips" ]; then
  echo "skipped:"
  cat "$skips"
fi
line="$passed passed, $failed failed"
[ "$skipped" -gt 0 ] && line="$line, $skipped skipped"
echo "$line"
[ "$failed" -eq 0 ]
