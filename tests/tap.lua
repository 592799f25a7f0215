-- busted output handler: TAP, as busted's own, except that a skipped test's
-- line carries its name and its reason ("ok 3 - name # SKIP reason"), which
-- tests/run.sh collects into its summary.  busted -o tests/tap.lua.
return function(options)
  local busted = require "busted"
  local handler = require("busted.outputHandlers.base")()
  local pretty = require "pl.pretty"
  local counter = 0

  local function say(s)
    io.write(s, "\n")
    io.flush()
  end

  local function failure(t)
    local message = t.message
    if message == nil then
      message = "Nil error"
    elseif type(message) ~= "string" then
      message = pretty.write(message)
    end
    say(string.format("not ok %d - %s", counter, t.name))
    say("# " .. t.element.trace.short_src .. " @ " .. t.element.trace.currentline)
    say("# Failure message: " .. message:gsub("\n", "\n# "))
  end

  -- pending("why") inside a test: the reason, without the position of
  -- busted's own pending function that busted puts before it.  A pending
  -- outside a test has no message: its name is its reason.
  local function skipline(t)
    if type(t.message) ~= "string" then return string.format("ok %d - # SKIP %s", counter, t.name) end
    local why = t.message:gsub("^[^\n:]*:%d+: ", ""):gsub("\n", " ")
    return string.format("ok %d - %s # SKIP %s", counter, t.name, why)
  end

  handler.suiteReset = function()
    counter = 0
    return nil, true
  end

  handler.suiteEnd = function()
    say("1.." .. counter)
    return nil, true
  end

  handler.testEnd = function(_, _, status)
    counter = counter + 1
    if status == "success" then
      say(string.format("ok %d - %s", counter, handler.successes[#handler.successes].name))
    elseif status == "pending" then
      say(skipline(handler.pendings[#handler.pendings]))
    elseif status == "failure" then
      failure(handler.failures[#handler.failures])
    elseif status == "error" then
      failure(handler.errors[#handler.errors])
    end
    return nil, true
  end

  handler.error = function(element)
    if element.descriptor ~= "it" then
      counter = counter + 1
      failure(handler.errors[#handler.errors])
    end
    return nil, true
  end

  busted.subscribe({"suite", "reset"}, handler.suiteReset)
  busted.subscribe({"suite", "end"}, handler.suiteEnd)
  busted.subscribe({"test", "end"}, handler.testEnd, {predicate = handler.cancelOnPending})
  busted.subscribe({"error"}, handler.error)
  return handler
end
