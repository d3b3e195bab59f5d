#!lua flags=allow-oom
-- allow-oom: it only frees memory (a claim it may write is a few bytes), so it
-- runs when Redis is full under noeviction: a logout still works.
-- Delete one session: take it out of its user's index and its expiration
-- bucket, and claim the report of its end.
--
-- KEYS[1] session hash, KEYS[2] shadow key, KEYS[3] the session's event claim,
-- then the optional keys ARGV[3] names, one letter each, in this order:
--   u  the user index (a hash) the caller believes lists it
--   b  the expiration bucket (a set) the caller believes it is filed under
-- ARGV[1] session key, ARGV[2] how long the claim lasts (ms), ARGV[3] layout.
--
-- The claim is taken before the keys go, so a worker that hears the "del"
-- notifications does not report this end a second time: the caller does.
-- Leaving the bucket matters as much: a member found gone when its minute
-- comes, with no claim, is reported as an expiry nobody saw.
--
-- Returns {claimed (0/1), fields} with the hash as it was, so the caller can
-- fix an index or bucket it did not know, and report the data that ended.
local fields = redis.call('HGETALL', KEYS[1])
local alive = redis.call('EXISTS', KEYS[2])
-- Only the caller of a live session's end reports it; if a worker claimed
-- it already (it expired, or was removed by hand), that stands.
local claimed = 0
if alive == 1 and redis.call('SET', KEYS[3], 'deleted', 'NX', 'PX', ARGV[2]) then claimed = 1 end
redis.call('DEL', KEYS[1], KEYS[2])
local k = 4
-- An index or bucket of the wrong type (written by something else) is left
-- as it is: the session is gone either way.
for letter in string.gmatch(ARGV[3], '.') do
  redis.pcall(letter == 'u' and 'HDEL' or 'SREM', KEYS[k], ARGV[1])
  k = k + 1
end
return {claimed, fields}
