-- Keep sessions alive without reading or rewriting them (websocket messages).
--
-- KEYS: for each session, its hash then its shadow key (so 2 per session; on
-- Redis Cluster one session per call, as each session has its own slot).
-- ARGV[1] now (epoch ms), ARGV[2] grace (ms).
-- Returns, per session in order: 1 if it is alive (its idle timer slid, unless
-- its expiry is absolute or it never expires), 0 if it has ended, -1 if a key
-- has the wrong type (corrupt: treated as ended, and the other sessions of
-- the call are still touched).
local now = tonumber(ARGV[1])
local grace = tonumber(ARGV[2])

local function touch(hash, shadow)
  if redis.call('EXISTS', shadow) == 0 then return 0 end
  local meta = redis.pcall('HMGET', hash, 'max_inactive', 'expires_at')
  if meta.err then return -1 end
  local max_inactive = tonumber(meta[1])
  if max_inactive == nil then return 0 end
  if meta[2] then
    -- An absolute expiry is never extended.
    if tonumber(meta[2]) == nil or tonumber(meta[2]) <= now then return 0 end
    redis.call('HSET', hash, 'accessed', ARGV[1])
    return 1
  end
  redis.call('HSET', hash, 'accessed', ARGV[1])
  if max_inactive >= 0 then
    local life = max_inactive * 1000
    redis.call('PEXPIRE', shadow, life)
    redis.call('PEXPIRE', hash, life + grace)
  end
  return 1
end

local alive = {}
for i = 1, #KEYS, 2 do
  alive[#alive + 1] = touch(KEYS[i], KEYS[i + 1])
end
return alive
