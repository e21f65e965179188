-- Takes back up to `limit` jobs whose lease lapsed at or before `now`:
-- cancelled if that was asked, dead without attempts left, else waiting
-- again with the attempt spent.
-- ARGV: now, origin, limit. Returns { woke, { id, state, id, state, ... } }
-- for the jobs taken back, each with the state it is in now.
local cfg = config()
if not cfg then return redis.error_reply(UNKNOWN_QUEUE) end
local now = ARGV[1]
local taken = {}
local ids = redis.call('ZRANGEBYSCORE', K.leases, '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  redis.call('ZREM', K.leases, id)
  -- FINISH_FIELDS, then attempts and the cancellation flag.
  local f = redis.call('HMGET', jkey(id), 'st', 'pr', 'ra', 'sq', 'g', 's', 'at', 'mx', 'cr')
  if f[1] then
    local state
    if f[9] then
      state = 'cancelled'
      finish(id, f, state, now, cfg)
    elseif tonumber(f[7]) >= tonumber(f[8]) then
      state = 'dead'
      finish(id, f, state, now, cfg, { 'er', LEASE_LAPSED })
    else
      state = requeue(id, now, f, { 'er', LEASE_LAPSED, 'tk', '', 'lx', '', 'wk', '' })
    end
    push(taken, id, state)
  end
end
return { flush(ARGV[2]), taken }
