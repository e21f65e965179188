-- Takes back up to `limit` jobs whose lease lapsed at or before `now`:
-- cancelled if that was asked, dead without attempts left, else waiting
-- again with the attempt spent.
-- ARGV: now, origin, limit. Returns { woke, { retried, dead, cancelled } }.
local cfg = config()
if not cfg then return redis.error_reply(UNKNOWN_QUEUE) end
local now = ARGV[1]
local report = { 0, 0, 0 }
local ids = redis.call('ZRANGEBYSCORE', K.leases, '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  redis.call('ZREM', K.leases, id)
  -- FINISH_FIELDS, then attempts and the cancellation flag.
  local f = redis.call('HMGET', jkey(id), 'st', 'pr', 'ra', 'sq', 'g', 's', 'at', 'mx', 'cr')
  if f[1] then
    if f[9] then
      finish(id, f, 'cancelled', now, cfg)
      report[3] = report[3] + 1
    elseif tonumber(f[7]) >= tonumber(f[8]) then
      finish(id, f, 'dead', now, cfg, { 'er', LEASE_LAPSED })
      report[2] = report[2] + 1
    else
      requeue(id, now, f, { 'er', LEASE_LAPSED, 'tk', '', 'lx', '', 'wk', '' })
      report[1] = report[1] + 1
    end
  end
end
return { flush(ARGV[2]), report }
