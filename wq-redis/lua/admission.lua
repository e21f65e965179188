-- Admissions (wq_core::Admissions). Per session, `Q:adm:<session>` holds
-- its allowance (`an` new groups per `ap` µs) and hold (`hu`, µs), and
-- `Q:adg:<session>` every group it was admitted to, scored by when (µs).
-- ARGV: op, session, then for 'allow' the new groups and the window ('' and
-- '' lift it); for 'hold' the time it ends; for 'admit' the group and now.
-- 'admit' returns { 0 } known, { 1 } admitted or { 2, until } refused; the
-- others return {}.
local cfg = config()
if not cfg then return redis.error_reply(UNKNOWN_QUEUE) end
local op, name = ARGV[1], ARGV[2]
local hk, zk = B .. ':adm:' .. name, B .. ':adg:' .. name
if op == 'allow' then
  if ARGV[3] == '' then
    redis.call('HDEL', hk, 'an', 'ap')
  else
    redis.call('HSET', hk, 'an', ARGV[3], 'ap', ARGV[4])
  end
  return {}
elseif op == 'hold' then
  redis.call('HSET', hk, 'hu', ARGV[3])
  return {}
end
local group, now = ARGV[3], tonumber(ARGV[4])
if redis.call('ZSCORE', zk, group) then return { 0 } end
local a = redis.call('HMGET', hk, 'an', 'ap', 'hu')
if a[3] and tonumber(a[3]) > now then return { 2, a[3] } end
if a[1] then
  local per = tonumber(a[2])
  local from = '(' .. int(now - per)
  if redis.call('ZCOUNT', zk, from, '+inf') >= tonumber(a[1]) then
    local oldest = redis.call('ZRANGE', zk, from, '+inf', 'BYSCORE', 'LIMIT', 0, 1, 'WITHSCORES')[2]
    return { 2, int(tonumber(oldest) + per) }
  end
end
redis.call('ZADD', zk, now, group)
return { 1 }
