# lmp -- multiprocessing for Lua.
#
#   make            build/lmp, build/lmp.so, build/liblmp.a, build/liblmp.so
#                   (liblmp.so -> liblmp.so.0 -> liblmp.so.0.x.y, SONAME liblmp.so.0),
#                   build/liblmp-broker.a, build/liblmp-broker.so (the same
#                   links, SONAME liblmp-broker.so.0; needs liblmp.so.0), and
#                   build/liblmp-lua.a (bindings, runtime and broker in one
#                   archive, for C programs that embed Lua).  The broker (lmp/broker.h) is a library
#                   of its own so that liblmp does not bring hiredis,
#                   libssl and libcrypto into programs that do not use it; lmp.so and
#                   the lmp executable carry both.
#   make test       C tests, layer check and busted specs; one summary line
#   make deps       install what is missing on Debian 12 (apt-get, as root)
#   make demo       the parallel demo from README
#   make bench      the benchmark suite, lmp against Python (bench/README.md);
#                   BENCH_ARGS="--rounds 3 queue_small" picks rounds and workloads
#   make ASAN=1     the same with AddressSanitizer and UBSan (into build-asan/)
#   make test-asan  every suite on that build; any sanitizer report fails it
#   make test-valgrind  memcheck on the C tests and a subset of the specs
#   make stress     the fault matrix at full counts (LMP_STRESS=1)
#   make fuzz       the codec's readers, pipe and queue readers: the mutation drivers,
#                   then libFuzzer (FUZZ_RUNS inputs each; installs clang's
#                   fuzzer runtime if missing)
#   make examples   the example C hosts (examples/host/) into build/examples/
#   make install    PREFIX=/usr/local (DESTDIR too; LUA_CMOD, LUA_LMOD, BINDIR
#                   move the Lua module, its scripts and the command; DOCDIR
#                   the docs, which lmp --help finds at BINDIR/../share/doc/lmp)

PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
LIBDIR  ?= $(PREFIX)/lib
INCDIR  ?= $(PREFIX)/include
MANDIR  ?= $(PREFIX)/share/man
DOCDIR  ?= $(PREFIX)/share/doc/lmp
LUA_CMOD ?= $(PREFIX)/lib/lua/5.4
LUA_LMOD ?= $(PREFIX)/share/lua/5.4
CC      ?= gcc
LUA     ?= lua5.4
PKG     ?= pkg-config

VERSION := $(shell sed -n 's/^\#define LMP_VERSION_STRING "\(.*\)"/\1/p' include/lmp/common.h)
# liblmp.so's SONAME carries the major version: programs linked against it
# ask for liblmp.so.0, which a later 0.x.y satisfies.
SOMAJOR := $(firstword $(subst ., ,$(VERSION)))
SONAME  := liblmp.so.$(SOMAJOR)
BROKER_SONAME := liblmp-broker.so.$(SOMAJOR)

# pkg-config names differ between distributions and versions.
LUA_PC     := $(firstword $(foreach p,lua5.4 lua-5.4 lua54,$(shell $(PKG) --exists $(p) 2>/dev/null && echo $(p))))
MSGPACK_PC := $(firstword $(foreach p,msgpack-c msgpack,$(shell $(PKG) --exists $(p) 2>/dev/null && echo $(p))))
LUA_CFLAGS     := $(if $(LUA_PC),$(shell $(PKG) --cflags $(LUA_PC)),-I/usr/include/lua5.4)
LUA_LIBS       := $(if $(LUA_PC),$(shell $(PKG) --libs $(LUA_PC)),-llua5.4)
MSGPACK_CFLAGS := $(if $(MSGPACK_PC),$(shell $(PKG) --cflags $(MSGPACK_PC)),)
MSGPACK_LIBS   := $(if $(MSGPACK_PC),$(shell $(PKG) --libs $(MSGPACK_PC)),-lmsgpackc)
READLINE_LIBS  := $(shell $(PKG) --libs readline 2>/dev/null || echo -lreadline)
# The broker (runtime/broker*.c): hiredis for Redis, libssl for rediss://,
# libcrypto for HMAC.
HIREDIS_CFLAGS := $(shell $(PKG) --cflags hiredis 2>/dev/null)
BROKER_LIBS    := $(shell $(PKG) --libs hiredis 2>/dev/null || echo -lhiredis) \
                  $(shell $(PKG) --libs libssl 2>/dev/null || echo -lssl) \
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
# Hidden by default: the libraries export what the public headers declare
# with LMP_API (include/lmp/common.h), and nothing else.
ALL_CFLAGS := -std=c11 -D_GNU_SOURCE $(WARN) -fPIC -fvisibility=hidden -pthread -Iinclude $(CFLAGS)
ifdef LMP_USE_APICHECK
ALL_CFLAGS += -DLUA_USE_APICHECK -DLMP_USE_APICHECK
endif
LDFLAGS += $(LDSAN) -pthread

