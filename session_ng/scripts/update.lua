-- The lean save: write a live session's changed attributes, and nothing else.
--
-- For an update that changes neither the expiry, nor the user, nor the key,
-- and comes within the renewal period (so the idle timer needs no renewal):
-- the TTLs, the bucket and the user index stay as they are, and only the
-- hash's attribute fields are written. save.lua does everything else.
--
-- KEYS[1] session hash, KEYS[2] shadow key.
-- ARGV: n_set, then n_set name/value pairs, then n_del, then n_del names.
-- Returns "ok", or "gone" (and writes nothing) when the session was deleted
-- or has expired meanwhile: nothing is resurrected.
if redis.call('EXISTS', KEYS[1], KEYS[2]) < 2 then return 'gone' end
local n_set = tonumber(ARGV[1])
local n_del = tonumber(ARGV[2 + 2 * n_set])
-- In chunks, so that thousands of attributes stay within unpack()'s limit.
for i = 2 + 2 * n_set + 1, 2 + 2 * n_set + n_del, 4000 do
  redis.call('HDEL', KEYS[1], unpack(ARGV, i, math.min(i + 3999, 2 + 2 * n_set + n_del)))
end
for i = 2, 1 + 2 * n_set, 4000 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 3999, 1 + 2 * n_set)))
end
return 'ok'
