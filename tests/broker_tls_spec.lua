-- The broker over TLS (rediss://) against real redis-servers that listen
-- for TLS alone: certificates made here with the openssl command (a CA, a
-- server certificate for 127.0.0.1 only, a client certificate, and another
-- CA that signed none of them).  Skipped, with the reason, when
-- redis-server is missing.
local support = dofile("tests/support.lua")
local lmp = require "lmp"

local SECRET = "tls-secret"

local sh, kill = support.shell, support.kill
local harness = dofile("tests/redis.lua")
local shq = harness.shq

local readfile = support.readfile

local dir       -- the certificates
local tls       -- the server's files, for harness.server
local srv       -- a TLS server that asks for client certificates
local strict    -- a TLS server that wants them (--tls-auth-clients yes)
local plain     -- a plain server

-- A key and a certificate named name, signed by the CA ca (nil: itself),
-- with the extensions ext (openssl x509 -extfile lines).
local function cert(name, ca, ext)
  local d = shq(dir) .. "/"
  local out = sh(string.format("cd %s && openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
                               .. "-keyout %s.key -out %s.csr -subj '/CN=lmp %s' 2>&1", d, name, name, name))
  local extfile = d .. name .. ".ext"
  local f = assert(io.open(dir .. "/" .. name .. ".ext", "w"))
  f:write(ext or "basicConstraints=critical,CA:TRUE\n")
  f:close()
  if ca then
    out = out .. sh(string.format("cd %s && openssl x509 -req -in %s.csr -CA %s.crt -CAkey %s.key -CAcreateserial "
                                  .. "-days 2 -out %s.crt -extfile %s 2>&1", d, name, ca, ca, name, extfile))
  else
    out = out .. sh(string.format("cd %s && openssl x509 -req -in %s.csr -signkey %s.key -days 2 -out %s.crt "
                                  .. "-extfile %s 2>&1", d, name, name, name, extfile))
  end
  assert(io.open(dir .. "/" .. name .. ".crt"), out)
  return dir .. "/" .. name .. ".crt", dir .. "/" .. name .. ".key"
end

local function tls_url(s, db, query)
  return "rediss://127.0.0.1:" .. s.port .. "/" .. (db or 0) .. (query or "?ca=" .. tls.ca)
end

local nqueue = 0
local function new_queue()
  nqueue = nqueue + 1
  return "tls" .. nqueue
end

local function worker(queue, url, opts)
  local o = {queue = queue, url = url, secret = SECRET}
  for k, v in pairs(opts or {}) do o[k] = v end
  if o.url == false then o.url = nil end
  return harness.worker(o)
end

local function exited(pid) return support.all_dead({pid}, 10) end

-- Whether descriptor fd turns readable within secs.
local function readable(fd, secs) return lmp._poll_fds({fd}, secs) > 0 end

-- The error of lmp.Pool{broker = url, ...} (it must fail).
local function refused(url, extra)
  local o = {broker = url, secret = SECRET, queue = new_queue()}
  for k, v in pairs(extra or {}) do o[k] = v end
  local ok, e = pcall(lmp.Pool, o)
  assert.is_false(ok, "the pool opened")
  assert.are.equal("broker", e.kind, tostring(e))
  return e.message
end

local describe_redis = harness.describer(describe, pending)

describe_redis("lmp.Pool on a TLS Redis (rediss://)", function()
  setup(function()
    dir = sh("mktemp -d"):match("%S+")
    local ca = cert("ca")
    cert("other") -- a CA that signed nothing here
    local c, k = cert("server", "ca", "subjectAltName=IP:127.0.0.1\n")
    local cc, ck = cert("client", "ca", "basicConstraints=CA:FALSE\n")
    tls = {ca = ca, cert = c, key = k, client_cert = cc, client_key = ck}
    srv = harness.server(nil, tls)
    strict = harness.server("--tls-auth-clients yes", tls)
    plain = harness.server()
  end)
  teardown(function()
    harness.cleanup()
    sh("rm -rf " .. shq(dir))
  end)

  it("maps with two workers, the CA in the URL or in LMP_REDIS_CA", function()
    local q = new_queue()
    local w1 = worker(q, tls_url(srv))
    local w2 = worker(q, tls_url(srv, 0, ""), {env = "LMP_REDIS_CA=" .. shq(tls.ca)})
    local p = lmp.Pool{broker = tls_url(srv), queue = q, secret = SECRET}
    local items = {}
    for i = 1, 200 do items[i] = i end
    local out = p:map(function(x) return x * x end, items, 1)
    for i = 1, 200 do assert.are.equal(i * i, out[i]) end
    local st = p:stats()
    assert.are.equal(2, #st.workers)
    p:terminate()
    -- a caller through LMP_REDIS_CA too
    local code = string.format("local p = lmp.Pool{broker = %q, queue = %q, secret = %q} "
                               .. "print(table.concat(p:map(function(x) return x + 1 end, {1, 2}), ' ')) p:terminate()",
                               tls_url(srv, 0, ""), q, SECRET)
    local o = sh("env LMP_REDIS_CA=" .. shq(tls.ca) .. " " .. support.lmp_bin .. " -e " .. shq(code) .. " 2>&1")
    assert.are.equal("2 3\n", o)
    for _, w in ipairs({w1, w2}) do
      kill(w)
      assert.is_true(exited(w))
    end
  end)

  it("refuses a server whose certificate its CA did not sign", function()
    local msg = refused(tls_url(srv, 0, "?ca=" .. dir .. "/other.crt"))
    assert.matches("certificate verify failed", msg, 1, true)
    assert.matches("127.0.0.1:" .. srv.port, msg, 1, true)
    -- without ca= (nor LMP_REDIS_CA) the system's CAs, which did not sign it either
    msg = refused(tls_url(srv, 0, ""))
    assert.matches("certificate verify failed", msg, 1, true)
  end)

  it("refuses a certificate made for another host", function()
    -- the certificate is for 127.0.0.1 alone
    local msg = refused("rediss://localhost:" .. srv.port .. "/0?ca=" .. tls.ca)
    assert.matches("certificate verify failed: hostname mismatch", msg, 1, true)
    assert.matches("not for 'localhost'", msg, 1, true)
  end)

  it("presents a client certificate to a server that wants one", function()
    local q = new_queue()
    local with = tls_url(strict, 0, "?ca=" .. tls.ca .. "&cert=" .. tls.client_cert .. "&key=" .. tls.client_key)
    local w = worker(q, with)
    local p = lmp.Pool{broker = with, queue = q, secret = SECRET}
    assert.are.same({2, 4}, p:map(function(x) return 2 * x end, {1, 2}))
    p:terminate()
    kill(w)
    assert.is_true(exited(w))
    -- the same from LMP_REDIS_CERT and LMP_REDIS_KEY
    local code = string.format("local ok, e = pcall(lmp.Pool, {broker = %q, secret = 'x'}) print(ok)",
                               tls_url(strict))
    local o = sh("env LMP_REDIS_CERT=" .. shq(tls.client_cert) .. " LMP_REDIS_KEY=" .. shq(tls.client_key) .. " "
                 .. support.lmp_bin .. " -e " .. shq(code) .. " 2>&1")
    assert.are.equal("true\n", o)
    -- without one: refused, and said so
    local msg = refused(tls_url(strict), {connect_timeout = 2})
    assert.matches("refused the TLS connection", msg, 1, true)
    assert.matches("client certificate", msg, 1, true)
    -- a certificate without its key, and files that cannot be read
    msg = refused(tls_url(strict, 0, "?ca=" .. tls.ca .. "&cert=" .. tls.client_cert))
    assert.matches("give both cert= and key=", msg, 1, true)
    msg = refused(tls_url(srv, 0, "?ca=" .. dir .. "/missing.crt"))
    assert.matches("cannot read the TLS CA file '" .. dir .. "/missing.crt': No such file", msg, 1, true)
    msg = refused(tls_url(strict, 0, "?ca=" .. tls.ca .. "&cert=" .. tls.client_cert .. "&key=" .. tls.ca))
    assert.matches("the TLS key file '" .. tls.ca .. "' holds no usable key", msg, 1, true)
    msg = refused(tls_url(srv, 0, "?ca=" .. tls.ca .. "&pem=x"))
    assert.matches("unknown parameter 'pem'", msg, 1, true)
    msg = refused("redis://127.0.0.1:" .. plain.port .. "/0?ca=" .. tls.ca)
    assert.matches("need rediss://", msg, 1, true)
  end)

  it("says so when TLS meets a plain port, or plain Redis a TLS port", function()
    local msg = refused("rediss://127.0.0.1:" .. plain.port .. "/0?ca=" .. tls.ca, {connect_timeout = 1})
    assert.matches("no TLS handshake from redis at 127.0.0.1:" .. plain.port, msg, 1, true)
    assert.matches("is it a plain redis:// port?", msg, 1, true)
    msg = refused("redis://127.0.0.1:" .. srv.port .. "/0", {connect_timeout = 1})
    assert.matches("it may be a TLS port: use rediss://", msg, 1, true)
  end)

  it("wakes event loops through its descriptor over TLS", function()
    local q = new_queue()
    local w = worker(q, tls_url(srv))
    local p = lmp.Pool{broker = tls_url(srv), queue = q, secret = SECRET}
    local fd = p:fileno()
    assert.is_nil(p:_tick()) -- a descriptor to watch, no tick
    assert.are.equal(0, p:poll())
    assert.is_false(readable(fd, 0.3))
    -- each result wakes the loop, though TLS reads in records (up to 16 kB
    -- each): what SSL has decrypted is never left where poll cannot see it
    for round = 1, 5 do
      local n = round % 2 == 0 and 40000 or 1
      local r = p:apply_async(function(k) return string.rep("x", k) end, {n})
      p:poll()
      repeat -- (a long reply may wake it once too often first)
        assert.is_true(readable(fd, 10), "round " .. round)
        p:poll()
      until r:ready()
      assert.are.equal(n, #r:get(0))
    end
    if readable(fd, 0.3) then p:poll() end -- (one wake-up too many is allowed)
    assert.is_false(readable(fd, 0.3))
    p:terminate()
    kill(w)
    assert.is_true(exited(w))
  end)

  it("keeps the password of a rediss:// URL off command lines and out of logs", function()
    assert.matches("OK", srv:cli("ACL SETUSER tlsuser on '>tls-pw@x' '~*' '&*' '+@all'"))
    local pw_url = "rediss://tlsuser:tls-pw%40x@127.0.0.1:" .. srv.port .. "/0?ca=" .. tls.ca
    local q = new_queue()
    local w, log = worker(q, pw_url, {command = true})
    local p = lmp.Pool{broker = pw_url, queue = q, secret = SECRET}
    assert.are.same({1, 4}, p:map(function(x) return x * x end, {1, 2}))
    assert.are.equal("rediss://tlsuser:***@127.0.0.1:" .. srv.port .. "/0?ca=" .. tls.ca, p:stats().broker)
    p:terminate()
    assert.matches("worker%zrediss://tlsuser:x+@127%.0%.0%.1:", readfile("/proc/" .. w .. "/cmdline"))
    assert.is_nil(readfile("/proc/" .. w .. "/cmdline"):find("tls-pw", 1, true))
    kill(w)
    assert.is_true(exited(w))
    assert.matches("serving queue " .. q .. " at rediss://tlsuser:%*%*%*@127", readfile(log))
    assert.is_nil(readfile(log):find("tls-pw", 1, true))
    -- an '@' in the query's path is the path's, not the end of the password
    local core = require("lmp.core").broker
    assert.are.equal("rediss://u:***@h:1/0?ca=/a@b/ca.pem", core.url_shown("rediss://u:pw@h:1/0?ca=/a@b/ca.pem"))
    assert.are.equal("rediss://:***@h/0?ca=x", core.url_shown("rediss://:p?w@h/0?ca=x"))
  end)

  -- The guide's TLS sample, against this server with two workers.
  for i, sample in ipairs(support.samples("docs/guide.md")) do
    if sample.code:match("^%-%- with a TLS Redis") then
      it("runs the guide's sample " .. i .. " (" .. sample.title .. ")", function()
        local ws = {}
        for k = 1, 2 do ws[k] = worker("default", tls_url(srv), {secret = "s3cret"}) end
        local code = sample.code:gsub("redis%-host:6380", "127.0.0.1:" .. srv.port)
                                :gsub("/etc/lmp/ca%.pem", tls.ca)
        local ok, err = pcall(support.check_sample, sample.code, code)
        for _, w in ipairs(ws) do kill(w, "KILL") end
        assert(ok, err)
      end)
    end
  end

  it("reaches a Redis Cluster over TLS (rediss+cluster://), following MOVED to another node", function()
    local nodes, addrs = harness.cluster(3, "--tls-cluster yes --tls-replication yes --appendonly no",
                                         {ca = tls.ca, cert = tls.cert, key = tls.key})
    -- a queue on the third master, which the URL does not name
    local q
    for i = 1, 1000 do
      q = "tlsc" .. i
      if tonumber(nodes[1]:cli("CLUSTER KEYSLOT 'lmp:{" .. q .. "}'"):match("%d+")) >= 10923 then break end
    end
    local url = "rediss+cluster://" .. addrs[1] .. "," .. addrs[2] .. "/?ca=" .. tls.ca
    worker(q, url)
    local p = lmp.Pool{broker = url, queue = q, secret = SECRET}
    assert.are.same({1, 4, 9}, p:map(function(x) return x * x end, {1, 2, 3}))
    p:terminate()
    assert.matches("lmp:{" .. q .. "}", nodes[3]:cli("--scan --pattern 'lmp:*'"))
    -- without the CA, the first node already fails the check
    local ok, e = pcall(lmp.Pool, {broker = "rediss+cluster://" .. addrs[1] .. "/", queue = q, secret = SECRET})
    assert.is_false(ok)
    assert.matches("certificate verify failed", e.message)
  end)

  it("leaks no globals", function()
    assert.are.same({}, support.new_globals())
  end)
end)
