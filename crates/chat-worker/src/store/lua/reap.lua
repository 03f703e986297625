-- Removes the members a dead worker left in a room, each with one quit message, atomically.
-- Called by chat-worker's rooms::presence on the worker that claimed the dead one.
--
-- KEYS[1]  the room's members hash
-- KEYS[2]  the room's history stream
-- ARGV[1]  the room's channel (sharded)
-- ARGV[2]  the reaping worker's node id (the frames' origin; every worker delivers them)
-- ARGV[3]  the dead worker's node id
-- ARGV[4]  the room id (validated: plain ASCII)
-- ARGV[5]  now, unix ms
-- ARGV[6]  the first message counter reserved by the reaper for the quit message ids
-- ARGV[7]  how many counters it reserved (at most that many members are reaped per call)
-- ARGV[8]  messages the history keeps (0: none); ARGV[9] history lifetime, ms
-- ARGV[10] the room's classic channel in the node design's format (`--bus-format legacy`), or '':
--          each quit is also published there, as plain JSON, without the count, and its history
--          entry is flagged `l`
--
-- Returns how many members were removed.
local needle = '"node":"' .. ARGV[3] .. '"'
local all = redis.call('HGETALL', KEYS[1])
local removed = 0
local keep = tonumber(ARGV[8]) > 0
local legacy = ARGV[10]
for i = 1, #all, 2 do
  if removed >= tonumber(ARGV[7]) then
    break
  end
  if string.find(all[i + 1], needle, 1, true) then
    local member = cjson.decode(all[i + 1])
    redis.call('HDEL', KEYS[1], all[i])
    local count = redis.call('HLEN', KEYS[1])
    if legacy ~= '' then
      -- cjson leaves a nil field out: in legacy mode quits carry no count.
      count = nil
    end
    local data = {username = member.username, userId = member.userId}
    local message = cjson.encode({
      event = 'broadcast_quit', data = data,
      id = ARGV[2] .. '-' .. (tonumber(ARGV[6]) + removed),
      ts = tonumber(ARGV[5]), room = ARGV[4], count = count,
    })
    local id = ''
    if keep and legacy ~= '' then
      id = redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[8], '*', 'm', message, 'l', '1')
    elseif keep then
      id = redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[8], '*', 'm', message)
    end
    redis.call('SPUBLISH', ARGV[1], ARGV[2] .. '|' .. id .. '|p|' .. message)
    if legacy ~= '' then
      redis.call('PUBLISH', legacy, message)
    end
    removed = removed + 1
  end
end
if keep and removed > 0 then
  redis.call('PEXPIRE', KEYS[2], ARGV[9])
end
return removed
