-- Create or update one session: delta write, shadow key, bucket move, user
-- index and (for a key rotation) the move from the old key, atomically, in
-- one round trip. Field names: see "the session hash's layout" in
-- session_ng/store/records.py (c created, a accessed, i max_inactive,
-- e expires_at, u user, b bucket, r renewed; "." + name an attribute, or an
-- upper-case letter for Django's own; "," + n + field the chunks of a long one).
--
-- KEYS[1] session hash, KEYS[2] shadow key, then the optional keys that
-- ARGV[9] (the layout) names, one letter each, in this order:
--   b  expiration bucket to file the session under
--   x  expiration bucket it was filed under before (SREM)
--   o  user index (a hash: session key -> "") of the user who left this
--      session (HDEL)
--   u  user index of the session's logged-in user (HSET, TTL refresh)
--   r  two keys: hash and shadow key of the session this one replaces
--      (rotation: they are renamed to the new keys, which Redis announces
--      as rename_from/rename_to, not as the "del" of an end)
--   m  the import marker of a session imported from another engine
--      (create only): the save is refused ("exists") when the marker is
--      there, else it sets it; the session's life is at most the remaining
--      life it had in the old store, the ARGV after the deleted names
-- and, on Redis Cluster, where those keys live in other slots, two letters
-- that take no key:
--   B  file the session under ARGV[7] (the caller does the SADD elsewhere)
--   C  return {status, kept (0/1), life in ms or "never"} instead of the status
--      alone ("exists" and "gone" stay plain), so the caller
--      can do the bucket, index and rotation work in the other slots
-- ARGV: 1 now ms | 2 mode | 3 max_inactive s (-1 never)
--   | 4 expires_at ms or "" | 5 grace ms | 6 created ms or "" (now)
--   | 7 bucket minute or "" | 8 user op: "" unchanged, "-" logged out, "=<id>"
--   | 9 layout | 10 session key | 11 replaced session key or ""
--   | 12 "1" if this save sets the expiry (ARGV 3-4), "0" if it only carries
--     the values the caller loaded | 13 how long a bucket is kept past its
--     minute (ms) | 14 the renewal period in ms (RENEWAL_PERIOD) or "" for
--     the default, a hundredth of the idle timeout, at most 60 s
--   | 15 n_set, then n_set name/value pairs
--   | then n_del, then n_del names | then, with layout "m", the remaining
--     life in ms the session had in the store it is imported from
--
-- Modes: "create" (the key must be free), "update" (the session must be
-- alive; only the listed attributes change), "replace" (an update whose
-- caller never loaded the session, e.g. after clear(): the listed attributes
-- become the whole session and every other attribute field is removed).
--
-- Returns "ok", "exists" (create: the key is taken) or "gone" (update, or a
-- rotation: the session, or the one it replaces, was deleted or expired
-- meanwhile; nothing is written, so nothing is resurrected).
--
-- A bucket or user index of the wrong type (written by something else) never
-- fails the save: a bucket write is skipped (the sweep deletes that bucket
-- when its minute comes), an index is replaced by a hash listing this session
-- (so "sign out everywhere" still finds it). Then "ok" comes as a list,
-- {"ok", notes...} ({"ok", kept, life, notes...} with C), each note
-- "skipped <key>" or "replaced <key>", for the caller to log.
local hash, shadow = KEYS[1], KEYS[2]
local now = tonumber(ARGV[1])
local mode = ARGV[2]
local grace = tonumber(ARGV[5])
local session_key = ARGV[10]

-- Every hash write of this save is collected and sent as one HSET and one
-- HDEL (in chunks, so a session with thousands of attributes stays within
-- Lua's unpack() limit): fewer redis.call()s is most of a script's cost.
local to_set, to_delete = {}, {}
local function flush(command, list)
  for i = 1, #list, 4000 do
    redis.call(command, hash, unpack(list, i, math.min(i + 3999, #list)))
  end
end

local slot = {}
local remote_bucket, split = false, false
local k = 3
for letter in string.gmatch(ARGV[9], '.') do
  if letter == 'B' then
    remote_bucket = true
  elseif letter == 'C' then
    split = true
  else
    slot[letter] = KEYS[k]
    k = k + 1
    if letter == 'r' then
      slot['r2'] = KEYS[k]; k = k + 1
    end
  end
end

if mode == 'create' then
  if redis.call('EXISTS', hash) == 1 then return 'exists' end
  -- A rotation carries on the session it replaces, so that one must still be
  -- alive: deleted meanwhile (logout, revoked) or rotated already by a
  -- concurrent request, it is not brought back under a new key.
  if slot['r'] and redis.call('EXISTS', slot['r'], slot['r2']) < 2 then return 'gone' end
elseif redis.call('EXISTS', hash, shadow) < 2 then
  return 'gone'
end

-- An imported session is imported once: not again after it ended here.
if slot['m'] and redis.call('EXISTS', slot['m']) == 1 then return 'exists' end

-- A rotation moves the old session's keys to the new ones: no "del" for a
-- worker to take for an end, no claim to keep, and the fields below are
-- written as to a session that exists (stale ones removed).
local existing = mode ~= 'create'
if slot['r'] then
  redis.call('RENAME', slot['r'], hash)
  redis.call('RENAME', slot['r2'], shadow)
  existing = true
end

-- The expiry. A save that did not change it must not undo a concurrent
-- request's set_expiry(): when the stored values differ from what the caller
-- loaded, they win, and so does the bucket that request filed the session in.
local max_inactive_arg, expires_at_arg = ARGV[3], ARGV[4]
local keep_bucket = false
-- Whether the hash may hold an expires_at to remove (unknown: assume so).
local stored_expires_at = existing
if mode ~= 'create' and ARGV[12] ~= '1' then
  local stored = redis.call('HMGET', hash, 'i', 'e')
  local stored_mi, stored_ea = stored[1] or '', stored[2] or ''
  stored_expires_at = stored[2] ~= false
  if tonumber(stored_mi) ~= nil and (stored_ea == '' or tonumber(stored_ea) ~= nil)
      and (stored_mi ~= max_inactive_arg or stored_ea ~= expires_at_arg) then
    max_inactive_arg, expires_at_arg = stored_mi, stored_ea
    keep_bucket = true
  end
end

-- The attributes.
local pos = 15
local n_set = tonumber(ARGV[pos]); pos = pos + 1
if mode == 'replace' or slot['r'] then
  local keep = {}
  for i = pos, pos + 2 * n_set - 1, 2 do keep[ARGV[i]] = true end
  for _, name in ipairs(redis.call('HKEYS', hash)) do
    -- Attribute fields: ".name", Django's own as upper-case letters, and
    -- the chunks of long values, ",<n><field>".
    if string.find(name, '^[%.,A-Z]') and not keep[name] then
      to_delete[#to_delete + 1] = name
    end
  end
end
for i = pos, pos + 2 * n_set - 1 do to_set[#to_set + 1] = ARGV[i] end
pos = pos + 2 * n_set
local n_del = tonumber(ARGV[pos]); pos = pos + 1
for i = pos, pos + n_del - 1 do to_delete[#to_delete + 1] = ARGV[i] end
local import_life = slot['m'] and tonumber(ARGV[pos + n_del])

-- Writes to keys outside the session: a key of the wrong type is noted, not
-- an error (see the header).
local notes = {}
local function guarded(command, key, member)
  local reply = redis.pcall(command, key, member)
  if type(reply) == 'table' and reply.err then
    notes[#notes + 1] = 'skipped ' .. key
    return nil
  end
  return reply
end

-- The life: the shadow key lives exactly as long as the session, the hash
-- for the grace period longer so that the expired event can still read it.
-- An idle timeout runs from now ("accessed") plus one renewal period: the
-- period a read may go without renewing it (lazy renewal, see touch.lua).
local max_inactive = tonumber(max_inactive_arg)
local accessed = ARGV[1]
local life
if expires_at_arg ~= '' then
  life = tonumber(expires_at_arg) - now
elseif max_inactive >= 0 then
  life = max_inactive * 1000 + (tonumber(ARGV[14]) or math.min(60000, max_inactive * 10))
end
if import_life and life and import_life < life then
  -- Reads judge a session by its fields: they must say it ends when the old
  -- store said, as if its idle timer (or expiry date) had started earlier.
  if expires_at_arg ~= '' then
    expires_at_arg = string.format('%d', now + import_life)
  else
    accessed = string.format('%d', now + import_life - life)
  end
  life = import_life
end

-- The metadata.
local function put(name, value)
  to_set[#to_set + 1] = name
  to_set[#to_set + 1] = value
end
put('a', accessed)
put('i', max_inactive_arg)
if mode == 'create' then
  put('c', ARGV[6] ~= '' and ARGV[6] or ARGV[1])
end
if expires_at_arg ~= '' then
  put('e', expires_at_arg)
elseif stored_expires_at then
  to_delete[#to_delete + 1] = 'e'
end
local user_op = ARGV[8]
if user_op == '-' then
  if existing then to_delete[#to_delete + 1] = 'u' end
elseif user_op ~= '' then
  put('u', string.sub(user_op, 2))
end

-- On a rotation the replaced key is the one that leaves its bucket and index.
local leaving = session_key
if slot['r'] then leaving = ARGV[11] end

-- The expiration bucket: filed under the minute its life ends, rounded up.
-- With keep_bucket, the request that set the stored expiry filed it.
if not keep_bucket then
  if slot['x'] then guarded('SREM', slot['x'], leaving) end
  if slot['b'] then
    if guarded('SADD', slot['b'], session_key) then
      redis.call('PEXPIREAT', slot['b'], tonumber(ARGV[7]) * 60000 + tonumber(ARGV[13]))
    end
    put('b', ARGV[7])
  elseif remote_bucket then
    put('b', ARGV[7])
  elseif life == nil and existing then
    to_delete[#to_delete + 1] = 'b'
  end
end

-- The hash itself; HDEL first, as "replace" may list a name that is also set.
if #to_delete > 0 then flush('HDEL', to_delete) end
flush('HSET', to_set)

-- Its TTLs, now that it exists.
if life == nil then
  redis.call('SET', shadow, '')
  redis.call('PERSIST', hash)
elseif life > 0 then
  -- string.format: a Lua number argument would be printed as a float.
  redis.call('SET', shadow, '', 'PX', string.format('%d', life))
  redis.call('PEXPIRE', hash, string.format('%d', life + grace))
else
  -- An expiry date already past: the session ends now. The shadow key is
  -- let expire (not deleted) so that this end is reported as an expiry.
  redis.call('SET', shadow, '', 'PX', 1)
  redis.call('PEXPIRE', hash, grace)
end

if slot['m'] then
  redis.call('SET', slot['m'], '', 'PX', string.format('%d', math.max(import_life or 0, 0) + grace))
end

-- The user index: its TTL covers the longest-lived session it lists.
if slot['o'] then guarded('HDEL', slot['o'], leaving) end
if slot['r'] and slot['u'] then guarded('HDEL', slot['u'], leaving) end
if slot['u'] then
  local index = slot['u']
  local added = redis.pcall('HSET', index, session_key, '')
  if type(added) == 'table' and added.err then
    redis.call('DEL', index)
    added = redis.call('HSET', index, session_key, '')
    notes[#notes + 1] = 'replaced ' .. index
  end
  local fresh = added == 1 and redis.call('HLEN', index) == 1
  if life == nil then
    redis.call('PERSIST', index)
  else
    local ttl = redis.call('PTTL', index)
    local want = math.max(life, 0) + grace
    if (ttl == -1 and fresh) or (ttl >= 0 and ttl < want) then
      redis.call('PEXPIRE', index, want)
    end
  end
end
if split then
  local reply = {'ok', keep_bucket and 1 or 0, life == nil and 'never' or tostring(life)}
  for _, note in ipairs(notes) do reply[#reply + 1] = note end
  return reply
end
if #notes > 0 then
  table.insert(notes, 1, 'ok')
  return notes
end
return 'ok'
