-- Claim the report of a session's end for one event stream entry.
--
-- KEYS[1] the session's claim key. ARGV[1] the entry's id, ARGV[2] how long a
-- new claim lasts (ms).
--
-- Returns who holds the claim now: the entry's own id when it was free (its
-- publisher died before claiming it) or already held by this entry, anything
-- else when another entry, or session_ng's own delete, has it.
local held = redis.call('GET', KEYS[1])
if held then return held end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
