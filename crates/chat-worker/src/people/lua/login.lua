-- Records a login and tells every worker holding the user's sockets, atomically.
-- Called by chat-worker's people::inbox (see there for the Rust side). Every key and the
-- channel are in the user's hash slot ({user:<id>}).
--
-- KEYS[1]  the user's login hash {generation, device}
-- KEYS[2]  the user's inbox stream (entries: b = body, f = sender)
-- KEYS[3]  the user's unread notifications stream
-- KEYS[4]  the user's per-sender counts of waiting messages
-- ARGV[1]  the device logging in (validated: no characters that need JSON escaping)
-- ARGV[2]  oldest inbox entry kept (unix ms)
-- ARGV[3]  the user's channel (sharded), or '' for a login that ends no other session
-- ARGV[4]  login hook channel, or '' for none
-- ARGV[5]  login hook message
--
-- Returns {generation, messages waiting, unread notifications}.
local generation = redis.call('HINCRBY', KEYS[1], 'generation', 1)
redis.call('HSET', KEYS[1], 'device', ARGV[1])
-- Drops messages past the age bound (at most 100 per call), keeping the per-sender counts exact.
local expired = redis.call('XRANGE', KEYS[2], '-', '(' .. ARGV[2] .. '-0', 'COUNT', 100)
for _, entry in ipairs(expired) do
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'f' and redis.call('HINCRBY', KEYS[4], fields[i + 1], -1) <= 0 then
      redis.call('HDEL', KEYS[4], fields[i + 1])
    end
  end
  redis.call('XDEL', KEYS[2], entry[1])
end
local waiting = redis.call('XLEN', KEYS[2])
if ARGV[3] ~= '' then
  redis.call('SPUBLISH', ARGV[3], '{"kind":"login","generation":' .. generation .. ',"device":"' .. ARGV[1] .. '"}')
end
if ARGV[4] ~= '' then
  redis.call('PUBLISH', ARGV[4], ARGV[5])
end
return {generation, waiting, redis.call('XLEN', KEYS[3])}
