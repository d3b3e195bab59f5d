-- Delete one session, and take it out of its user's index.
--
-- KEYS[1] session hash, KEYS[2] shadow key, KEYS[3] (optional) the user index
-- the caller believes lists it. ARGV[1] session key.
--
-- Returns {existed (0/1), fields} with the hash as it was, so the caller can
-- see which user it belonged to (and fix another index if that differs) and
-- report the data that ended with it. Its bucket entry is left for the sweep,
-- which drops members whose session is gone.
local fields = redis.call('HGETALL', KEYS[1])
local removed = redis.call('DEL', KEYS[1], KEYS[2])
if KEYS[3] then redis.call('SREM', KEYS[3], ARGV[1]) end
if removed > 0 then removed = 1 end
return {removed, fields}
