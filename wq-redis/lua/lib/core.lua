-- What every per-queue script shares. KEYS[1] is the queue's base,
-- "{prefix:queue}": every key of the queue starts with it, so all of them
-- live in one hash slot and one script may touch them together.
--
-- Times are microseconds since the epoch, passed in by the caller (never
-- Redis TIME), kept as decimal strings in hashes and as scores in sorted
-- sets (exact below 2^53).
local B = KEYS[1]
-- K.name is B .. ':name', built on first use (most scripts need a few):
--   cfg     hash: name, json, paused, hold, kd, kx
--   counts  hash: state -> jobs
--   ready   zset, score 0: due heads by member()
--   wait    zset, score 0: every waiting job by member(), for positions
--   sched   zset: scheduled heads by run_at
--   leases  zset: running jobs by lease expiry
--   done    zset: completed and cancelled jobs by finished_at
--   dead    zset: dead jobs by finished_at
--   idem    hash: idempotency key -> job id
--   all     zset, score 0: every job id, for listing in id order
--   glast   hash: group -> latest run_at, for time chaining
--   held    set: groups held by their dead head
--   seq     counter: enqueue order
--   token   counter: fencing tokens
local K = setmetatable({}, { __index = function(t, name)
  local key = B .. ':' .. name
  t[name] = key
  return key
end })
local WAKE_CHANNEL = B .. ':wake'
local LEASE_LAPSED = 'lease expired: the worker stopped heartbeating (crashed or stalled)'
-- member() is a 30-character sort key followed by the job id.
local SORT_KEY_LEN = 30

local function jkey(id) return B .. ':j:' .. id end
local function pkey(id) return B .. ':p:' .. id end
local function gkey(g) return B .. ':g:' .. g end

-- Lua turns numbers into text with 14 digits; timestamps need 16.
local function int(n) return string.format('%d', n) end

-- Count changes are summed and written once, at the end of the script.
local delta = {}
local woke = false

local function count(state, n) delta[state] = (delta[state] or 0) + n end

-- Index writes no later step of the same script reads, gathered into one
-- command each at the end: leases dropped (ZREM) before leases taken
-- (ZADD), so a job acknowledged and claimed again in one call keeps its
-- new lease; jobs finished as completed or cancelled.
local later = { unlease = {}, lease = {}, done = {} }

-- Appends one value, or a pair (b may be nil); no vararg table per call.
local function push(list, a, b)
  local n = #list
  list[n + 1] = a
  if b ~= nil then list[n + 2] = b end
end

-- Most arguments passed through unpack() at once (Lua's stack limit is
-- 8000); even, so that pairs stay together.
local SLICE = 4000

