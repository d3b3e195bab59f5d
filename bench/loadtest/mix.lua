-- The request mix of `make loadtest`, for wrk (https://github.com/wg/wrk).
--
-- wrk gives a script one Lua state per thread, shared by all the connections
-- of that thread, and tells neither request() nor response() which connection
-- they are for. So a "browser" here is not tied to a connection: request()
-- takes an idle browser (making one when none is idle, which happens once per
-- connection at the start), tags the request with the browser's id, and
-- response() finds the browser again by the X-Loadtest-Browser header that
-- bench.loadtest.middleware echoes. Each connection has at most one request in
-- flight, so there are as many browsers as connections and none ever has two
-- requests in flight. (Should a connection fail before its answer, wrk counts
-- the error and sends a new request; the browser that waited for the answer
-- stays aside, its request still marked in flight, and a new one is made.)
--
-- Every browser keeps its own cookie jar: the sessionid cookie of the last
-- response that set it. wrk hands over response headers as a table with one
-- value per name, so of several Set-Cookie headers (login also sets
-- csrftoken) only one survives; the middleware therefore also copies the
-- sessionid cookie's value into X-Loadtest-Session, which is what is read here.
--
-- A browser logs in (alias 0), logs a second account in under ?_s=1, then
-- sends a random mix of reads, writes and re-logins, in either alias. It
-- counts the writes acknowledged for each of its sessions and checks every
-- answer against that count: a read must return it, a write one more, a
-- login (which rotates the session key) the count it kept.
--
-- Arguments (after `--`): aliases ("1": ?_s=1 is its own session, as with
-- session_ng's middleware; "0": the parameter is ignored and both aliases are
-- one session, as with Django's), users, threads, duration in seconds, and
-- the views' URL prefix ("/lt/" for the sync views, "/lt/async/" for the
-- async ones).
-- done() writes the figures and every browser's tallies as JSON to the file
-- named by $LOADTEST_REPORT.

local PASSWORD = "loadtest-password"
-- Shares of the mix once a browser is logged in to both aliases.
local ALIAS_SHARE = 0.3   -- requests under ?_s=1
local LOGIN_SHARE = 0.05  -- logins again (key rotation)
local WRITE_SHARE = 0.35  -- counter increments; the rest are reads
-- No logins in the run's last second: a login still in flight when wrk
-- stops may have rotated the key without the browser learning the new one.
local QUIET_SECONDS = 1
-- Latency histogram buckets, in milliseconds.
local BUCKET_MS = 0.1

-- A monotonic clock in seconds: wrk runs LuaJIT, whose FFI can call
-- clock_gettime (os.time() counts whole seconds).
local now = os.time
do
  local ok, ffi = pcall(require, "ffi")
  if ok then
    ffi.cdef([[
      typedef struct { long tv_sec; long tv_nsec; } loadtest_timespec;
      int clock_gettime(int clock_id, loadtest_timespec *tp);
    ]])
    local ts = ffi.new("loadtest_timespec")
    local CLOCK_MONOTONIC = 1
    now = function()
      ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
      return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
    end
  end
end

local threads = {}

function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

function init(args)
  aliases = args[1] == "1"
  users = tonumber(args[2])
  thread_count = tonumber(args[3])
  quiet_at = now() + tonumber(args[4]) - QUIET_SECONDS
  views = args[5]
  math.randomseed(1000 + thread_index)
  verifying = thread_index == 0
  browsers = {}
  rows = {}
  idle = {}
  made = 0
  unknown = 0
  counts = { read = 0, write = 0, login = 0, alias = 0, failed = 0 }
  -- Latency of every answered request, by kind (bucket index -> count).
  -- wrk keeps a histogram too, but not by kind, and it cannot be handed over
  -- in one piece to merge the runs of one engine. (Three flat tables: see
  -- row() on nesting.)
  latency_read, latency_write, latency_login = {}, {}, {}
end

local function json(value)
  local t = type(value)
  if t == "table" then
    local parts = {}
    for k, v in pairs(value) do
      table.insert(parts, json(tostring(k)) .. ":" .. json(v))
    end
    return "{" .. table.concat(parts, ",") .. "}"
  elseif t == "string" then
    return '"' .. value:gsub('[%c"\\]', function(c)
      return string.format("\\u%04x", c:byte())
    end) .. '"'
  elseif t == "number" then
    return string.format("%.17g", value)
  elseif t == "boolean" then
    return tostring(value)
  end
  return "null"
end

-- What done() reports for a browser: wrk copies a thread's tables to the main
-- state badly once they nest (numeric keys below the first level crash it),
-- so each browser is kept as one JSON string, rewritten at each response.
local function row(b)
  return json({
    cookie = b.cookie or "",
    acked = { ["0"] = b.acked[0], ["1"] = b.acked[1] },
    -- What was in flight when wrk stopped, if anything.
    pending = b.kind or "",
    pending_session = b.kind and tostring(b.session) or "",
    mismatches = b.mismatches,
    failed = b.failed,
  })
end

local function new_browser()
  local number = thread_index + thread_count * made
  made = made + 1
  local b = {
    id = tostring(number),
    user = number % users,
    logged = { [0] = false, [1] = false },
    acked = { [0] = 0 },
    mismatches = 0,
    failed = 0,
  }
  if aliases then
    b.acked[1] = 0
  end
  browsers[b.id] = b
  rows[b.id] = row(b)
  return b
end

local function pick(b)
  if not b.logged[0] then
    return "login", 0
  end
  if not b.logged[1] then
    return "login", 1
  end
  local alias = math.random() < ALIAS_SHARE and 1 or 0
  local r = math.random()
  if r < LOGIN_SHARE and now() < quiet_at then
    return "login", alias
  end
  if r < LOGIN_SHARE + WRITE_SHARE then
    return "write", alias
  end
  return "read", alias
end

function request()
  if verifying then
    -- wrk calls the first thread's request() once before the run, to count
    -- the requests it returns (its pipeline depth), and never sends that one.
    verifying = false
    return wrk.format("GET", "/lt/ping/")
  end
  local b = table.remove(idle)
  if b == nil then
    b = new_browser()
  end
  local kind, alias = pick(b)
  -- Without aliases both are the one default session.
  b.kind, b.alias, b.session = kind, alias, aliases and alias or 0
  rows[b.id] = row(b)
  b.sent = now()
  local headers = { ["X-Loadtest-Browser"] = b.id }
  if b.cookie ~= nil then
    headers["Cookie"] = "sessionid=" .. b.cookie
  end
  local query = alias == 1 and "?_s=1" or ""
  if kind == "read" then
    return wrk.format("GET", views .. "read/" .. query, headers, nil)
  end
  headers["Content-Type"] = "application/x-www-form-urlencoded"
  local body = ""
  if kind == "login" then
    -- The second account, under ?_s=1. Without aliases, logging another user
    -- in would flush the one session, so the first account logs in again.
    local suffix = (alias == 1 and aliases) and "b" or ""
    body = "username=lt" .. b.user .. suffix .. "&password=" .. PASSWORD
  end
  return wrk.format("POST", views .. kind .. "/" .. query, headers, body)
end

-- A response header by name. wrk keys the table by the name as sent, and
-- header names are case-insensitive: gunicorn sends Django's spelling,
-- uvicorn sends every name in lower case.
local function header(headers, name)
  local value = headers[name]
  if value == nil then
    value = headers[name:lower()]
  end
  return value
end

function response(status, headers, body)
  local id = header(headers, "X-Loadtest-Browser")
  local b = id and browsers[id]
  if not b or b.kind == nil then
    -- Untagged: the ping above, should a wrk send it; or an answer that did
    -- not come through Django (wrk counts it in its errors if it failed).
    unknown = unknown + 1
    return
  end
  local kind, s = b.kind, b.session
  b.kind = nil
  local bucket = math.floor((now() - b.sent) * 1000 / BUCKET_MS)
  local histogram = _G["latency_" .. kind]
  histogram[bucket] = (histogram[bucket] or 0) + 1
  local cookie = header(headers, "X-Loadtest-Session")
  if cookie ~= nil then
    b.cookie = (cookie ~= "" and cookie ~= '""') and cookie or nil
  end
  counts[kind] = counts[kind] + 1
  if b.alias == 1 then
    counts.alias = counts.alias + 1
  end
  if status ~= 200 then
    -- Not acknowledged; a write may or may not have been applied.
    b.failed = b.failed + 1
    counts.failed = counts.failed + 1
  else
    local value = tonumber(body)
    if kind == "write" then
      b.acked[s] = b.acked[s] + 1
    elseif kind == "login" then
      b.logged[b.alias] = true
    end
    if value ~= b.acked[s] then
      b.mismatches = b.mismatches + 1
    end
  end
  rows[b.id] = row(b)
  table.insert(idle, b)
end

function done(summary)
  local parts = {}
  local unknown_total = 0
  local totals = {}
  local histograms = { read = {}, write = {}, login = {} }
  for _, thread in ipairs(threads) do
    for kind, histogram in pairs(histograms) do
      for bucket, count in pairs(thread:get("latency_" .. kind)) do
        histogram[bucket] = (histogram[bucket] or 0) + count
      end
    end
    unknown_total = unknown_total + thread:get("unknown")
    for k, v in pairs(thread:get("counts")) do
      totals[k] = (totals[k] or 0) + v
    end
    for id, text in pairs(thread:get("rows")) do
      table.insert(parts, json(id) .. ":" .. text)
    end
  end
  local report = json({
    duration_us = summary.duration,
    requests = summary.requests,
    errors = summary.errors,
    bucket_ms = BUCKET_MS,
    latency = histograms,
    unknown = unknown_total,
    counts = totals,
  })
  -- Splice the browsers in (their rows are JSON already).
  report = report:sub(1, -2) .. ',"browsers":{' .. table.concat(parts, ",") .. "}}"
  local file = assert(io.open(assert(os.getenv("LOADTEST_REPORT")), "w"))
  file:write(report)
  file:close()
end
