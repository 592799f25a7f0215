#!/bin/sh
# tests/lighttpd/run.sh BUILD_DIR WORK_DIR PORT MODE
# (CLIENTS and REQUESTS in the environment change the load: 4 clients of 50
# requests by default)
#
# lighttpd with mod_magnet serving through an lmp Pool (handler.lua), run
# inside a pid namespace of its own (unshare -pf --mount-proc), so that
# whatever it leaves behind can be counted.  MODE "inplace" reloads with
# SIGUSR1 as Debian's unit does (the states are closed and reopened in the
# same process); "bg" sets server.graceful-restart-bg, where lighttpd
# re-execs itself under the same pid.  Requests run from four clients while
# it reloads twice; then it is stopped.  Prints one "key value" line per
# finding, for tests/lighttpd_spec.lua to check.
B=$(cd "$1" && pwd) W=$2 PORT=$3 MODE=$4
HERE=$(cd "$(dirname "$0")" && pwd)
URL="http://127.0.0.1:$PORT/square"

cat > "$W/lighttpd.conf" <<CONF
server.document-root = "$W"
server.port = $PORT
server.bind = "127.0.0.1"
server.modules = ("mod_magnet")
server.errorlog = "$W/error.log"
server.feature-flags = ("server.graceful-restart-bg" => "$([ "$MODE" = bg ] && echo enable || echo disable)",
                        "server.graceful-shutdown-timeout" => 5)
magnet.attract-raw-url-to = ("$HERE/handler.lua")
CONF

# One request: its status code (000 when none came within 5 s).
req() { curl -s -o /dev/null -m 5 -w '%{http_code}\n' "$URL?$1"; }
# Tenths of a second until the server answers 200; 100 when it did not
# within 10 s.
until_served() {
  t=0 end=$(($(date +%s) + 10))
  while [ "$(req 3)" != 200 ]; do
    [ "$(date +%s)" -ge $end ] && { echo 100; return; }
    sleep 0.1
    t=$((t + 1))
  done
  echo "$t"
}
# Processes of this namespace but ourselves and our pipeline: their names.
others() {
  for d in /proc/[0-9]*; do
    p=${d#/proc/}
    [ "$p" = 1 ] || [ "$p" = "$$" ] && continue
    c=$(cat "$d/comm" 2>/dev/null) || continue
    case $c in sh|cat|sleep|curl|ls|grep|wc|tr|sed|sort) continue ;; esac
    echo "$c"
  done | sort | tr '\n' ' '
}
count() { others | tr ' ' '\n' | grep -c "^$1\$"; }

cd "$W" || exit 1
LUA_CPATH="$B/?.so;;" lighttpd -D -f "$W/lighttpd.conf" &
LPID=$!
echo "start_tenths $(until_served)"
echo "watchdogs_at_start $(count lmp-watchdog)"
echo "workers_at_start $(count lmp-worker)"

# The clients, while the server reloads twice; a client that has been at it
# for a minute stops (a hung server answers nothing).
CLIENTS=${CLIENTS:-4} REQUESTS=${REQUESTS:-50}
for c in $(seq "$CLIENTS"); do
  (end=$(($(date +%s) + 60))
   for i in $(seq "$REQUESTS"); do
     [ "$(date +%s)" -ge $end ] && break
     req "$i"
   done > "$W/client$c"; echo done > "$W/finished$c") &
done
sleep 0.3
# A reload is done once the new server has said it started: a request
# answered earlier may have come from the old one, and a second SIGUSR1
# during the first restart is one restart.
starts() { grep -c 'server started' "$W/error.log"; }
for r in 1 2; do
  before=$(starts)
  kill -USR1 $LPID
  end=$(($(date +%s) + 20))
  while [ "$(starts)" -le "$before" ] && [ "$(date +%s)" -lt $end ]; do sleep 0.1; done
  echo "reload${r}_tenths $(until_served)"
  sleep 0.5
done
while [ "$(cat "$W"/finished* 2>/dev/null | wc -l)" -lt "$CLIENTS" ]; do sleep 0.2; done
echo "during_ok $(cat "$W"/client* | grep -c '^200$')"
echo "during_all $(cat "$W"/client* | wc -l)"
ok=0 end=$(($(date +%s) + 60))
for i in $(seq 50); do
  [ "$(date +%s)" -ge $end ] && break
  [ "$(req "$i")" = 200 ] && ok=$((ok + 1))
done
echo "after_ok $ok"
echo "watchdogs_after_reload $(count lmp-watchdog)"
echo "workers_after_reload $(count lmp-worker)"

kill -INT $LPID
for i in $(seq 150); do kill -0 $LPID 2>/dev/null || break; sleep 0.1; done
if kill -0 $LPID 2>/dev/null; then
  echo "stopped hung"
  kill -KILL $LPID
  wait $LPID
else
  wait $LPID
  echo "stopped $?"
fi
# What is left once it has stopped (the watchdog cleans up at once).
for i in $(seq 30); do [ -z "$(others)" ] && break; sleep 0.1; done
echo "left_processes [$(others)]"
echo "left_segments $(ls /dev/shm | grep -c "^lmp\.$LPID\.")"
echo "starts $(starts)"
