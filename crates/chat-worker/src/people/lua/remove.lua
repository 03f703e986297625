-- Removes acknowledged messages from an inbox, and their senders from its per-sender counts.
-- Called by chat-worker's people::inbox. Both keys are in the user's hash slot.
--
-- KEYS[1]  the inbox stream (entries: b = body, f = sender)
-- KEYS[2]  the per-sender counts (hash: sender -> messages waiting)
-- ARGV     the entry ids to remove
--
-- Returns how many of them were still there.
local removed = 0
for _, id in ipairs(ARGV) do
  local entry = redis.call('XRANGE', KEYS[1], id, id)[1]
  if entry then
    local fields = entry[2]
    for i = 1, #fields, 2 do
      if fields[i] == 'f' and redis.call('HINCRBY', KEYS[2], fields[i + 1], -1) <= 0 then
        redis.call('HDEL', KEYS[2], fields[i + 1])
      end
    end
    removed = removed + redis.call('XDEL', KEYS[1], id)
  end
end
return removed
