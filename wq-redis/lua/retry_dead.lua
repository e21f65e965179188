-- Brings dead jobs back with fresh attempts: in place if the job still
-- holds its group, else at the back of its group with a new sequence (at
-- the head of an emptied group, no earlier than the end of its gap).
-- ARGV: now, origin, then the selection (see dead_ids). Returns { woke, n }.
local cfg = config()
if not cfg then return redis.error_reply(UNKNOWN_QUEUE) end
local now = ARGV[1]

local function revive(id)
  local jk = jkey(id)
  local seq = redis.call('INCR', K.seq)
  redis.call('ZREM', K.dead, id)
  local f = redis.call('HMGET', jk, 'st', 'g', 's')
  redis.call('HSET', jk, 'at', 0, 'ra', now)
  -- A revived job starts a new life: the acknowledgement that killed it,
  -- sent again, is stale from now on (as in memory and Postgres), and it
  -- starts again from its first step, as a job not yet started.
  redis.call('HDEL', jk, 'cr', 'fa', 'ak', 'sp', 'cn')
  set_state(jk, f[1], 'available', now)
  session_moved(f[3], f[1], 'available')
  local g = f[2]
  local runs_now = true
  if g then
    if redis.call('SISMEMBER', K.held, g) == 1 and redis.call('LINDEX', gkey(g), 0) == id then
      redis.call('SREM', K.held, g)
    else
      redis.call('HSET', jk, 'sq', seq)
      runs_now = redis.call('RPUSH', gkey(g), id) == 1
      local until_ = runs_now and gap_until(g, now)
      if until_ then redis.call('HSET', jk, 'ra', int(until_)) end
    end
  end
  if runs_now then
    requeue(id, now)
  else
    local p = redis.call('HMGET', jk, 'pr', 'ra', 'sq')
    redis.call('ZADD', K.wait, 0, member(p[1], p[2], p[3], id))
  end
end

local ids = dead_ids()
for _, id in ipairs(ids) do revive(id) end
return { flush(ARGV[2]), #ids }
