#!lua flags=allow-oom
-- Claim the report of a session's end for one event stream entry.
--
-- KEYS[1] the session's claim key. ARGV[1] the entry's id, ARGV[2] how long
-- the claim must last (ms).
--
-- Returns {holder, replaced}: holder is who holds the claim now, the entry's
-- own id when it was free (or its publisher's claim was already this entry's)
-- and anything else when another entry, or session_ng's own delete, has it;
-- replaced is 1 when the key held something that is no claim (written by
-- hand, a bad restore), which is replaced rather than let it stop the end.
--
-- allow-oom: on a full Redis the ends must still be reported; a claim is a
-- few bytes, and the sessions whose ends these are free far more.
local replaced = 0
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'none' and kind ~= 'string' then
  redis.call('DEL', KEYS[1])
  replaced = 1
end
local held = redis.call('GET', KEYS[1])
if not held then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {ARGV[1], replaced}
end
if held == ARGV[1] then
  -- Claimed first by a consumer that could not know how long it must last.
  redis.call('PEXPIRE', KEYS[1], ARGV[2], 'GT')
end
return {held, replaced}
