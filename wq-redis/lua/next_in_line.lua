-- ARGV: now. When the job next in line became due (see Admin::next_in_line):
-- the earliest run_at of the first due head, the first open session's
-- front, and the earliest scheduled head that came due unpromoted, as
-- { run_at }; {} when none is due.
local cfg = config()
if not cfg then return redis.error_reply(UNKNOWN_QUEUE) end
local best
local function take(at)
  if at and (not best or at < best) then best = at end
end
-- A member's run_at: the 14 hex digits after its priority and flag.
local function front(key)
  local m = redis.call('ZRANGE', key, 0, 0)[1]
  if m then return tonumber(string.sub(m, 6, 19), 16) end
end
take(front(K.ready))
take(front(K.open))
local s = redis.call('ZRANGE', K.sched, 0, 0, 'WITHSCORES')
if s[2] and tonumber(s[2]) <= tonumber(ARGV[1]) then take(tonumber(s[2])) end
if best then return { int(best) } end
return {}
