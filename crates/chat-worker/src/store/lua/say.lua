-- Keeps messages said on one worker in their room's history and publishes them, in order.
-- Called by chat-worker's store::rooms (see there for the Rust side), from the bus's publishing
-- connection, so a room's messages reach Redis in the order the worker delivered them.
--
-- KEYS[1]  the room's history stream (entries: m = message JSON, s = message id of a say)
-- ARGV[1]  the room's channel (sharded; same hash slot as KEYS[1])
-- ARGV[2]  the origin worker's node id (16 hex digits)
-- ARGV[3]  messages the history keeps (0: no history: publish only)
-- ARGV[4]  history lifetime after its last message, ms
-- ARGV[5], ARGV[6], ...  pairs: the message id, the message JSON
--
-- Publishes each as `<origin>|<stream id>||<json>`. Returns the number of messages.
local keep = tonumber(ARGV[3]) > 0
for i = 5, #ARGV, 2 do
  local id = ''
  if keep then
    id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[3], '*', 'm', ARGV[i + 1], 's', ARGV[i])
  end
  redis.call('SPUBLISH', ARGV[1], ARGV[2] .. '|' .. id .. '||' .. ARGV[i + 1])
end
if keep then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
return (#ARGV - 4) / 2
