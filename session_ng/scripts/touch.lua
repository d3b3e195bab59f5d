#!lua flags=allow-oom
-- allow-oom: a renewal rewrites an integer field in place and moves TTLs, so
-- it takes no memory, and it keeps working when Redis is full under
-- noeviction: signed-in users stay signed in while they are active.
-- Renew sessions' idle timers without reading or rewriting their data: the
-- lazy renewal of a read, a websocket's refresh, save() of an unchanged
-- session. ("accessed" below is the hash field "a".)
--
-- KEYS: for each session, its hash then its shadow key (so 2 per session; on
-- Redis Cluster one session per call, as each session has its own slot).
-- ARGV[1] now (epoch ms), ARGV[2] grace (ms), ARGV[3] the renewal period in
-- ms (RENEWAL_PERIOD), or "" for the default: a hundredth of the idle
-- timeout, at most 60 s. ARGV[4] "1" renews every live session whether or
-- not its renewal is due (a websocket's refresh), "0" only those due.
-- Returns, per session in order: 1 if it is alive, 0 if it has ended, -1 if
-- it is corrupt: a key of the wrong type, or metadata the engine could not
-- read (treated as ended, as a load would, and left unwritten; the other
-- sessions of the call are still touched).
--
-- A live session is renewed only when its last renewal ("accessed") is a
-- period old or more: "accessed" becomes now, and the shadow key lives the
-- idle timeout plus one period from now (the hash the grace period longer),
-- so a session never ends before its idle timeout however the reads between
-- renewals fall. An absolute expiry is never extended; -1 never expires.
local now = tonumber(ARGV[1])
local grace = tonumber(ARGV[2])
local fixed_period = tonumber(ARGV[3])

-- An integer field as the engine writes it: digits with maybe a minus sign,
-- few enough for Lua to compute with exactly and to print back as digits
-- (tonumber alone takes "inf", "1e300", "0x10" and "1.5"). The engine's
-- record parser applies the same rule.
local INT = '^%-?%d+$'
-- A field as a number; nil when absent or not an integer.
local function int(value)
  if value and #value <= 15 and string.find(value, INT) then return tonumber(value) end
  return nil
end
-- A field present but not an integer (checked, never computed with).
local function bad(value)
  return value and not (#value <= 15 and string.find(value, INT))
end

local function touch(hash, shadow)
  if redis.call('EXISTS', shadow) == 0 then return 0 end
  -- max_inactive, expires_at, accessed, created, bucket, renewed (the
  -- one-letter names of store/records.py's hash layout).
  local meta = redis.pcall('HMGET', hash, 'i', 'e', 'a', 'c', 'b', 'r')
  if meta.err then return -1 end
  local max_inactive, expires_at, accessed = int(meta[1]), int(meta[2]), int(meta[3])
  if not meta[1] and not meta[3] and not meta[4] and redis.call('EXISTS', hash) == 0 then
    return 0  -- the shadow key outlived the hash: ended
  end
  -- Metadata the engine would not read: corrupt, left as it is (a touch must
  -- not make a session that loads treat as absent readable again).
  if max_inactive == nil or accessed == nil or not meta[4] or bad(meta[4])
     or (meta[2] and expires_at == nil) or bad(meta[5]) or bad(meta[6])
     or max_inactive > 10000000000 then
    return -1
  end
  -- Over by the clock, though Redis has not expired the shadow key yet.
  if expires_at ~= nil then
    -- An absolute expiry is never extended, and nothing is renewed.
    if expires_at <= now then return 0 end
    return 1
  end
  if max_inactive < 0 then return 1 end
  local period = fixed_period or math.min(60000, max_inactive * 10)
  if accessed + max_inactive * 1000 + period <= now then return 0 end
  if now - accessed < period and ARGV[4] ~= '1' then return 1 end  -- recent enough
  redis.call('HSET', hash, 'a', ARGV[1])
  -- string.format: a Lua number argument would be printed as a float.
  local life = max_inactive * 1000 + period
  redis.call('PEXPIRE', shadow, string.format('%d', life))
  redis.call('PEXPIRE', hash, string.format('%d', life + grace))
  return 1
end

local alive = {}
for i = 1, #KEYS, 2 do
  alive[#alive + 1] = touch(KEYS[i], KEYS[i + 1])
end
return alive
