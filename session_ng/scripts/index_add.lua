-- List a session in its user's index (Redis Cluster: the index lives in
-- another slot than the session, so save.lua cannot do it; same rule).
--
-- KEYS[1] user index. ARGV[1] session key, ARGV[2] the session's life in ms
-- or "never", ARGV[3] grace ms.
-- The index's TTL covers the longest-lived session it lists.
-- The index is a hash: session key -> "" (a small hash takes half the
-- memory of a small set of strings on Redis before 7.2).
-- An index of the wrong type (written by something else) is replaced by a
-- hash listing this session, so "sign out everywhere" still finds it; the
-- reply is then 2, for the caller to log.
local index = KEYS[1]
local added, replaced = redis.pcall('HSET', index, ARGV[1], ''), false
if type(added) == 'table' and added.err then
  redis.call('DEL', index)
  added, replaced = redis.call('HSET', index, ARGV[1], ''), true
end
local fresh = added == 1 and redis.call('HLEN', index) == 1
local reply = replaced and 2 or 1
if ARGV[2] == 'never' then
  redis.call('PERSIST', index)
  return reply
end
local ttl = redis.call('PTTL', index)
local want = math.max(tonumber(ARGV[2]), 0) + tonumber(ARGV[3])
if (ttl == -1 and fresh) or (ttl >= 0 and ttl < want) then
  redis.call('PEXPIRE', index, want)
end
return reply
