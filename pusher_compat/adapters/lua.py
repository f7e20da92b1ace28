"""The Redis adapter's scripts: each state change of the cluster is one atomic script, so two
nodes can never both decide a member is new, a channel occupied or a user online.

Conventions shared with :mod:`pusher_compat.adapters.redis`:

* per app, ``{base}:ch:{channel}`` maps node id -> that node's sockets in the channel,
  ``{base}:channels`` holds the occupied channels, ``{base}:pm:{channel}`` the presence roster
  (user id -> ``user_info`` JSON) and ``{base}:pr:{channel}`` how many nodes hold each member;
  ``{base}:users`` maps user id -> signed-in sockets everywhere;
* each node keeps a *ledger* of what it contributed (``{base}:node:{id}:ch``, ``:pm`` with
  ``channel NUL user`` entries, ``:users``), which is what survivors undo when it dies and what
  it compares itself with after a Redis outage;
* bus messages are NUL-separated: ``e origin channel except payload`` (an event),
  ``w origin user 1|0`` (online/offline), ``t origin user`` (terminate),
  ``c origin channel ttl_ms payload`` (a cache channel's last event).
"""

from __future__ import annotations

__all__ = ["HEARTBEAT", "JOIN", "LEAVE", "RATE", "REAP", "USERS"]

_TOTAL = """
local function total(key)
  local sum = 0
  for _, v in ipairs(redis.call('HVALS', key)) do sum = sum + tonumber(v) end
  return sum
end
"""

JOIN = _TOTAL + """
-- KEYS: ch, channels, node ch ledger, roster, member refs, node member ledger
-- ARGV: node, channel, node sockets, user ('' = not presence), user_info, max members,
--       bus, member_added message
local entry = ARGV[2] .. '\\0' .. ARGV[4]
local presence = ARGV[4] ~= ''
if presence and redis.call('SISMEMBER', KEYS[6], entry) == 0
    and redis.call('HEXISTS', KEYS[4], ARGV[4]) == 0
    and redis.call('HLEN', KEYS[4]) >= tonumber(ARGV[6]) then
  return {-1}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[2])
local occupied = redis.call('SADD', KEYS[2], ARGV[2])
local added = 0
local roster = {}
if presence then
  if redis.call('SADD', KEYS[6], entry) == 1
      and redis.call('HINCRBY', KEYS[5], ARGV[4], 1) == 1 then
    redis.call('HSET', KEYS[4], ARGV[4], ARGV[5])
    redis.call('PUBLISH', ARGV[7], ARGV[8])
    added = 1
  end
  roster = redis.call('HGETALL', KEYS[4])
end
return {total(KEYS[1]), occupied, added, roster}
"""

LEAVE = _TOTAL + """
-- KEYS: as JOIN. ARGV: node, channel, node sockets, user ('' = keep the member), bus,
--       member_removed message
if tonumber(ARGV[3]) > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
else
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('SREM', KEYS[3], ARGV[2])
end
local sockets = total(KEYS[1])
local vacated = 0
if sockets == 0 then vacated = redis.call('SREM', KEYS[2], ARGV[2]) end
local removed = 0
if ARGV[4] ~= '' and redis.call('SREM', KEYS[6], ARGV[2] .. '\\0' .. ARGV[4]) == 1 then
  if redis.call('HINCRBY', KEYS[5], ARGV[4], -1) <= 0 then
    redis.call('HDEL', KEYS[5], ARGV[4])
    redis.call('HDEL', KEYS[4], ARGV[4])
    redis.call('PUBLISH', ARGV[5], ARGV[6])
    removed = 1
  end
end
return {sockets, vacated, removed}
"""

USERS = """
-- KEYS: users, node users ledger. ARGV: user, delta, bus, online message, offline message,
--       watchlist ids...
local mine = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local delta = tonumber(ARGV[2])
if mine + delta < 0 then delta = -mine end
if mine + delta == 0 then
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  redis.call('HSET', KEYS[2], ARGV[1], mine + delta)
end
local before = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local after = math.max(0, before + delta)
local change = 0
if after == 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  if before > 0 then change = -1; redis.call('PUBLISH', ARGV[3], ARGV[5]) end
else
  redis.call('HSET', KEYS[1], ARGV[1], after)
  if before == 0 then change = 1; redis.call('PUBLISH', ARGV[3], ARGV[4]) end
end
local online = {}
for i = 6, #ARGV do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then online[#online + 1] = ARGV[i] end
end
return {after, change, online}
"""

RATE = """
-- A fixed one-second window shared by every node. KEYS: the window's counter.
-- ARGV: cost, limit. Returns 1 when the cost was taken, 0 when it would pass the limit.
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used + tonumber(ARGV[1]) > tonumber(ARGV[2]) then return 0 end
redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], 2000)
return 1
"""

HEARTBEAT = """
-- KEYS: nodes (zset of lease expiries, ms). ARGV: node, lease ms.
-- Redis's clock, not the nodes': leases compare on one clock.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local known = 0
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then known = 1 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return {known, redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)}
"""

REAP = _TOTAL + """
-- Undo a dead node's ledger for one app, announcing on the bus (as the dead node) every member
-- that left with it and every user that went offline.
-- KEYS: channels, dead ch ledger, dead member ledger, dead users ledger, users, conns
-- ARGV: dead node, key base, bus
local dead, base, bus = ARGV[1], ARGV[2], ARGV[3]
local vacated, counts, removed, offline = {}, {}, {}, {}
for _, channel in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local key = base .. ':ch:' .. channel
  redis.call('HDEL', key, dead)
  local sockets = total(key)
  if sockets == 0 then
    if redis.call('SREM', KEYS[1], channel) == 1 then vacated[#vacated + 1] = channel end
  else
    counts[#counts + 1] = channel
    counts[#counts + 1] = sockets
  end
end
for _, entry in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local cut = string.find(entry, '\\0', 1, true)
  local channel, user = string.sub(entry, 1, cut - 1), string.sub(entry, cut + 1)
  local refs = base .. ':pr:' .. channel
  if redis.call('HINCRBY', refs, user, -1) <= 0 then
    redis.call('HDEL', refs, user)
    redis.call('HDEL', base .. ':pm:' .. channel, user)
    local data = cjson.encode({user_id = user})
    local message = cjson.encode({event = 'pusher_internal:member_removed',
                                  channel = channel, data = data})
    redis.call('PUBLISH', bus, 'e\\0' .. dead .. '\\0' .. channel .. '\\0\\0' .. message)
    removed[#removed + 1] = channel
    removed[#removed + 1] = user
  end
end
local users = redis.call('HGETALL', KEYS[4])
for i = 1, #users, 2 do
  local user = users[i]
  local left = redis.call('HINCRBY', KEYS[5], user, -tonumber(users[i + 1]))
  if left <= 0 then
    redis.call('HDEL', KEYS[5], user)
    redis.call('PUBLISH', bus, 'w\\0' .. dead .. '\\0' .. user .. '\\0' .. '0')
    offline[#offline + 1] = user
  end
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
redis.call('HDEL', KEYS[6], dead)
return {vacated, counts, removed, offline}
"""
