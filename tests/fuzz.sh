#!/bin/sh
# tests/fuzz.sh BUILD_DIR RUNS -- the long libFuzzer runs of `make fuzz`.
#
# Each target (BUILD_DIR/fuzz/*_lf) starts from a seed corpus of real
# inputs (the targets write their own with --corpus), keeps what it finds
# interesting in BUILD_DIR/fuzz/corpus-NAME between runs, and runs RUNS
# inputs under ASan/UBSan and LeakSanitizer.  Memory is bounded: one
# allocation over 256 MiB, or a resident size over 2 GiB, is a failure (a
# 4 GiB length field must never turn into a 4 GiB allocation).  A crash
# leaves its input in BUILD_DIR/fuzz/ (crash-*, leak-*, oom-*); replay it
# with BUILD_DIR/fuzz/NAME FILE.
B=${1:-build}
RUNS=${2:-1000000}
status=0
for lf in "$B"/fuzz/*_lf; do
  [ -x "$lf" ] || continue
  name=$(basename "$lf" _lf)
  seeds="$B/fuzz/seeds-$name" corpus="$B/fuzz/corpus-$name"
  rm -rf "$seeds" && mkdir -p "$seeds" "$corpus"
  "$B/fuzz/$name" --corpus "$seeds" || exit 1
  log="$B/fuzz/$name.log"
  start=$(date +%s)
  (cd "$B/fuzz" && ASAN_OPTIONS=detect_leaks=1 "./$name"_lf -runs="$RUNS" -max_len=4096 \
    -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=256 -print_final_stats=1 \
    "corpus-$name" "seeds-$name") > "$log" 2>&1
  rc=$?
  secs=$(( $(date +%s) - start ))
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log")
  if [ $rc -eq 0 ]; then
    echo "$name (libFuzzer): ${runs:-?} inputs in ${secs}s, 0 crashes, 0 leaks, peak RSS ${rss:-?} MiB"
  else
    echo "$name (libFuzzer): FAILED after ${runs:-?} inputs (exit $rc); $log:"
    grep -E 'ERROR|SUMMARY|out-of-memory|Test unit written' "$log" | head -20
    status=1
  fi
done
exit $status
