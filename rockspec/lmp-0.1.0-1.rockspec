-- LuaRocks build of lmp: the module (lmp.so), its Lua-side scripts and the
-- lmp command, built by the project's Makefile.
--   luarocks --lua-version 5.4 make rockspec/lmp-0.1.0-1.rockspec
rockspec_format = "3.0"
package = "lmp"
version = "0.1.0-1"
source = {
   url = "git+https://example.invalid/lmp.git",
   tag = "v0.1.0",
}
description = {
   summary = "Multiprocessing for Lua 5.4: processes, pools, queues, locks, shared memory",
   detailed = [[
lmp gives Lua 5.4 what Python's multiprocessing gives Python: worker
processes, pools and futures, queues and pipes, process-shared locks and
shared memory, with closures and their upvalues crossing process
boundaries.  A C runtime with Lua bindings; Linux only.
]],
   license = "MIT",
   labels = { "multiprocessing", "parallel", "ipc" },
}
supported_platforms = { "linux" }
dependencies = {
   "lua >= 5.4, < 5.5",
}
external_dependencies = {
   MSGPACK = { header = "msgpack.h" },
   READLINE = { header = "readline/readline.h" },
   HIREDIS = { header = "hiredis/hiredis.h" },
   OPENSSL = { header = "openssl/hmac.h" },
}
build = {
   type = "make",
   build_target = "all",
   build_variables = {
      CFLAGS = "$(CFLAGS)",
      LUA = "$(LUA)",
      LUA_CFLAGS = "-I$(LUA_INCDIR)",
      B = "build-rock",
   },
   install_target = "install-lua",
   install_variables = {
      B = "build-rock",
      PREFIX = "$(PREFIX)",
      BINDIR = "$(BINDIR)",
      LUA_CMOD = "$(LIBDIR)",
      LUA_LMOD = "$(LUADIR)",
   },
   copy_directories = { "docs" },
}
