-- One user's send rate, shared by every worker: the generic cell rate algorithm (GCRA), one key
-- holding the theoretical arrival time. Called by chat-worker's people::inbox.
--
-- KEYS[1]  the user's rate key (in the user's hash slot)
-- ARGV[1]  ms between sends at the sustained rate (integer, at least 1)
-- ARGV[2]  sends allowed at once (the burst, at least 1)
--
-- Returns 0 if the send may go now, else how many ms until it may.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local interval = tonumber(ARGV[1])
local tolerance = interval * (tonumber(ARGV[2]) - 1)
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then
  tat = now
end
if now < tat - tolerance then
  return tat - tolerance - now
end
tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', tat - now + 1000)
return 0
