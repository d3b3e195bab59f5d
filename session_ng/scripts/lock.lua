-- Take or keep the worker lock.
--
-- KEYS[1] the lock. ARGV[1] this worker's id, ARGV[2] how long it lasts (ms).
-- Returns 1 when this worker holds the lock now (taken, or renewed), else 0.
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
