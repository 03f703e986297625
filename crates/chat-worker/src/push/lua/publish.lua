-- Announces a push that is not stored, once per idempotency key. Called by chat-worker's push
-- for API requests that carry an Idempotency-Key. Key and channel are in the user's hash slot.
--
-- KEYS[1]  the request's idempotency marker for this user
-- ARGV[1]  the user's channel (sharded)
-- ARGV[2]  the push frame
-- ARGV[3]  how long the marker is kept, ms
--
-- Returns {online, duplicate} as store.lua does.
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[3]) == false then
  return {0, 1}
end
local online = 0
if redis.call('SPUBLISH', ARGV[1], ARGV[2]) > 0 then
  online = 1
end
return {online, 0}
