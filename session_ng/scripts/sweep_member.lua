-- Look at one member of a due expiration bucket.
--
-- KEYS[1] session hash, KEYS[2] shadow key. ARGV[1] now ms.
--
-- Touching the shadow key makes Redis expire it now if its time has come, so
-- its "expired" keyspace event fires without waiting for Redis's own cycle.
-- Returns
--   {"alive", minute, user}  still running (its idle timer slid since it was
--                            filed); minute is the bucket it belongs in now,
--                            recorded in the hash, "" if it never expires
--   {"expired", fields}      over; fields is the hash kept for the grace period
--   {"gone"}                 deleted, or expired and past the grace period
local pttl = redis.call('PTTL', KEYS[2])
if pttl == -2 then
  local fields = redis.call('HGETALL', KEYS[1])
  if #fields == 0 then return {'gone'} end
  return {'expired', fields}
end
local user = redis.call('HGET', KEYS[1], 'u') or ''  -- the user field
if redis.call('EXISTS', KEYS[1]) == 0 then return {'gone'} end
if pttl == -1 then
  redis.call('HDEL', KEYS[1], 'b')  -- the bucket field
  return {'alive', '', user}
end
local minute = math.ceil((tonumber(ARGV[1]) + pttl) / 60000)
redis.call('HSET', KEYS[1], 'b', minute)
return {'alive', tostring(minute), user}
