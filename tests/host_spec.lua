-- C embedding: the example hosts (examples/host/) build and run, and an
-- installation into a temporary prefix serves a C program through
-- pkg-config, a plain lua5.4 through its cpath, and the lmp command.
local support = dofile("tests/support.lua")

local build = support.build
local asan = build:find("asan", 1, true) ~= nil -- build-asan (make test-asan) and the like
local make = "make --no-print-directory B=" .. build .. (asan and " ASAN=1" or "")
-- The sanitizer build's libraries need the sanitizer runtime in the host.
local san = asan and " -fsanitize=address,undefined" or ""

-- Runs a shell command; output and exit code.
local sh = support.shell_code

describe("the example hosts", function()
  it("build with make examples", function()
    local out, code = sh(make .. " examples")
    assert.are.equal(0, code, out)
  end)

  it("host_c shares a queue between forked C processes", function()
    local out, code = sh(build .. "/examples/host_c")
    assert.are.equal(0, code, out)
    assert.are.equal("2 workers: sum of squares 1..100 = 338350\n", out)
  end)

  it("host_lua embeds Lua with lmp and reads the results back in C", function()
    local out, code = sh(build .. "/examples/host_lua")
    assert.are.equal(0, code, out)
    assert.matches("^processes: 100 squares, sum 338350\n", out)
    if require("lmp").Pool then
      assert.matches("\npool: 100 squares, sum 338350\n", out)
    end
  end)
end)

