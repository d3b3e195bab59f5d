#!lua flags=allow-oom
-- allow-oom: it only frees memory (a claim it may write is a few bytes), so it
-- runs when Redis is full under noeviction: a logout still works.
-- Let go of the worker lock, if this worker holds it.
--
-- KEYS[1] the lock. ARGV[1] this worker's id. Returns 1 if it was released.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
