-- Records a login and tells every worker holding the user's sockets, atomically.
-- Called by chat-worker's people::inbox (see there for the Rust side).
--
-- KEYS[1]  the user's login hash {generation, device}
-- KEYS[2]  the user's inbox stream
-- KEYS[3]  the user's unread notifications stream
-- ARGV[1]  the device logging in (validated: no characters that need JSON escaping)
-- ARGV[2]  oldest inbox entry id kept (unix ms)
-- ARGV[3]  the user's channel
-- ARGV[4]  login hook channel, or '' for none
-- ARGV[5]  login hook message
--
-- Returns {generation, messages waiting, unread notifications}.
local generation = redis.call('HINCRBY', KEYS[1], 'generation', 1)
redis.call('HSET', KEYS[1], 'device', ARGV[1])
redis.call('XTRIM', KEYS[2], 'MINID', ARGV[2])
local waiting = redis.call('XLEN', KEYS[2])
redis.call('SPUBLISH', ARGV[3], '{"kind":"login","generation":' .. generation .. ',"device":"' .. ARGV[1] .. '"}')
if ARGV[4] ~= '' then
  redis.call('PUBLISH', ARGV[4], ARGV[5])
end
return {generation, waiting, redis.call('XLEN', KEYS[3])}