# The runtime, and its broker (runtime/broker*.c), which alone needs
# hiredis, libssl and libcrypto.
BROKER_SRC := $(sort $(wildcard runtime/broker*.c))
BROKER_OBJ := $(BROKER_SRC:%.c=$(B)/%.o)
RT_SRC  := $(sort $(filter-out $(BROKER_SRC),$(wildcard runtime/*.c)))
RT_OBJ  := $(RT_SRC:%.c=$(B)/%.o)
# main.c and the REPL's readline binding go into the lmp executable only.
# bindings/codec/ is the wire room: every msgpack byte is written and read there.
CODEC_SRC := $(sort $(wildcard bindings/codec/*.c))
LB_SRC  := $(sort $(filter-out bindings/main.c bindings/lreadline.c,$(wildcard bindings/*.c)) $(CODEC_SRC))
LB_OBJ  := $(LB_SRC:%.c=$(B)/%.o) $(B)/gen/scripts.o
# Embedded in lmp.so and lmp.  init.lua is the module itself, which
# luaopen_lmp runs; it is not installed beside the others, where require
# would find it before lmp.so.
LUA_SCRIPTS := $(sort $(wildcard scripts/lmp/*.lua))
CT_SRC  := $(sort $(wildcard tests/c/test_*.c))
CT_BIN  := $(CT_SRC:tests/c/%.c=$(B)/tests/%)

.PHONY: all test test-all test-asan test-valgrind stress fuzz fuzz-deps test-c test-lua check-layers deps demo bench clean install examples
all: $(B)/lmp $(B)/lmp.so $(B)/liblmp.a $(B)/liblmp.so $(B)/liblmp-broker.a $(B)/liblmp-broker.so \
  $(B)/liblmp-lua.a

$(B)/runtime/%.o: runtime/%.c $(wildcard include/lmp/*.h runtime/*.h) | $(B)/runtime
	$(CC) $(ALL_CFLAGS) $(HIREDIS_CFLAGS) -c $< -o $@
$(B)/bindings/%.o: bindings/%.c $(wildcard include/*.h include/lmp/*.h bindings/*.h bindings/codec/*.h runtime/*.h) | $(B)/bindings/codec
	$(CC) $(ALL_CFLAGS) -Ibindings $(LUA_CFLAGS) $(MSGPACK_CFLAGS) -c $< -o $@
$(B)/gen/scripts.c: bindings/embed.lua $(LUA_SCRIPTS) | $(B)/gen
	$(LUA) bindings/embed.lua $@ $(LUA_SCRIPTS)
$(B)/gen/scripts.o: $(B)/gen/scripts.c
	$(CC) $(ALL_CFLAGS) $(LUA_CFLAGS) -c $< -o $@

$(B)/liblmp.a: $(RT_OBJ)
	rm -f $@ && ar rcs $@ $^
$(B)/liblmp.so.$(VERSION): $(RT_OBJ)
	$(CC) -shared $(LDFLAGS) -Wl,-soname,$(SONAME) -o $@ $^
$(B)/liblmp.so: $(B)/liblmp.so.$(VERSION)
	ln -sf liblmp.so.$(VERSION) $(B)/$(SONAME)
	ln -sf $(SONAME) $@
$(B)/liblmp-broker.a: $(BROKER_OBJ)
	rm -f $@ && ar rcs $@ $^
$(B)/liblmp-broker.so.$(VERSION): $(BROKER_OBJ) $(B)/liblmp.so
	$(CC) -shared $(LDFLAGS) -Wl,-soname,$(BROKER_SONAME) -o $@ $(BROKER_OBJ) -L$(B) -llmp $(BROKER_LIBS)
$(B)/liblmp-broker.so: $(B)/liblmp-broker.so.$(VERSION)
	ln -sf liblmp-broker.so.$(VERSION) $(B)/$(BROKER_SONAME)
	ln -sf $(BROKER_SONAME) $@
# For C programs that embed Lua: the bindings with the runtime and the
# broker inside, as lmp.so has them (the bindings call runtime helpers that
# the shared libraries keep to themselves).  Linked alone.
$(B)/liblmp-lua.a: $(LB_OBJ) $(RT_OBJ) $(BROKER_OBJ)
	rm -f $@ && ar rcs $@ $^
# The module carries the runtime inside it and takes Lua from the host.  It
# is never unloaded (-z nodelete): a host that closes its Lua states goes on
# running, and its children (or one more state) may still reach lmp's code
# and state, the family of processes included.  It exports luaopen_lmp
# alone: the runtime and its broker come in from their archives with their
# symbols kept inside (--exclude-libs), so a host that also links liblmp
# keeps the two apart.
# The executable exports what C modules may need from it (-E: the Lua API,
# when Lua is linked statically), and of lmp, luaopen_lmp alone too.
RT_AR := $(B)/liblmp-broker.a $(B)/liblmp.a
HIDE_RT := -Wl,--exclude-libs,liblmp-broker.a:liblmp.a
$(B)/lmp.so: $(LB_OBJ) $(RT_AR)
	$(CC) -shared $(LDFLAGS) -Wl,-z,nodelete $(HIDE_RT) -o $@ $(LB_OBJ) $(RT_AR) \
	  $(MSGPACK_LIBS) $(BROKER_LIBS)
$(B)/lmp: $(B)/bindings/main.o $(B)/bindings/lreadline.o $(LB_OBJ) $(RT_AR)
	$(CC) $(LDFLAGS) -Wl,-E $(HIDE_RT) -o $@ $(B)/bindings/main.o $(B)/bindings/lreadline.o \
	  $(LB_OBJ) $(RT_AR) $(LUA_LIBS) $(MSGPACK_LIBS) $(READLINE_LIBS) $(BROKER_LIBS) -lm -ldl

$(B)/tests/%: tests/c/%.c tests/c/runner.c tests/c/runner.h $(B)/liblmp.a | $(B)/tests
	$(CC) $(ALL_CFLAGS) -Itests/c -Iruntime $< tests/c/runner.c -o $@ $(LDFLAGS) $(B)/liblmp.a
$(B)/tests/test_broker: tests/c/test_broker.c tests/c/runner.c tests/c/runner.h $(RT_AR) | $(B)/tests
	$(CC) $(ALL_CFLAGS) -Itests/c -Iruntime $< tests/c/runner.c -o $@ $(LDFLAGS) $(RT_AR) $(BROKER_LIBS)
# The embedding test is a Lua host: it loads $(B)/lmp.so through require.
$(B)/tests/test_embed: tests/c/test_embed.c tests/c/runner.c tests/c/runner.h $(B)/lmp.so $(B)/liblmp.a | $(B)/tests
	$(CC) $(ALL_CFLAGS) $(LUA_CFLAGS) -Itests/c $< tests/c/runner.c -o $@ $(LDFLAGS) $(B)/liblmp.a $(LUA_LIBS) -lm -ldl

build $(B)/runtime $(B)/bindings $(B)/bindings/codec $(B)/gen $(B)/tests $(B)/fuzz:
	mkdir -p $@

# Fuzz targets, always under ASan/UBSan whatever the build: the wire room's
# readers (the decoder, the plain-list reader, the handle walker), and the
# pipe frame and queue record readers.  The plain ones carry their own
# mutation driver (make test runs them briefly, make fuzz at length); the
# *_lf ones are the same code as libFuzzer targets, built with clang.
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -O1 -g -fno-omit-frame-pointer \
  -fsanitize=address,undefined -fno-sanitize-recover=undefined -Iinclude -Ibindings
FUZZ_DECODE_SRC := tests/c/fuzz_decode.c $(CODEC_SRC) bindings/lerror.c bindings/lmpaux.c \
  runtime/common.c
FUZZ_FRAME_SRC := tests/c/fuzz_frame.c runtime/pipe.c runtime/queue.c runtime/segment.c runtime/runtime.c \
  runtime/watchdog.c runtime/fdpass.c runtime/mutex.c runtime/common.c
FUZZ_BIN := $(B)/fuzz/fuzz_decode $(B)/fuzz/fuzz_frame
CLANG ?= clang
$(B)/fuzz/fuzz_decode: $(FUZZ_DECODE_SRC) $(wildcard bindings/*.h bindings/codec/*.h include/*.h include/lmp/*.h) | $(B)/fuzz
	$(CC) $(FUZZ_CFLAGS) $(LUA_CFLAGS) $(MSGPACK_CFLAGS) $(FUZZ_DECODE_SRC) $(LUA_LIBS) $(MSGPACK_LIBS) -lm -o $@
$(B)/fuzz/fuzz_frame: $(FUZZ_FRAME_SRC) $(wildcard include/lmp/*.h runtime/*.h) | $(B)/fuzz
	$(CC) $(FUZZ_CFLAGS) $(FUZZ_FRAME_SRC) -pthread -o $@
$(B)/fuzz/fuzz_decode_lf: $(FUZZ_DECODE_SRC) $(wildcard bindings/*.h bindings/codec/*.h include/*.h include/lmp/*.h) | $(B)/fuzz
	$(CLANG) -DLMP_LIBFUZZER $(FUZZ_CFLAGS) -fsanitize=fuzzer $(LUA_CFLAGS) $(MSGPACK_CFLAGS) \
	  $(FUZZ_DECODE_SRC) $(LUA_LIBS) $(MSGPACK_LIBS) -lm -o $@
$(B)/fuzz/fuzz_frame_lf: $(FUZZ_FRAME_SRC) $(wildcard include/lmp/*.h runtime/*.h) | $(B)/fuzz
	$(CLANG) -DLMP_LIBFUZZER $(FUZZ_CFLAGS) -fsanitize=fuzzer $(FUZZ_FRAME_SRC) -pthread -o $@

# test and demo install missing packages first, then re-read this Makefile so
# the pkg-config lookups see them.
test: deps
	@$(MAKE) --no-print-directory test-all
test-all: all $(CT_BIN) $(FUZZ_BIN)
	@sh tests/run.sh $(B)
test-c: $(CT_BIN)
	@sh tests/run.sh $(B) c
test-lua: all
	@sh tests/run.sh $(B) lua
# The same suites on the AddressSanitizer/UBSan build.  lua5.4 itself is not
# instrumented, so the sanitizer runtime is preloaded into it.  Reports go to
# files, so that one written by a child whose death a test expects (a pool
# worker lost) still fails the run.  SIGSEGV is left to the tests that send
# it; an allocation ASan cannot make returns NULL, as malloc does; and the
# specs are told, so they skip what ASan cannot do (address-space limits).
ASAN_REPORTS := $(CURDIR)/build-asan/reports
test-asan:
	@$(MAKE) --no-print-directory ASAN=1 all $(CT_SRC:tests/c/%.c=build-asan/tests/%) \
	  build-asan/fuzz/fuzz_decode build-asan/fuzz/fuzz_frame
	@rm -rf $(ASAN_REPORTS) && mkdir -p $(ASAN_REPORTS)
	@LD_PRELOAD=$$($(CC) -print-file-name=libasan.so) \
	  ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1:handle_segv=0:log_path=$(ASAN_REPORTS)/asan \
	  UBSAN_OPTIONS=print_stacktrace=1:log_path=$(ASAN_REPORTS)/ubsan LMP_REPORTS=$(ASAN_REPORTS) \
	  LMP_TEST_SANITIZER=asan LMP_TEST_TIMEOUT_MULT=3 SPEC_TIMEOUT=900 sh tests/run.sh build-asan
# memcheck on the C tests and on specs that cover each object (VALGRIND_SPECS),
# in every process they start: a report fails its test (--error-exitcode).
# Leaks are not checked here: children end in _exit by design, owning what
# their parent allocated; the fuzz runs check leaks under LeakSanitizer.
# Valgrind 3.19 has no pidfd_open, which the skipped process tests need.
VALGRIND_SPECS ?= tests/core_spec.lua tests/codec_spec.lua tests/process_spec.lua tests/queue_spec.lua \
  tests/pipe_spec.lua tests/sync_spec.lua tests/shared_spec.lua tests/dict_spec.lua
VALGRIND := valgrind -q --vgdb=no --error-exitcode=99 --leak-check=no --suppressions=$(CURDIR)/tests/valgrind.supp \
  --trace-children=yes --trace-children-skip=/bin/*,/usr/bin/*,/usr/sbin/*
VALGRIND_SKIP := alive,adopt_wait_and_signal,adopt_parent_lost,adopt_reaped_without_handle
test-valgrind: all $(CT_BIN)
	@sh scripts/setup-debian.sh valgrind
	@LMP_WRAP="$(VALGRIND)" SPECS="$(VALGRIND_SPECS)" LMP_TEST_SKIP="$(VALGRIND_SKIP)" \
	  LMP_TEST_SANITIZER=valgrind LMP_FUZZ_ROUNDS=0.1 LMP_TEST_TIMEOUT_MULT=20 SPEC_TIMEOUT=3600 \
	  sh tests/run.sh $(B) c lua
# The fault matrix at full counts: 100 pool workers killed in a row, 10k
# process cycles, long signal storms and garbage runs (make test runs each
# briefly).
stress: all $(B)/tests/test_faults $(FUZZ_BIN)
	@LMP_STRESS=1 C_TESTS=$(B)/tests/test_faults SPECS="tests/faults_spec.lua tests/badargs_spec.lua" \
	  LMP_TEST_TIMEOUT_MULT=20 SPEC_TIMEOUT=3600 FUZZ_SHORT=1000000 sh tests/run.sh $(B) c lua fuzz
# The long fuzz runs: FUZZ_N inputs per target from the mutation drivers,
# then FUZZ_RUNS per target under libFuzzer (tests/fuzz.sh).
FUZZ_N ?= 1000000
FUZZ_RUNS ?= 1000000
fuzz: fuzz-deps
	@$(MAKE) --no-print-directory $(FUZZ_BIN) $(B)/fuzz/fuzz_decode_lf $(B)/fuzz/fuzz_frame_lf
	$(B)/fuzz/fuzz_decode $(FUZZ_N)
	$(B)/fuzz/fuzz_frame $(FUZZ_N)
	@sh tests/fuzz.sh $(B) $(FUZZ_RUNS)
fuzz-deps:
	@sh scripts/setup-debian.sh clang libclang-rt-14-dev
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
$(B)/examples/host_lua: examples/host/host_lua.c $(B)/liblmp-lua.a | $(B)/examples
	$(CC) $(ALL_CFLAGS) $(LUA_CFLAGS) $< -o $@ $(LDFLAGS) -Wl,-E $(B)/liblmp-lua.a \
	  $(LUA_LIBS) $(MSGPACK_LIBS) $(BROKER_LIBS) -lm -ldl
$(B)/examples/host_c: examples/host/host_c.c $(B)/liblmp.a | $(B)/examples
	$(CC) $(ALL_CFLAGS) $< -o $@ $(LDFLAGS) $(B)/liblmp.a
$(B)/examples:
	mkdir -p $@

# pkg-config: lmp is the C runtime; lmp-broker adds the broker (hiredis,
# libssl, libcrypto); lmp-lua adds the bindings for Lua hosts.
define LMP_PC
prefix=$(PREFIX)
libdir=$(LIBDIR)
includedir=$(INCDIR)

Name: lmp
Description: multiprocessing runtime: queues, sync objects, shared memory, processes, pools
Version: $(VERSION)
Libs: -L$${libdir} -llmp
Libs.private: -pthread
Cflags: -I$${includedir}
endef
define LMP_BROKER_PC
prefix=$(PREFIX)
libdir=$(LIBDIR)
includedir=$(INCDIR)

Name: lmp-broker
Description: lmp's tasks and results on a Redis server (lmp/broker.h)
Version: $(VERSION)
Requires: lmp
Libs: -L$${libdir} -llmp-broker
Libs.private: $(BROKER_LIBS)
Cflags: -I$${includedir}
endef
define LMP_LUA_PC
prefix=$(PREFIX)
libdir=$(LIBDIR)
includedir=$(INCDIR)

Name: lmp-lua
Description: lmp for C programs that embed Lua 5.4 (luaopen_lmp)
Version: $(VERSION)
Requires: $(LUA_PC)
Libs: -L$${libdir} -llmp-lua $(MSGPACK_LIBS) $(BROKER_LIBS) -lm -ldl -pthread
Cflags: -I$${includedir} $(if $(LUA_PC),,$(LUA_CFLAGS))
endef
export LMP_PC LMP_BROKER_PC LMP_LUA_PC

.PHONY: install-lua install-c install-doc
install: install-lua install-c install-doc
# What a Lua installation needs (the rockspec installs only this).
install-lua: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LUA_CMOD) $(DESTDIR)$(LUA_LMOD)/lmp
	install -m 755 $(B)/lmp $(DESTDIR)$(BINDIR)/lmp
	install -m 755 $(B)/lmp.so $(DESTDIR)$(LUA_CMOD)/lmp.so
	install -m 644 $(filter-out scripts/lmp/init.lua,$(LUA_SCRIPTS)) $(DESTDIR)$(LUA_LMOD)/lmp/
# What C programs need: headers, libraries, pkg-config files, the man page.
install-c: all
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCDIR)/lmp $(DESTDIR)$(MANDIR)/man1
	install -m 644 $(B)/liblmp.a $(B)/liblmp-broker.a $(B)/liblmp-lua.a $(DESTDIR)$(LIBDIR)/
	install -m 755 $(B)/liblmp.so.$(VERSION) $(B)/liblmp-broker.so.$(VERSION) $(DESTDIR)$(LIBDIR)/
	ln -sf liblmp.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/liblmp.so
	ln -sf liblmp-broker.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(BROKER_SONAME)
	ln -sf $(BROKER_SONAME) $(DESTDIR)$(LIBDIR)/liblmp-broker.so
	install -m 644 include/lmp.h $(DESTDIR)$(INCDIR)/
	install -m 644 include/lmp/*.h $(DESTDIR)$(INCDIR)/lmp/
	install -m 644 docs/lmp.1 $(DESTDIR)$(MANDIR)/man1/lmp.1
	printf '%s\n' "$$LMP_PC" > $(DESTDIR)$(LIBDIR)/pkgconfig/lmp.pc
	printf '%s\n' "$$LMP_BROKER_PC" > $(DESTDIR)$(LIBDIR)/pkgconfig/lmp-broker.pc
	printf '%s\n' "$$LMP_LUA_PC" > $(DESTDIR)$(LIBDIR)/pkgconfig/lmp-lua.pc
# The documentation, where `lmp --help` finds it (beside bin/lmp: ../share/doc/lmp).
install-doc:
	install -d $(DESTDIR)$(DOCDIR)
	install -m 644 README.md LICENSE docs/*.md $(DESTDIR)$(DOCDIR)/

clean:
	rm -rf build build-asan
