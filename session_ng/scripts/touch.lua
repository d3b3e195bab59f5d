-- Keep a session alive without reading or rewriting it (a websocket message).
--
-- KEYS[1] session hash, KEYS[2] shadow key. ARGV[1] now (epoch ms), ARGV[2] grace (ms).
-- Returns 1 if the session is alive (its idle timer slid, unless its expiry
-- is absolute or it never expires), 0 if it has ended.
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
local meta = redis.call('HMGET', KEYS[1], 'max_inactive', 'expires_at')
local max_inactive = tonumber(meta[1])
if max_inactive == nil then return 0 end
local now = tonumber(ARGV[1])
if meta[2] then
  -- An absolute expiry is never extended.
  if tonumber(meta[2]) == nil or tonumber(meta[2]) <= now then return 0 end
  redis.call('HSET', KEYS[1], 'accessed', ARGV[1])
  return 1
end
redis.call('HSET', KEYS[1], 'accessed', ARGV[1])
if max_inactive >= 0 then
  local life = max_inactive * 1000
  redis.call('PEXPIRE', KEYS[2], life)
  redis.call('PEXPIRE', KEYS[1], life + tonumber(ARGV[2]))
end
return 1
