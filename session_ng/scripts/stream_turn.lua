#!lua flags=allow-oom
-- One consumer's turn between two entries of the event stream: acknowledge
-- the one it sent, and make sure the next is still its own before it sends it.
--
-- KEYS[1] the stream. ARGV[1] the group, ARGV[2] the consumer, ARGV[3] the id
-- to acknowledge ("" for none), ARGV[4] the id it is about to send ("" for
-- none).
--
-- A batch is read at once and sent one entry at a time, so its last entries
-- wait; another consumer may take them over (XAUTOCLAIM) once they waited
-- --redeliver-after. Returns 1 when the next entry is still this consumer's
-- (its idle time is reset, so nobody takes it over while it is sent), 0 when
-- it is not (someone else sends it now).
if ARGV[3] ~= '' then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
end
if ARGV[4] == '' then return 1 end
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[4], ARGV[4], 1, ARGV[2])
if #pending == 0 then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[4], 'JUSTID')
return 1
