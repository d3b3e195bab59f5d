#!lua flags=allow-oom
-- allow-oom: it only frees memory (a claim it may write is a few bytes), so it
-- runs when Redis is full under noeviction: a logout still works.
-- Remove the old key of a rotated session (Redis Cluster: the new key lives
-- in another slot, so save.lua cannot do it in the same script).
--
-- KEYS[1] old hash, KEYS[2] old shadow key, KEYS[3] its event claim.
-- ARGV[1] how long the "rotated" claim lasts (ms).
-- The claim goes first, so a worker that hears the "del" notifications knows
-- this was no end and reports nothing.
--
-- Returns 1, or 0 (and writes nothing) when the session is no longer alive:
-- deleted meanwhile, or retired already by a concurrent rotation. Only one of
-- two rotations of one session wins; the caller undoes the loser's new key.
if redis.call('EXISTS', KEYS[1], KEYS[2]) < 2 then return 0 end
redis.call('SET', KEYS[3], 'rotated', 'PX', ARGV[1])
redis.call('DEL', KEYS[1], KEYS[2])
return 1
