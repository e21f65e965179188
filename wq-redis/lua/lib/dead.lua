-- Dead jobs an operation applies to: ARGV[3] is 'all' (then ARGV[4] is the
-- most to take, oldest first) or 'ids' (then ARGV[4..] are ids, of which
-- only the dead ones count).
local function dead_ids()
  if ARGV[3] == 'all' then
    return redis.call('ZRANGE', K.dead, 0, tonumber(ARGV[4]) - 1)
  end
  local ids = {}
  for a = 4, #ARGV do
    if redis.call('HGET', jkey(ARGV[a]), 'st') == 'dead' then ids[#ids + 1] = ARGV[a] end
  end
  return ids
end
