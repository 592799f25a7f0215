# lmp -- multiprocessing for Lua.
#
#   make            build/lmp, build/lmp.so, build/liblmp.a, build/liblmp.so
#   make test       C tests, layer check and busted specs; one summary line
#   make deps       install what is missing on Debian 12 (apt-get, as root)
#   make demo       the parallel demo from README
#   make bench      the benchmark suite, lmp against Python (bench/README.md);
#                   BENCH_ARGS="--rounds 3 queue_small" picks rounds and workloads
#   make ASAN=1     the same with AddressSanitizer and UBSan (into build-asan/)
#   make test-asan  every suite on that build
#   make fuzz       mutation-fuzz the decoder under ASan/UBSan
#   make examples   the example C hosts (examples/host/) into build/examples/
#   make install    PREFIX=/usr/local (DESTDIR too; LUA_CMOD, LUA_LMOD, BINDIR
#                   move the Lua module, its scripts and the command)

PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
LIBDIR  ?= $(PREFIX)/lib
INCDIR  ?= $(PREFIX)/include
MANDIR  ?= $(PREFIX)/share/man
LUA_CMOD ?= $(PREFIX)/lib/lua/5.4
LUA_LMOD ?= $(PREFIX)/share/lua/5.4
CC      ?= gcc
LUA     ?= lua5.4
PKG     ?= pkg-config

# pkg-config names differ between distributions and versions.
LUA_PC     := $(firstword $(foreach p,lua5.4 lua-5.4 lua54,$(shell $(PKG) --exists $(p) 2>/dev/null && echo $(p))))
MSGPACK_PC := $(firstword $(foreach p,msgpack-c msgpack,$(shell $(PKG) --exists $(p) 2>/dev/null && echo $(p))))
LUA_CFLAGS     := $(if $(LUA_PC),$(shell $(PKG) --cflags $(LUA_PC)),-I/usr/include/lua5.4)
LUA_LIBS       := $(if $(LUA_PC),$(shell $(PKG) --libs $(LUA_PC)),-llua5.4)
MSGPACK_CFLAGS := $(if $(MSGPACK_PC),$(shell $(PKG) --cflags $(MSGPACK_PC)),)
MSGPACK_LIBS   := $(if $(MSGPACK_PC),$(shell $(PKG) --libs $(MSGPACK_PC)),-lmsgpackc)
READLINE_LIBS  := $(shell $(PKG) --libs readline 2>/dev/null || echo -lreadline)
# The broker (runtime/broker*.c): hiredis for Redis, libcrypto for HMAC.
HIREDIS_CFLAGS := $(shell $(PKG) --cflags hiredis 2>/dev/null)
BROKER_LIBS    := $(shell $(PKG) --libs hiredis 2>/dev/null || echo -lhiredis) \
                  $(shell $(PKG) --libs libcrypto 2>/dev/null || echo -lcrypto)

ifeq ($(ASAN),1)
B        ?= build-asan
OPT      ?= -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
LDSAN    := -fsanitize=address,undefined
else
B        ?= build
OPT      ?= -O2
endif

CFLAGS  ?= $(OPT) -g
WARN    := -Wall -Wextra -Werror
ALL_CFLAGS := -std=c11 -D_GNU_SOURCE $(WARN) -fPIC -pthread -Iinclude $(CFLAGS)
ifdef LMP_USE_APICHECK
ALL_CFLAGS += -DLUA_USE_APICHECK -DLMP_USE_APICHECK
endif
LDFLAGS += $(LDSAN) -pthread

