-- A client reconnects with {pid, offset} (socket.io connection state recovery): if its session
-- is known and everything after its offset is still in the room's history, moves the member to
-- this worker, renews the session, reads back what it missed, and publishes the marker after
-- which it gets live messages; all atomically. Called by chat-worker's store::rooms.
--
-- KEYS[1]  the room's history stream
-- KEYS[2]  the room's members hash
-- KEYS[3]  the session key
-- ARGV[1]  the room's channel (sharded)
-- ARGV[2]  this worker's node id
-- ARGV[3]  the marker token
-- ARGV[4]  the pid
-- ARGV[5]  the last history entry the client saw, or '' for none
-- ARGV[6]  most entries to replay (the history's size): more missed than that cannot be replayed
-- ARGV[7]  the session's lifetime, ms
-- ARGV[8]  the user id the handshake proved, or '' (then the session must have none either)
-- ARGV[9]  the join message JSON without its username, user id and closing '}' (sent only if
--          the member had been removed meanwhile); ARGV[10] its history size, ARGV[11] ttl ms
-- ARGV[12] the recovering socket's connection (engine.io session id)
--
-- Returns {'gone'} when the session cannot be recovered, else
-- {'ok', the session record it had, count, join message stream id or '', entries oldest first}.
local raw = redis.call('GET', KEYS[3])
if not raw then
  return {'gone'}
end
local session = cjson.decode(raw)
if (session.userId or '') ~= ARGV[8] then
  return {'gone'}
end
local most = tonumber(ARGV[6])
local entries
if ARGV[5] ~= '' then
  if #redis.call('XRANGE', KEYS[1], ARGV[5], ARGV[5]) == 0 then
    return {'gone'}
  end
  entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[5], '+', 'COUNT', most + 1)
else
  if redis.call('EXISTS', KEYS[1]) == 1 then
    local info = redis.call('XINFO', 'STREAM', KEYS[1])
    for i = 1, #info, 2 do
      if info[i] == 'max-deleted-entry-id' and info[i + 1] ~= '0-0' then
        return {'gone'}
      end
    end
  end
  entries = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', most + 1)
end
if #entries > most then
  return {'gone'}
end
session.node = ARGV[2]
local member = {node = ARGV[2], username = session.username, userId = session.userId, conn = ARGV[12]}
local added = redis.call('HSET', KEYS[2], ARGV[4], cjson.encode(member))
local count = redis.call('HLEN', KEYS[2])
redis.call('SET', KEYS[3], cjson.encode(session), 'PX', ARGV[7])
local message = ''
local id = ''
if added == 1 then
  -- Its quit went out meanwhile: it comes back with a join.
  local data = {username = session.username, userId = session.userId}
  message = ARGV[9] .. ',"data":' .. cjson.encode(data) .. ',"count":' .. count .. '}'
  if tonumber(ARGV[10]) > 0 then
    id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[10], '*', 'm', message)
    redis.call('PEXPIRE', KEYS[1], ARGV[11])
  end
end
redis.call('SPUBLISH', ARGV[1], ARGV[2] .. '|' .. id .. '|j:' .. ARGV[3] .. '|' .. message)
return {'ok', raw, count, id, entries}