describe("make install", function()
  local prefix

  setup(function()
    prefix = os.tmpname()
    os.remove(prefix)
    local out, code = sh(make .. " install PREFIX=" .. prefix)
    assert.are.equal(0, code, out)
  end)

  teardown(function()
    if prefix then os.execute("rm -rf " .. prefix) end
  end)

  local function pc(name)
    local out, code = sh("PKG_CONFIG_PATH=" .. prefix .. "/lib/pkgconfig pkg-config --cflags --libs " .. name)
    assert.are.equal(0, code, out)
    return (out:gsub("\n", " "))
  end

  it("puts everything in its place", function()
    for _, f in ipairs({"bin/lmp", "include/lmp.h", "include/lmp/queue.h", "include/lmp/proc.h",
                        "lib/liblmp.a", "lib/liblmp.so", "lib/liblmp-lua.a", "lib/lua/5.4/lmp.so",
                        "lib/liblmp-broker.a", "lib/liblmp-broker.so", "lib/pkgconfig/lmp-broker.pc",
                        "include/lmp/segment.h", "include/lmp/runtime.h", "include/lmp/shm.h",
                        "share/lua/5.4/lmp/repl.lua", "share/lua/5.4/lmp/log.lua",
                        "share/man/man1/lmp.1", "lib/pkgconfig/lmp.pc", "lib/pkgconfig/lmp-lua.pc",
                        "share/doc/lmp/lua-api.md", "share/doc/lmp/guide.md", "share/doc/lmp/c-api.md",
                        "share/doc/lmp/from-python.md", "share/doc/lmp/README.md", "share/doc/lmp/LICENSE"}) do
      local h = io.open(prefix .. "/" .. f)
      assert.is_not_nil(h, f)
      h:close()
    end
    local out = sh(prefix .. "/bin/lmp --version")
    assert.matches("^lmp %d+%.%d+%.%d+", out)
  end)

  it("has lmp --help point at the installed documentation", function()
    local dir = sh("cd " .. prefix .. " && pwd -P"):match("[^\n]+") .. "/share/doc/lmp/"
    local out = sh(prefix .. "/bin/lmp --help")
    assert.matches("Documentation: " .. dir, out, 1, true)
  end)

  it("gives liblmp.so and liblmp-broker.so their SONAMEs (.so.0), with their links, here and in build/", function()
    local version = require("lmp")._VERSION:match("%d+%.%d+%.%d+")
    for _, dir in ipairs({prefix .. "/lib", build}) do
      for _, lib in ipairs({"liblmp", "liblmp-broker"}) do
        local out = sh("readelf -d " .. dir .. "/" .. lib .. ".so")
        assert.matches("%(SONAME%)%s+Library soname: %[" .. lib:gsub("%-", "%%-") .. "%.so%.0%]", out)
        assert.are.equal(lib .. ".so.0\n", sh("readlink " .. dir .. "/" .. lib .. ".so"))
        assert.are.equal(lib .. ".so." .. version .. "\n", sh("readlink " .. dir .. "/" .. lib .. ".so.0"))
        assert.are.equal("f", sh("test -f " .. dir .. "/" .. lib .. ".so." .. version .. " && echo f"):match("%S+"))
      end
    end
  end)

  -- The broker is a library of its own: liblmp needs neither hiredis nor
  -- libssl nor libcrypto, and liblmp-broker asks for liblmp.
  it("links the broker's libraries into liblmp-broker.so only", function()
    local runtime = sh("readelf -d " .. prefix .. "/lib/liblmp.so")
    assert.is_nil(runtime:match("NEEDED[^\n]*hiredis"), runtime)
    assert.is_nil(runtime:match("NEEDED[^\n]*libcrypto"), runtime)
    assert.is_nil(runtime:match("NEEDED[^\n]*libssl"), runtime)
    local broker = sh("readelf -d " .. prefix .. "/lib/liblmp-broker.so")
    assert.matches("NEEDED[^\n]*%[liblmp%.so%.0%]", broker)
    assert.matches("NEEDED[^\n]*%[libssl%.so", broker)
    assert.matches("NEEDED[^\n]*hiredis", broker)
  end)

  -- The ways docs/c-api.md gives to build against a prefix the loader does
  -- not search: each program starts, with no LD_LIBRARY_PATH; the plain
  -- line of the runtime's shared library does not, as the page says (a Lua
  -- host links one static archive, and starts).
  describe("the link lines of docs/c-api.md", function()
    local page = support.read("docs/c-api.md")
    local lines = {}
    for block in page:gmatch("```sh\n(.-)```") do
      for line in block:gmatch("[^\n]+") do
        if line:match("^cc host%.c") then lines[#lines + 1] = line:gsub("%s+#.*", "") end
      end
    end

    local function build_with(line)
      local lua = line:find("lmp-lua", 1, true)
      local exe = prefix .. "/" .. (lua and "doc_lua" or "doc_c")
      local cmd = line:gsub("^cc host%.c", "cc" .. san .. (lua and " examples/host/host_lua.c" or " examples/host/host_c.c"))
      local out, code = sh("export PKG_CONFIG_PATH=" .. prefix .. "/lib/pkgconfig; " .. cmd .. " -o " .. exe)
      assert.are.equal(0, code, cmd .. "\n" .. out)
      return exe, lua
    end

    it("are there", function()
      assert.is_true(#lines >= 4, #lines .. " lines")
    end)

    for _, line in ipairs(lines) do
      local plain = not line:find("rpath", 1, true) and not line:find("--static", 1, true)
        and not line:find("lmp-lua", 1, true)
      it((plain and "without a search path, fails to start: " or "starts: ") .. line, function()
        local exe, lua = build_with(line)
        local out, code = sh("env -u LD_LIBRARY_PATH " .. exe)
        if plain then
          assert.are_not.equal(0, code)
          assert.matches("liblmp[%-a-z]*%.so%.0: cannot open shared object file", out)
        else
          assert.are.equal(0, code, out)
          assert.matches(lua and "processes: 100 squares" or "sum of squares 1..100 = 338350", out, 1, true)
        end
      end)
    end
  end)

  it("builds a C runtime host with pkg-config lmp", function()
    local flags = pc("lmp")
    assert.matches("-llmp", flags, 1, true)
    local exe = prefix .. "/host_c"
    local out, code = sh(string.format("cc -std=c11 -D_GNU_SOURCE%s examples/host/host_c.c -o %s %s -Wl,-rpath,%s/lib",
      san, exe, flags, prefix))
    assert.are.equal(0, code, out)
    out, code = sh(exe)
    assert.are.equal(0, code, out)
    assert.matches("sum of squares 1..100 = 338350", out, 1, true)
    -- A program that does not use the broker loads neither hiredis nor libssl nor libcrypto.
    out = sh("ldd " .. exe)
    assert.matches("liblmp%.so%.0 => " .. prefix, out)
    assert.is_nil(out:match("hiredis"), out)
    assert.is_nil(out:match("libcrypto"), out)
    assert.is_nil(out:match("libssl"), out)
  end)

  it("builds a broker C program with pkg-config lmp-broker", function()
    local src, exe = prefix .. "/sign.c", prefix .. "/sign"
    local f = assert(io.open(src, "w"))
    f:write([[
#include <stdio.h>
#include <lmp/broker.h>
int main(void)
{
  lmp_buf_t b = {0};
  lmp_broker_view_t v;
  if (lmp_broker_sign(&b, "k", 1, LMP_BROKER_TASK, "t1", "q", 0, "hi", 2) < 0 ||
      lmp_broker_verify(b.data, b.len, "k", 1, 60000, &v) < 0)
    return 1;
  printf("%.*s %.*s\n", (int)v.idlen, v.id, (int)v.len, v.payload);
  lmp_buf_free(&b);
  return 0;
}
]])
    f:close()
    local out, code = sh(string.format("cc -std=c11%s %s -o %s %s -Wl,-rpath,%s/lib", san, src, exe,
      pc("lmp-broker"), prefix))
    assert.are.equal(0, code, out)
    out, code = sh(exe)
    assert.are.equal(0, code, out)
    assert.are.equal("t1 hi\n", out)
  end)

  it("builds a Lua host with pkg-config lmp-lua", function()
    local flags = pc("lmp-lua")
    local exe = prefix .. "/host_lua"
    local out, code = sh(string.format("cc -std=c11%s examples/host/host_lua.c -o %s %s -Wl,-rpath,%s/lib",
      san, exe, flags, prefix))
    assert.are.equal(0, code, out)
    out, code = sh(exe)
    assert.are.equal(0, code, out)
    assert.matches("processes: 100 squares, sum 338350", out, 1, true)
  end)

  it("serves lua5.4 from the installed module, spawn finding the installed lmp", function()
    local out, code = sh("cd / && lua5.4 -e 'package.cpath = \"" .. prefix .. [[/lib/lua/5.4/?.so;" .. package.cpath
      local lmp = require "lmp"
      local q = lmp.Queue()
      local p = lmp.Process{target = function() q:put(arg and "spawned") end, start_method = "spawn"}
      p:start(); print(q:get(10)); p:join()']])
    assert.are.equal(0, code, out)
    assert.are.equal("spawned\n", out)
  end)
end)

describe("the rockspec", function()
  it("builds and installs with luarocks make", function()
    if not support.shell("command -v luarocks"):match("luarocks") then
      return pending("luarocks is not installed (make deps installs it)")
    end
    local tree = os.tmpname()
    os.remove(tree)
    local out, code = sh("luarocks --lua-version 5.4 --tree " .. tree ..
      " make rockspec/lmp-0.1.0-1.rockspec > " .. tree .. ".log 2>&1")
    if code ~= 0 then out = support.shell("tail -20 " .. tree .. ".log") end
    os.remove(tree .. ".log")
    assert.are.equal(0, code, out)
    out, code = sh("cd / && lua5.4 -e 'package.cpath = \"" .. tree .. [[/lib/lua/5.4/?.so;" .. package.cpath
      local lmp = require "lmp"
      local q = lmp.Queue()
      local p = lmp.Process{target = function() q:put("rock") end, start_method = "spawn"}
      p:start(); print(q:get(10)); p:join()' && ]] .. tree .. "/bin/lmp -e 'print(lmp._VERSION)'")
    os.execute("rm -rf " .. tree)
    assert.are.equal(0, code, out)
    assert.matches("^rock\nlmp %d", out)
  end)
end)