RT_SRC  := $(sort $(wildcard runtime/*.c))
RT_OBJ  := $(RT_SRC:%.c=$(B)/%.o)
# main.c and the REPL's readline binding go into the lmp executable only.
LB_SRC  := $(sort $(filter-out bindings/main.c bindings/lreadline.c,$(wildcard bindings/*.c)))
LB_OBJ  := $(LB_SRC:%.c=$(B)/%.o) $(B)/gen/scripts.o
LUA_SCRIPTS := $(sort $(wildcard scripts/lmp/*.lua))
CT_SRC  := $(sort $(wildcard tests/c/test_*.c))
CT_BIN  := $(CT_SRC:tests/c/%.c=$(B)/tests/%)

.PHONY: all test test-all test-asan fuzz test-c test-lua check-layers deps demo bench clean install examples
all: $(B)/lmp $(B)/lmp.so $(B)/liblmp.a $(B)/liblmp.so $(B)/liblmp-lua.a

$(B)/runtime/%.o: runtime/%.c $(wildcard include/lmp/*.h runtime/*.h) | $(B)/runtime
	$(CC) $(ALL_CFLAGS) $(HIREDIS_CFLAGS) -c $< -o $@
$(B)/bindings/%.o: bindings/%.c $(wildcard include/*.h include/lmp/*.h bindings/*.h) | $(B)/bindings
	$(CC) $(ALL_CFLAGS) $(LUA_CFLAGS) $(MSGPACK_CFLAGS) -c $< -o $@
$(B)/gen/scripts.c: bindings/embed.lua $(LUA_SCRIPTS) | $(B)/gen
	$(LUA) bindings/embed.lua $@ $(LUA_SCRIPTS)
$(B)/gen/scripts.o: $(B)/gen/scripts.c
	$(CC) $(ALL_CFLAGS) $(LUA_CFLAGS) -c $< -o $@

$(B)/liblmp.a: $(RT_OBJ)
	rm -f $@ && ar rcs $@ $^
$(B)/liblmp.so: $(RT_OBJ)
	$(CC) -shared $(LDFLAGS) -o $@ $^ $(BROKER_LIBS)
# The bindings alone, for C programs that embed Lua: link with liblmp.
$(B)/liblmp-lua.a: $(LB_OBJ)
	rm -f $@ && ar rcs $@ $^
# The module carries the runtime inside it and takes Lua from the host.
$(B)/lmp.so: $(LB_OBJ) $(RT_OBJ)
	$(CC) -shared $(LDFLAGS) -o $@ $^ $(MSGPACK_LIBS) $(BROKER_LIBS)
$(B)/lmp: $(B)/bindings/main.o $(B)/bindings/lreadline.o $(LB_OBJ) $(RT_OBJ)
	$(CC) $(LDFLAGS) -Wl,-E -o $@ $^ $(LUA_LIBS) $(MSGPACK_LIBS) $(READLINE_LIBS) $(BROKER_LIBS) -lm -ldl

$(B)/tests/%: tests/c/%.c tests/c/runner.c tests/c/runner.h $(B)/liblmp.a | $(B)/tests
	$(CC) $(ALL_CFLAGS) -Itests/c $< tests/c/runner.c -o $@ $(LDFLAGS) $(B)/liblmp.a $(BROKER_LIBS)

build $(B)/runtime $(B)/bindings $(B)/gen $(B)/tests:
	mkdir -p $@

# test and demo install missing packages first, then re-read this Makefile so
# the pkg-config lookups see them.
test: deps
	@$(MAKE) --no-print-directory test-all
test-all: all $(CT_BIN)
	@sh tests/run.sh $(B)
test-c: $(CT_BIN)
	@sh tests/run.sh $(B) c
test-lua: all
	@sh tests/run.sh $(B) lua
# The same suites on the AddressSanitizer/UBSan build.  lua5.4 itself is not
# instrumented, so the sanitizer runtime is preloaded into it.
test-asan:
	@$(MAKE) --no-print-directory ASAN=1 all $(CT_SRC:tests/c/%.c=build-asan/tests/%)
	@LD_PRELOAD=$$($(CC) -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 \
	  LMP_TEST_TIMEOUT_MULT=3 SPEC_TIMEOUT=900 sh tests/run.sh build-asan
# Mutation fuzzing of the decoder under ASan/UBSan (FUZZ_N mutants).
FUZZ_N ?= 200000
fuzz: | build
	$(CC) -std=c11 -D_GNU_SOURCE -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined \
	  -Iinclude -Ibindings $(LUA_CFLAGS) $(MSGPACK_CFLAGS) tests/c/fuzz_decode.c bindings/codec.c \
	  bindings/lerror.c runtime/common.c $(LUA_LIBS) $(MSGPACK_LIBS) -lm -o build/fuzz_decode
	build/fuzz_decode $(FUZZ_N)
check-layers:
	@sh tests/run.sh $(B) layers

deps:
	sh scripts/setup-debian.sh

demo: deps
	@$(MAKE) --no-print-directory all
	$(B)/lmp examples/primes.lua

# Installs python3 when missing (bench/run.sh) and builds the C reference.
BENCH_ARGS ?=
bench: all
	@sh bench/run.sh $(B) $(BENCH_ARGS)

# Example hosts: one embeds Lua and lmp, one uses the C runtime alone.
examples: $(B)/examples/host_lua $(B)/examples/host_c
$(B)/examples/host_lua: examples/host/host_lua.c $(B)/liblmp-lua.a $(B)/liblmp.a | $(B)/examples
	$(CC) $(ALL_CFLAGS) $(LUA_CFLAGS) $< -o $@ $(LDFLAGS) -Wl,-E $(B)/liblmp-lua.a $(B)/liblmp.a \
	  $(LUA_LIBS) $(MSGPACK_LIBS) $(BROKER_LIBS) -lm -ldl
$(B)/examples/host_c: examples/host/host_c.c $(B)/liblmp.a | $(B)/examples
	$(CC) $(ALL_CFLAGS) $< -o $@ $(LDFLAGS) $(B)/liblmp.a $(BROKER_LIBS)
$(B)/examples:
	mkdir -p $@

# pkg-config: lmp is the C runtime; lmp-lua adds the bindings for Lua hosts.
define LMP_PC
prefix=$(PREFIX)
libdir=$(LIBDIR)
includedir=$(INCDIR)

Name: lmp
Description: multiprocessing runtime: queues, sync objects, shared memory, processes, pools
Version: $(VERSION)
Libs: -L$${libdir} -llmp
Libs.private: -pthread $(BROKER_LIBS)
Cflags: -I$${includedir}
endef
define LMP_LUA_PC
prefix=$(PREFIX)
libdir=$(LIBDIR)
includedir=$(INCDIR)

Name: lmp-lua
Description: lmp for C programs that embed Lua 5.4 (luaopen_lmp)
Version: $(VERSION)
Requires: lmp $(LUA_PC)
Libs: -L$${libdir} -llmp-lua -llmp $(MSGPACK_LIBS) $(BROKER_LIBS) -lm -ldl -pthread
Cflags: -I$${includedir} $(if $(LUA_PC),,$(LUA_CFLAGS))
endef
export LMP_PC LMP_LUA_PC
VERSION := $(shell sed -n 's/^\#define LMP_VERSION_STRING "\(.*\)"/\1/p' include/lmp/common.h)

.PHONY: install-lua install-c
install: install-lua install-c
# What a Lua installation needs (the rockspec installs only this).
install-lua: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LUA_CMOD) $(DESTDIR)$(LUA_LMOD)/lmp
	install -m 755 $(B)/lmp $(DESTDIR)$(BINDIR)/lmp
	install -m 755 $(B)/lmp.so $(DESTDIR)$(LUA_CMOD)/lmp.so
	install -m 644 $(LUA_SCRIPTS) $(DESTDIR)$(LUA_LMOD)/lmp/
# What C programs need: headers, libraries, pkg-config files, the man page.
install-c: all
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCDIR)/lmp $(DESTDIR)$(MANDIR)/man1
	install -m 644 $(B)/liblmp.a $(B)/liblmp-lua.a $(DESTDIR)$(LIBDIR)/
	install -m 755 $(B)/liblmp.so $(DESTDIR)$(LIBDIR)/
	install -m 644 include/lmp.h $(DESTDIR)$(INCDIR)/
	install -m 644 include/lmp/*.h $(DESTDIR)$(INCDIR)/lmp/
	install -m 644 docs/lmp.1 $(DESTDIR)$(MANDIR)/man1/lmp.1
	printf '%s\n' "$$LMP_PC" > $(DESTDIR)$(LIBDIR)/pkgconfig/lmp.pc
	printf '%s\n' "$$LMP_LUA_PC" > $(DESTDIR)$(LIBDIR)/pkgconfig/lmp-lua.pc

clean:
	rm -rf build build-asan
