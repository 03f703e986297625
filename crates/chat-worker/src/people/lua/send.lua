-- Stores one direct message in the recipient's inbox and announces it, atomically.
-- Called by chat-worker's people::inbox (see there for the Rust side).
--
-- KEYS[1]  the recipient's inbox stream
-- KEYS[2]  the sender's clientMsgId marker, or '' for none
-- ARGV[1]  most messages an inbox may hold
-- ARGV[2]  oldest entry id kept (unix ms): older entries are trimmed first
-- ARGV[3]  inbox lifetime after the last send, ms
-- ARGV[4]  the message body: its JSON without the leading '{' and without the id
-- ARGV[5]  the recipient's user channel
-- ARGV[6]  offline hook channel, or '' for none
-- ARGV[7]  history hook channel, or '' for none
-- ARGV[8]  how long the clientMsgId marker is kept, ms
--
-- Returns {'stored', id}, {'duplicate', first id} or {'full', messages waiting}.
if KEYS[2] ~= '' then
  local first = redis.call('GET', KEYS[2])
  if first then
    return {'duplicate', first}
  end
end
redis.call('XTRIM', KEYS[1], 'MINID', ARGV[2])
local waiting = redis.call('XLEN', KEYS[1])
if waiting >= tonumber(ARGV[1]) then
  return {'full', tostring(waiting)}
end
local id = redis.call('XADD', KEYS[1], '*', 'b', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if KEYS[2] ~= '' then
  redis.call('SET', KEYS[2], id, 'PX', ARGV[8])
end
local message = '{"id":"' .. id .. '",' .. ARGV[4]
local online = redis.call('SPUBLISH', ARGV[5], '{"kind":"chat","id":"' .. id .. '","message":' .. message .. '}')
if online == 0 and ARGV[6] ~= '' then
  redis.call('PUBLISH', ARGV[6], message)
end
if ARGV[7] ~= '' then
  redis.call('PUBLISH', ARGV[7], message)
end
return {'stored', id}
