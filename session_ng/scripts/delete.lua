-- Delete one session, and take it out of its user's index.
--
-- KEYS[1] session hash, KEYS[2] shadow key, KEYS[3] the session's event claim,
-- KEYS[4] (optional) the user index the caller believes lists it.
-- ARGV[1] session key, ARGV[2] how long the claim lasts (ms).
--
-- The claim is taken before the keys go, so a worker that hears the "del"
-- notifications does not report this end a second time: the caller does.
--
-- Returns {existed (0/1), fields} with the hash as it was, so the caller can
-- see which user it belonged to (and fix another index if that differs) and
-- report the data that ended with it. Its bucket entry is left for the sweep,
-- which drops members whose session is gone.
local fields = redis.call('HGETALL', KEYS[1])
local alive = redis.call('EXISTS', KEYS[2])
-- Only the caller of a live session's end reports it; if a worker claimed
-- it already (it expired, or was removed by hand), that stands.
local claimed = 0
if alive == 1 and redis.call('SET', KEYS[3], 'deleted', 'NX', 'PX', ARGV[2]) then claimed = 1 end
redis.call('DEL', KEYS[1], KEYS[2])
if KEYS[4] then redis.call('SREM', KEYS[4], ARGV[1]) end
return {claimed, fields}
