-- Keeps one notification in each addressed user's unread store and announces it, atomically
-- per call. Called by chat-worker's push::unread (see there for the Rust side).
--
-- KEYS     the users' unread streams
-- ARGV[1]  most notifications a store keeps (older ones are dropped)
-- ARGV[2]  store lifetime after the last notification, ms
-- ARGV[3]  the notification body: its JSON without the leading '{' and without the id
-- ARGV[4]  the event to deliver it as (validated: no characters that need JSON escaping)
-- ARGV[5]  'true' if the client's ack of the event removes it from the store, else 'false'
-- ARGV[5 + i]  the channel of the user of KEYS[i]
--
-- Returns how many of the users were online (their channel had a subscriber).
local online = 0
for i, key in ipairs(KEYS) do
  local id = redis.call('XADD', key, 'MAXLEN', ARGV[1], '*', 'n', ARGV[3])
  redis.call('PEXPIRE', key, ARGV[2])
  local payload = '{"id":"' .. id .. '",' .. ARGV[3]
  local frame = '{"kind":"push","event":"' .. ARGV[4] .. '","id":"' .. id .. '","removeOnAck":' .. ARGV[5] .. ',"payload":' .. payload .. '}'
  if redis.call('SPUBLISH', ARGV[5 + i], frame) > 0 then
    online = online + 1
  end
end
return online
