-- Remove a consumer from the event stream's group if it has nothing pending.
--
-- KEYS[1] the stream. ARGV[1] the group, ARGV[2] the consumer.
--
-- In one script, so that a consumer that reads entries between the caller's
-- look (XINFO CONSUMERS) and this removal keeps them: removing a consumer
-- drops its pending entries, which would then never be sent.
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #pending > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
