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
local function int(value)
  if #value > 15 or not string.match(value, '^%-?%d+$') then return nil end
  return tonumber(value)
end

local now = tonumber(ARGV[1])
local accessed, max_inactive, expires_at, created, accessed_at
local malformed = false
for i = 1, #fields, 2 do
  local name, value = fields[i], fields[i + 1]
  if name == 'accessed' then accessed = int(value); accessed_at = i + 1
  elseif name == 'max_inactive' then max_inactive = int(value)
  elseif name == 'created' then created = int(value)
  elseif name == 'expires_at' or name == 'bucket' or name == 'renewed' then
    if int(value) == nil then malformed = true end
    if name == 'expires_at' then expires_at = int(value) end
  end
end
-- Unreadable metadata: report it and write nothing (no TTL is slid). An idle
-- timeout past 10^10 s (centuries) is one no save writes.
if malformed or accessed == nil or max_inactive == nil or created == nil
   or max_inactive > 10000000000 then
  return {'corrupt', fields}
end

-- Redis expires the shadow key lazily to the millisecond, but check the clock
-- ourselves too so a session is never served past its end.
if expires_at ~= nil then
  if expires_at <= now then return nil end
elseif max_inactive >= 0 and accessed + max_inactive * 1000 <= now then
  return nil
end

if ARGV[2] == '1' then
  redis.call('HSET', KEYS[1], 'accessed', ARGV[1])
  fields[accessed_at] = ARGV[1]
  -- An absolute expiry (expires_at) is never extended; -1 never expires.
  if expires_at == nil and max_inactive >= 0 then
    local life = max_inactive * 1000
    redis.call('PEXPIRE', KEYS[2], life)
    redis.call('PEXPIRE', KEYS[1], life + tonumber(ARGV[3]))
  end
end
return {'ok', fields}
