-- Keeps messages said on one worker in their room's history and publishes them, in order.
-- Called by chat-worker's store::rooms (see there for the Rust side), from the bus's publishing
-- connection, so a room's messages reach Redis in the order the worker delivered them.
--
-- KEYS[1]  the room's history stream (entries: m = message JSON, s = message id of a say)
-- ARGV[1]  the room's channel (sharded; same hash slot as KEYS[1])
-- ARGV[2]  the origin worker's node id (16 hex digits)
-- ARGV[3]  messages the history keeps (0: no history: publish only)
-- ARGV[4]  history lifetime after its last message, ms
-- ARGV[5]  the room's classic channel in the node design's format (`--bus-format legacy`), or '':
--          then each history entry is also flagged `l` (the node workers' messages are not in it)
-- ARGV[6], ARGV[7], ...  pairs: the message id, the message JSON
--
-- Publishes each as `<origin>|<stream id>||<json>`, and the JSON alone on the legacy channel if
-- there is one. Returns the number of messages.
local keep = tonumber(ARGV[3]) > 0
local legacy = ARGV[5]
for i = 6, #ARGV, 2 do
  local id = ''
  if keep then
    if legacy ~= '' then
      id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[3], '*', 'm', ARGV[i + 1], 's', ARGV[i], 'l', '1')
    else
      id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[3], '*', 'm', ARGV[i + 1], 's', ARGV[i])
    end
  end
  redis.call('SPUBLISH', ARGV[1], ARGV[2] .. '|' .. id .. '||' .. ARGV[i + 1])
  if legacy ~= '' then
    redis.call('PUBLISH', legacy, ARGV[i + 1])
  end
end
if keep then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
return (#ARGV - 5) / 2