-- Runs `cmd` (after `key`, if any) over `args` in slices; returns the
-- replies of every slice, concatenated when they are arrays.
local function batched(cmd, key, args)
  local out = {}
  for i = 1, #args, SLICE do
    local r
    if key then
      r = redis.call(cmd, key, unpack(args, i, math.min(i + SLICE - 1, #args)))
    else
      r = redis.call(cmd, unpack(args, i, math.min(i + SLICE - 1, #args)))
    end
    if type(r) == 'table' then
      for _, v in ipairs(r) do out[#out + 1] = v end
    else
      out[#out + 1] = r
    end
  end
  return out
end

-- Writes what was gathered, publishes a wake-up if work may have become
-- claimable, and says whether it did.
local function flush(origin)
  batched('ZREM', K.leases, later.unlease)
  batched('ZADD', K.leases, later.lease)
  batched('ZADD', K.done, later.done)
  for state, n in pairs(delta) do
    if n ~= 0 then redis.call('HINCRBY', K.counts, state, n) end
  end
  if woke then redis.call('PUBLISH', WAKE_CHANNEL, origin) end
  return woke and 1 or 0
end

-- Points the names above at another queue and starts its gathering
-- afresh: a script over several queues (a batch enqueue) works on one at
-- a time and flushes each before it moves to the next.
local function use_queue(base)
  B = base
  K = setmetatable({}, getmetatable(K))
  WAKE_CHANNEL = base .. ':wake'
  delta = {}
  woke = false
  later = { unlease = {}, lease = {}, done = {} }
end

-- The queue's settings, or nil when it was never declared.
local function config()
  local c = redis.call('HMGET', K.cfg, 'name', 'paused', 'hold', 'kd', 'kx')
  if not c[1] then return nil end
  return { paused = c[2] == '1', hold = c[3] == '1', keep_done = tonumber(c[4]), keep_dead = tonumber(c[5]) }
end

local UNKNOWN_QUEUE = 'WQUNKNOWN queue not declared'

-- The order of due heads: priority, then run_at, then sequence, as
-- fixed-width hex so that the lexicographic order of a zset with equal
-- scores is that order. A run_at before the epoch sorts as the epoch.
local function member(pr, ra, sq, id)
  local r = tonumber(ra)
  if r < 0 then r = 0 end
  return string.format('%04x%014x%012x', tonumber(pr) + 32768, r, tonumber(sq)) .. id
end

local function set_state(jk, from, to, now)
  redis.call('HSET', jk, 'st', to, 'ua', now)
  count(from, -1)
  count(to, 1)
end

-- Puts a job that heads its group (or has none) back in the indexes, as
-- scheduled or available by its run_at; returns the state. `f` holds st,
-- pr, ra, sq when the caller has them (with ra as it will be), `extra`
-- more field/value pairs to write. A job that waited behind its group's
-- head (`waiting`) is in K.wait already.
local function requeue(id, now, f, extra, waiting)
  local jk = jkey(id)
  f = f or redis.call('HMGET', jk, 'st', 'pr', 'ra', 'sq')
  local m = member(f[2], f[3], f[4], id)
  local state = 'scheduled'
  if tonumber(f[3]) <= tonumber(now) then
    state = 'available'
    redis.call('ZADD', K.ready, 0, m)
  else
    redis.call('ZADD', K.sched, f[3], id)
  end
  if not waiting then redis.call('ZADD', K.wait, 0, m) end
  local fields = { jk, 'st', state, 'ua', now }
  if extra then
    for _, v in ipairs(extra) do fields[#fields + 1] = v end
  end
  redis.call('HSET', unpack(fields))
  count(f[1], -1)
  count(state, 1)
  woke = true
  return state
end

-- Deletes a job outright; false if it did not exist.
local function remove(id)
  local jk = jkey(id)
  local f = redis.call('HMGET', jk, 'st', 'ik')
  if not f[1] then return false end
  redis.call('DEL', jk, pkey(id))
  redis.call('ZREM', K.all, id)
  redis.call('ZREM', K.done, id)
  redis.call('ZREM', K.dead, id)
  count(f[1], -1)
  if f[2] and redis.call('HGET', K.idem, f[2]) == id then redis.call('HDEL', K.idem, f[2]) end
  return true
end

-- Indexes `next`, the group's new head after its old one left, or
-- forgets a group whose line is empty and whose chain no longer matters.
local function advance(g, next, now)
  if next then
    requeue(next, now, nil, nil, true)
  else
    local last = redis.call('HGET', K.glast, g)
    if not last or tonumber(last) <= tonumber(now) then redis.call('HDEL', K.glast, g) end
  end
end

-- Takes a terminal job out of its group's line (or holds the group on it:
-- a held group's line starts with its dead head). `was_dead` says whether
-- the job was dead before, so that it might have held the group.
local function leave_group(g, id, hold, now, was_dead)
  local gk = gkey(g)
  local first = redis.call('LRANGE', gk, 0, 1)
  if first[1] ~= id then
    redis.call('LREM', gk, 1, id)
  elseif hold then
    redis.call('SADD', K.held, g)
  else
    redis.call('LPOP', gk)
    if was_dead then redis.call('SREM', K.held, g) end
    advance(g, first[2], now)
  end
end

-- The fields finish() needs, in this order.
local FINISH_FIELDS = { 'st', 'pr', 'ra', 'sq', 'g' }

-- Ends a job in a terminal state and lets its group move on (unless a
-- dead head holds it); `f` holds FINISH_FIELDS as read before any change,
-- `extra` more field/value pairs to write. The lease, if any, goes.
local function finish(id, f, state, now, cfg, extra)
  local jk = jkey(id)
  if f[1] == 'scheduled' or f[1] == 'available' then
    local m = member(f[2], f[3], f[4], id)
    redis.call('ZREM', K.ready, m)
    redis.call('ZREM', K.wait, m)
    redis.call('ZREM', K.sched, id)
  end
  local fields = { jk, 'st', state, 'ua', now, 'fa', now, 'tk', '', 'lx', '', 'wk', '' }
  if extra then
    for _, v in ipairs(extra) do fields[#fields + 1] = v end
  end
  redis.call('HSET', unpack(fields))
  count(f[1], -1)
  count(state, 1)
  if f[5] then leave_group(f[5], id, state == 'dead' and cfg.hold, now, false) end
  if state == 'dead' then
    redis.call('ZADD', K.dead, now, id)
  elseif cfg.keep_done == 0 then
    remove(id)
  else
    push(later.done, now, id)
  end
end

-- Deletes a terminal job; a group it held moves on.
local function purge(id, now)
  local f = redis.call('HMGET', jkey(id), 'g', 'st')
  if remove(id) and f[1] then leave_group(f[1], id, false, now, f[2] == 'dead') end
end

-- Moves up to `max` scheduled heads whose time has come into `ready`.
local function promote(now, max)
  local ids = redis.call('ZRANGEBYSCORE', K.sched, '-inf', now, 'LIMIT', 0, max)
  for _, id in ipairs(ids) do
    local jk = jkey(id)
    local f = redis.call('HMGET', jk, 'st', 'pr', 'ra', 'sq')
    redis.call('ZREM', K.sched, id)
    redis.call('ZADD', K.ready, 0, member(f[2], f[3], f[4], id))
    set_state(jk, f[1], 'available', now)
  end
  return #ids
end

-- A job as the client decodes it: id, payload, and the hash's fields.
local function job_reply(id)
  return { id, redis.call('GET', pkey(id)), redis.call('HGETALL', jkey(id)) }
end
