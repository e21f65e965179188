-- Due scheduled heads promoted per claim: bounds the work of one call when
-- a large batch comes due at once (the maintenance leader promotes the rest).
local PROMOTE_PER_CLAIM = 1000
-- Most jobs one claim hands out, so one call stays short.
local MAX_CLAIM = 1000

-- Sets `changes` (field -> value) in an HGETALL reply, appending fields it
-- lacks: the reply then shows the job as written, without reading it again.
local function patch(h, changes)
  for i = 1, #h, 2 do
    local v = changes[h[i]]
    if v then
      h[i + 1] = v
      changes[h[i]] = nil
    end
  end
  for k, v in pairs(changes) do
    h[#h + 1] = k
    h[#h + 1] = v
  end
  return h
end

-- Starts a new attempt of a popped head under a lease with `token`;
-- returns the job's fields as written.
local function lease(id, now, lease_until, worker, token)
  local jk = jkey(id)
  local h = redis.call('HGETALL', jk)
  local attempt = 1
  for i = 1, #h, 2 do
    if h[i] == 'at' then attempt = tonumber(h[i + 1]) + 1 end
  end
  local changes = { st = 'running', ua = now, at = int(attempt), tk = int(token), lx = lease_until, wk = worker }
  redis.call('HSET', jk, 'st', changes.st, 'ua', now, 'at', changes.at, 'tk', changes.tk, 'lx', lease_until, 'wk', worker)
  push(later.lease, lease_until, id)
  return patch(h, changes)
end

-- Claims up to `limit` due heads in priority order, each under a new lease
-- with its own fencing token. Only ungrouped jobs and group heads are ever
-- in `ready`, so a claim never looks at the backlog behind them.
local function claim(now, lease_until, worker, limit, cfg)
  if cfg.paused or limit <= 0 then return {} end
  promote(now, PROMOTE_PER_CLAIM)
  local popped = redis.call('ZPOPMIN', K.ready, math.min(limit, MAX_CLAIM))
  local n = #popped / 2
  local out = {}
  if n == 0 then return out end
  local members, ids, payloads = {}, {}, {}
  for i = 1, n do
    members[i] = popped[2 * i - 1]
    ids[i] = string.sub(members[i], SORT_KEY_LEN + 1)
    payloads[i] = pkey(ids[i])
  end
  redis.call('ZREM', K.wait, unpack(members))
  payloads = redis.call('MGET', unpack(payloads))
  local last = redis.call('INCRBY', K.token, n)
  for i = 1, n do
    out[i] = { ids[i], payloads[i], lease(ids[i], now, lease_until, worker, last - n + i) }
  end
  count('available', -n)
  count('running', n)
  return out
end

-- The earliest time a job may become claimable: { now } if a head is due,
-- { run_at } of the earliest scheduled head, or {} if none (or the queue is
-- paused).
local function next_due(now, cfg)
  if cfg.paused then return {} end
  if redis.call('ZCARD', K.ready) > 0 then return { now } end
  local first = redis.call('ZRANGE', K.sched, 0, 0, 'WITHSCORES')
  if #first == 0 then return {} end
  return { first[2] }
end
