-- Load one session and, when asked, slide its idle timer: one round trip.
--
-- KEYS[1] session hash, KEYS[2] shadow key
-- ARGV[1] now (epoch ms), ARGV[2] "1" to refresh the idle timer, ARGV[3] grace (ms)
--
-- Returns nil when the session does not exist or has expired (its hash may
-- still be in the grace period, kept for the expired event), {"corrupt", fields}
-- when the metadata cannot be read (nothing is written then), else
-- {"ok", fields} with fields as HGETALL gives them, "accessed" already updated.
-- Never creates anything: a load of an unknown key writes no key.
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then return nil end
if redis.call('EXISTS', KEYS[2]) == 0 then return nil end

-- An integer field as the engine writes it: digits with maybe a minus sign,
-- few enough for Lua to compute with exactly and to print back as digits
-- (tonumber alone takes "inf", "1e300", "0x10" and "1.5").
local function is_int(value)
  return #value <= 15 and string.find(value, '^%-?%d+$') ~= nil
end

local now = tonumber(ARGV[1])
local accessed, max_inactive, expires_at, accessed_at
local malformed, created = false, false
for i = 1, #fields, 2 do
  local name, value = fields[i], fields[i + 1]
  -- Only the fields this script computes with are turned into numbers.
  if name == 'accessed' then
    if is_int(value) then accessed = tonumber(value) end
    accessed_at = i + 1
  elseif name == 'max_inactive' then
    if is_int(value) then max_inactive = value end
  elseif name == 'created' then
    created = is_int(value)
  elseif name == 'expires_at' or name == 'bucket' or name == 'renewed' then
    if not is_int(value) then malformed = true
    elseif name == 'expires_at' then expires_at = tonumber(value) end
  end
end
-- Unreadable metadata: report it and write nothing (no TTL is slid). An idle
-- timeout past 10^10 s (centuries) is one no save writes.
local idle = max_inactive and tonumber(max_inactive)
if malformed or accessed == nil or idle == nil or not created or idle > 10000000000 then
  return {'corrupt', fields}
end

-- Redis expires the shadow key lazily to the millisecond, but check the clock
-- ourselves too so a session is never served past its end.
if expires_at ~= nil then
  if expires_at <= now then return nil end
elseif idle >= 0 and accessed + idle * 1000 <= now then
  return nil
end

if ARGV[2] == '1' then
  redis.call('HSET', KEYS[1], 'accessed', ARGV[1])
  fields[accessed_at] = ARGV[1]
  -- An absolute expiry (expires_at) is never extended; -1 never expires.
  if expires_at == nil and idle >= 0 then
    -- The life is max_inactive seconds: the stored digits are EXPIRE's
    -- argument as they are (a Lua number would be printed as a float first).
    redis.call('EXPIRE', KEYS[2], max_inactive)
    redis.call('PEXPIRE', KEYS[1], string.format('%d', idle * 1000 + tonumber(ARGV[3])))
  end
end
return {'ok', fields}
