-- A member leaves a room: unless it moved meanwhile (recovered on another connection), removes it
-- and keeps and publishes its quit message with the room's member count, atomically. Called by
-- chat-worker's store::rooms.
--
-- KEYS[1]  the room's members hash
-- KEYS[2]  the room's history stream
-- KEYS[3]  (optional) the member's session key
-- ARGV[1]  the room's channel (sharded)
-- ARGV[2]  the origin worker's node id (of the frame)
-- ARGV[3]  the member's pid
-- ARGV[4]  the connection the member must still be (its engine.io session id) for the quit to
--          happen: a member that recovered meanwhile, here or elsewhere, has another one
-- ARGV[5]  the quit message JSON without its data, count and closing '}' (the data, the
--          member's name and user id, comes from its record)
-- ARGV[6]  messages the history keeps (0: none)
-- ARGV[7]  history lifetime, ms
-- ARGV[8]  'delete' to delete the session (it cannot be recovered), 'keep' to leave it to its
--          lifetime (the client may still recover within the window)
-- ARGV[9]  the room's classic channel in the node design's format (`--bus-format legacy`), or '':
--          the quit message is also published there, as plain JSON, without the count, and its
--          history entry is flagged `l`
--
-- Returns {1, count} if the member was removed, {0, 0} if it was not there (or moved).
local current = redis.call('HGET', KEYS[1], ARGV[3])
if not current or not string.find(current, '"conn":"' .. ARGV[4] .. '"', 1, true) then
  return {0, 0}
end
local member = cjson.decode(current)
redis.call('HDEL', KEYS[1], ARGV[3])
local count = redis.call('HLEN', KEYS[1])
local data = cjson.encode({username = member.username, userId = member.userId})
local legacy = ARGV[9]
local message = ARGV[5] .. ',"data":' .. data .. ',"count":' .. count .. '}'
if legacy ~= '' then
  message = ARGV[5] .. ',"data":' .. data .. '}'
end
local id = ''
if tonumber(ARGV[6]) > 0 and legacy ~= '' then
  id = redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[6], '*', 'm', message, 'l', '1')
elseif tonumber(ARGV[6]) > 0 then
  id = redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[6], '*', 'm', message)
  redis.call('PEXPIRE', KEYS[2], ARGV[7])
end
if KEYS[3] and ARGV[8] == 'delete' then
  redis.call('DEL', KEYS[3])
end
redis.call('SPUBLISH', ARGV[1], ARGV[2] .. '|' .. id .. '|p|' .. message)
if legacy ~= '' then
  redis.call('PUBLISH', legacy, message)
end
return {1, count}
