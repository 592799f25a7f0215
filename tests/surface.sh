#!/bin/sh
# tests/surface.sh BUILD_DIR -- what lmp shows the programs that use it, as
# TAP lines (the layers suite of tests/run.sh runs it from the top of the
# tree).  It fails when the surface grows:
#   - lmp.so exports its two Lua openers alone (luaopen_lmp, luaopen_lmp_core);
#   - liblmp.so and liblmp-broker.so have a SONAME, export none of the
#     runtime's lmp__ helpers, and only functions that include/lmp/*.h
#     declare, every one of them marked LMP_API;
#   - no public header declares a fork or test hook (those live in
#     runtime/internal.h).
B=${1:-build}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

ok() { echo "ok - surface: $1"; }
not_ok() { # what, then the offending lines
  echo "not ok - surface: $1"
  shift
  printf '%s\n' "$@" | head -20 | sed 's/^/#   /'
}

# The dynamic symbols a library defines, one a line.
exports() { nm -D --defined-only "$1" 2>/dev/null | awk 'NF >= 3 { print $3 }' | sort -u; }

# The public headers without their comments.
perl -0777 -pe 's{/\*.*?\*/}{}gs' include/lmp.h include/lmp/*.h > "$tmp/headers"
# Every function they declare.
grep -o 'lmp_[a-z0-9_]*[[:space:]]*(' "$tmp/headers" | sed 's/[[:space:]]*($//' | sort -u > "$tmp/declared"

openers="luaopen_lmp luaopen_lmp_core"
if [ ! -f "$B/lmp.so" ]; then
  not_ok "lmp.so exports its Lua openers alone" "$B/lmp.so is not built"
else
  exports "$B/lmp.so" > "$tmp/module"
  if [ "$(tr '\n' ' ' < "$tmp/module")" = "$openers " ]; then
    ok "lmp.so exports its Lua openers alone ($openers)"
  else
    not_ok "lmp.so exports its Lua openers ($openers) alone, not these $(wc -l < "$tmp/module") symbols" \
      "$(cat "$tmp/module")"
  fi
fi

for lib in liblmp.so liblmp-broker.so; do
  if [ ! -f "$B/$lib" ]; then
    not_ok "$lib is built" "$B/$lib is missing"
    continue
  fi
  soname=$(readelf -d "$B/$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
  case $soname in
  "$lib".[0-9]*) ok "$lib has the SONAME $soname" ;;
  *) not_ok "$lib has a SONAME $lib.<major>" "SONAME: ${soname:-none}" ;;
  esac
  exports "$B/$lib" > "$tmp/lib"
  private=$(grep '^lmp__' "$tmp/lib")
  if [ -z "$private" ]; then
    ok "$lib exports no lmp__ helper"
  else
    not_ok "$lib exports lmp__ helpers" "$private"
  fi
  undeclared=$(grep -vxF -f "$tmp/declared" "$tmp/lib")
  if [ -z "$undeclared" ]; then
    ok "$lib exports only functions include/lmp/*.h declares ($(wc -l < "$tmp/lib"))"
  else
    not_ok "$lib exports what no public header declares" "$undeclared"
  fi
done

# Each function declaration of the public headers begins with LMP_API (one
# without it would be declared and yet hidden in the shared libraries).
unmarked=$(perl -0777 -ne 's/^[ \t]*#.*$//mg; for (split /[;{}]/) { s/^\s+//; s/\s+/ /g;
  print "$_\n" if /\blmp_\w+\s*\(/ && !/^(typedef|LMP_API)\b/ }' "$tmp/headers")
if [ -z "$unmarked" ]; then
  ok "every function include/lmp/*.h declares is marked LMP_API"
else
  not_ok "public declarations without LMP_API" "$unmarked"
fi

# Fork and test hooks are the runtime's own business.
hooks=$(grep -nE '\blmp__|prefork|postfork|atfork|for tests|test hook' include/lmp.h include/lmp/*.h)
if [ -z "$hooks" ]; then
  ok "no public header declares a fork or test hook"
else
  not_ok "public headers declare fork or test hooks" "$hooks"
fi
