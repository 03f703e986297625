-- Keeps one notification in a user's unread store and announces it, atomically. Called by
-- chat-worker's push::unread, once per user. Every key and the channel are in the user's hash
-- slot ({user:<id>}).
--
-- KEYS[1]  the user's unread stream
-- KEYS[2]  (optional) the push API request's idempotency marker for this user
-- ARGV[1]  most notifications a store keeps (older ones are dropped)
-- ARGV[2]  store lifetime after the last notification, ms
-- ARGV[3]  the notification body: its JSON without the leading '{' and without the id
-- ARGV[4]  the event to deliver it as (validated: no characters that need JSON escaping)
-- ARGV[5]  'true' if the client's ack of the event removes it from the store, else 'false'
-- ARGV[6]  the user's channel (sharded)
-- ARGV[7]  how long the idempotency marker is kept, ms
--
-- Returns {online, duplicate}: 1 if the user's channel had a subscriber, 1 if the marker says
-- this request was stored for this user already (then nothing is done).
if KEYS[2] and redis.call('EXISTS', KEYS[2]) == 1 then
  return {0, 1}
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], '*', 'n', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if KEYS[2] then
  redis.call('SET', KEYS[2], id, 'PX', ARGV[7])
end
local payload = '{"id":"' .. id .. '",' .. ARGV[3]
local frame = '{"kind":"push","event":"' .. ARGV[4] .. '","id":"' .. id .. '","removeOnAck":' .. ARGV[5] .. ',"payload":' .. payload .. '}'
local online = 0
if redis.call('SPUBLISH', ARGV[6], frame) > 0 then
  online = 1
end
return {online, 0}
