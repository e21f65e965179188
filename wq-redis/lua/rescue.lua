-- Takes back up to `limit` jobs whose lease lapsed at or before `now`:
-- cancelled if that was asked, dead without attempts left, else waiting
-- again with the attempt spent. Each lapsed run is recorded in its job's
-- history.
-- ARGV: now, origin, limit. Returns { woke, { id, state, id, state, ... } }
-- for the jobs taken back, each with the state it is in now.
local cfg = config()
if not cfg then return redis.error_reply(UNKNOWN_QUEUE) end
local now = ARGV[1]
local taken = {}
local ids = redis.call('ZRANGEBYSCORE', K.leases, '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  redis.call('ZREM', K.leases, id)
  -- FINISH_FIELDS, then the most attempts, the cancellation flag and
  -- RUN_FIELDS (the attempt first).
  local f = redis.call('HMGET', jkey(id), 'st', 'pr', 'ra', 'sq', 'g', 's', 'cn', 'mx', 'cr', unpack(RUN_FIELDS))
  if f[1] then
    local fields = {}
    record_run(fields, id, now, 'lapsed', LEASE_LAPSED, unpack(f, 10))
    -- A lapsed run ends a job's steps: it waits as one not yet started.
    if f[7] == '1' then
      f[7] = ''
      push(fields, 'cn', '')
    end
    local state
    if f[9] then
      state = 'cancelled'
      finish(id, f, state, now, cfg, fields)
    elseif tonumber(f[10]) >= tonumber(f[8]) then
      state = 'dead'
      push(fields, 'er', LEASE_LAPSED)
      finish(id, f, state, now, cfg, fields)
    else
      state = requeue(id, now, f, { 'er', LEASE_LAPSED, 'tk', '', 'lx', '', 'wk', '', 'ls', '', unpack(fields) })
    end
    push(taken, id, state)
  end
end
return { flush(ARGV[2]), taken }
