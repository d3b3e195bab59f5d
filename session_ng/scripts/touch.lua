-- Keep sessions alive without reading or rewriting them (websocket messages).
--
-- KEYS: for each session, its hash then its shadow key (so 2 per session; on
-- Redis Cluster one session per call, as each session has its own slot).
-- ARGV[1] now (epoch ms), ARGV[2] grace (ms).
-- Returns, per session in order: 1 if it is alive (its idle timer slid, unless
-- its expiry is absolute or it never expires), 0 if it has ended, -1 if it is
-- corrupt: a key of the wrong type, or metadata load.lua could not read
-- (treated as ended, as a load would, and left unwritten; the other sessions
-- of the call are still touched).
local now = tonumber(ARGV[1])
local grace = tonumber(ARGV[2])

-- The integer check of load.lua (see there), inline in both helpers: a
-- shared is_int() costs a Lua call per field, about 2% of a touch.
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
  local meta = redis.pcall(
    'HMGET', hash, 'max_inactive', 'expires_at', 'accessed', 'created', 'bucket', 'renewed')
  if meta.err then return -1 end
  local max_inactive, expires_at, accessed = int(meta[1]), int(meta[2]), int(meta[3])
  if not meta[1] and not meta[3] and not meta[4] and redis.call('EXISTS', hash) == 0 then
    return 0  -- the shadow key outlived the hash: ended
  end
  -- Metadata that load.lua would not read: corrupt, left as it is (a touch
  -- must not make a session that loads treat as absent readable again).
  if max_inactive == nil or accessed == nil or not meta[4] or bad(meta[4])
     or (meta[2] and expires_at == nil) or bad(meta[5]) or bad(meta[6])
     or max_inactive > 10000000000 then
    return -1
  end
  -- Over by the clock, though Redis has not expired the shadow key yet.
  if expires_at ~= nil then
    if expires_at <= now then return 0 end
    -- An absolute expiry is never extended.
    redis.call('HSET', hash, 'accessed', ARGV[1])
    return 1
  end
  if max_inactive >= 0 and accessed + max_inactive * 1000 <= now then return 0 end
  redis.call('HSET', hash, 'accessed', ARGV[1])
  if max_inactive >= 0 then
    -- As in load.lua: the stored digits as they are, and no float printing.
    redis.call('EXPIRE', shadow, meta[1])
    redis.call('PEXPIRE', hash, string.format('%d', max_inactive * 1000 + grace))
  end
  return 1
end

local alive = {}
for i = 1, #KEYS, 2 do
  alive[#alive + 1] = touch(KEYS[i], KEYS[i + 1])
end
return alive
