-- Stores one direct message in the recipient's inbox and announces it, atomically.
-- Called by chat-worker's people::inbox (see there for the Rust side). Every key and the
-- channel are in the recipient's hash slot ({user:<id>}).
--
-- KEYS[1]  the recipient's inbox stream (entries: b = body, f = sender)
-- KEYS[2]  the recipient's per-sender counts (hash: sender -> messages waiting)
-- KEYS[3]  (optional) the sender's clientMsgId marker for this recipient
-- ARGV[1]  most messages an inbox may hold
-- ARGV[2]  oldest entry kept (unix ms): older entries are dropped first
-- ARGV[3]  inbox lifetime after the last send, ms
-- ARGV[4]  the message body: its JSON without the leading '{' and without the id
-- ARGV[5]  the recipient's user channel (sharded)
-- ARGV[6]  offline hook channel, or '' for none
-- ARGV[7]  history hook channel, or '' for none
-- ARGV[8]  how long the clientMsgId marker is kept, ms
-- ARGV[9]  the sender's user id
-- ARGV[10] most messages of one sender an inbox may hold
--
-- Returns {'stored', id}, {'duplicate', first id}, {'full', messages waiting} or
-- {'sender_full', messages of this sender waiting}.
local inbox, senders, marker = KEYS[1], KEYS[2], KEYS[3]
if marker then
  local first = redis.call('GET', marker)
  if first then
    return {'duplicate', first}
  end
end

-- Forgets one entry's sender in the counts.
local function uncount(fields)
  for i = 1, #fields, 2 do
    if fields[i] == 'f' and redis.call('HINCRBY', senders, fields[i + 1], -1) <= 0 then
      redis.call('HDEL', senders, fields[i + 1])
    end
  end
end

-- Drops entries past the age bound, keeping the counts exact; at most 100 per call (the rest
-- go with the next sends), so one call stays short.
local expired = redis.call('XRANGE', inbox, '-', '(' .. ARGV[2] .. '-0', 'COUNT', 100)
for _, entry in ipairs(expired) do
  uncount(entry[2])
  redis.call('XDEL', inbox, entry[1])
end

local waiting = redis.call('XLEN', inbox)
if waiting >= tonumber(ARGV[1]) then
  return {'full', tostring(waiting)}
end
local sender = ARGV[9]
local mine = tonumber(redis.call('HGET', senders, sender) or '0')
if mine >= tonumber(ARGV[10]) then
  return {'sender_full', tostring(mine)}
end
local id = redis.call('XADD', inbox, '*', 'b', ARGV[4], 'f', sender)
redis.call('HINCRBY', senders, sender, 1)
redis.call('PEXPIRE', inbox, ARGV[3])
redis.call('PEXPIRE', senders, ARGV[3])
if marker then
  redis.call('SET', marker, id, 'PX', ARGV[8])
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
