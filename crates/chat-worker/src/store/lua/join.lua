-- A member joins a room: registers it, reads the room's history back, keeps and publishes the
-- join message (with the room's member count) as a marker, atomically. Called by chat-worker's
-- store::rooms, from the bus's publishing connection.
--
-- The marker frame is the joining worker's barrier: everything published to the room before it
-- is in the history read here, everything after it comes live; the worker adds the socket to
-- the room when the marker arrives.
--
-- KEYS[1]  the room's history stream
-- KEYS[2]  the room's members hash (pid -> member record JSON)
-- KEYS[3]  (optional) the member's session key
-- ARGV[1]  the room's channel (sharded)
-- ARGV[2]  the joining worker's node id
-- ARGV[3]  the marker token
-- ARGV[4]  the member's pid
-- ARGV[5]  the member record JSON
-- ARGV[6]  the join message JSON without its closing '}' (the count is appended here)
-- ARGV[7]  messages the history keeps (0: none)
-- ARGV[8]  history lifetime, ms
-- ARGV[9]  entries to read back (the newest), 0 for none
-- ARGV[10] the session record JSON
-- ARGV[11] the session's lifetime, ms
-- ARGV[12] the room's classic channel in the node design's format (`--bus-format legacy`), or '':
--          the join message is also published there, as plain JSON, without the count (the
--          node workers' members are in no count), and its history entry is flagged `l`
--
-- Returns {count, the join message's stream id or '', history entries newest first}.
redis.call('HSET', KEYS[2], ARGV[4], ARGV[5])
local count = redis.call('HLEN', KEYS[2])
local history = {}
if tonumber(ARGV[9]) > 0 then
  history = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', ARGV[9])
end
local legacy = ARGV[12]
local message = ARGV[6] .. ',"count":' .. count .. '}'
if legacy ~= '' then
  message = ARGV[6] .. '}'
end
local id = ''
if tonumber(ARGV[7]) > 0 and legacy ~= '' then
  id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[7], '*', 'm', message, 'l', '1')
elseif tonumber(ARGV[7]) > 0 then
  id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[7], '*', 'm', message)
  redis.call('PEXPIRE', KEYS[1], ARGV[8])
end
if KEYS[3] then
  redis.call('SET', KEYS[3], ARGV[10], 'PX', ARGV[11])
end
redis.call('SPUBLISH', ARGV[1], ARGV[2] .. '|' .. id .. '|j:' .. ARGV[3] .. '|' .. message)
if legacy ~= '' then
  redis.call('PUBLISH', legacy, message)
end
return {count, id, history}
