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
  -- A new claim clears `ak`: from now on, the last acknowledgement's token
  -- is stale (see ack_one).
  local changes = { st = 'running', ua = now, at = int(attempt), tk = int(token), lx = lease_until, wk = worker, ak = '' }
  redis.call('HSET', jk, 'st', changes.st, 'ua', now, 'at', changes.at, 'tk', changes.tk, 'lx', lease_until, 'wk', worker, 'ak', '')
  push(later.lease, lease_until, id)
  return patch(h, changes)
end

-- Claims up to `limit` due heads in priority order, each under a new lease
-- with its own fencing token; returns the jobs and their tokens. Only
-- ungrouped jobs and group heads are ever in `ready`, so a claim never
-- looks at the backlog behind them.
local function claim(now, lease_until, worker, limit, cfg)
  if cfg.paused or limit <= 0 then return {}, {} end
  promote(now, PROMOTE_PER_CLAIM)
  local popped = redis.call('ZPOPMIN', K.ready, math.min(limit, MAX_CLAIM))
  local n = #popped / 2
  local out, tokens = {}, {}
  if n == 0 then return out, tokens end
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
    tokens[i] = last - n + i
    out[i] = { ids[i], payloads[i], lease(ids[i], now, lease_until, worker, tokens[i]) }
  end
  count('available', -n)
  count('running', n)
  return out, tokens
end

-- A worker's last turn, so that the same turn sent again (its reply lost
-- on the way back) gets what the first try did instead of claiming more
-- and leaving the first claims leased to nobody. One key per worker and
-- queue holds only the last turn: a worker's turns on one queue follow
-- each other, and a retry comes before the next turn.
-- Value: "<turn>\n<outcome> ...\n<id> <token> ...".
local function turn_key(worker) return B .. ':turn:' .. worker end

local function words(s)
  local out = {}
  for w in string.gmatch(s, '%S+') do out[#out + 1] = w end
  return out
end

-- What `turn` (a decimal string, '' for none) did if it is the worker's
-- last turn: { outcomes = {...}, claims = { id, token, ... } }, else nil.
local function recall(worker, turn)
  if turn == '' then return nil end
  local v = redis.call('GET', turn_key(worker))
  if not v then return nil end
  local a = string.find(v, '\n', 1, true)
  local b = a and string.find(v, '\n', a + 1, true)
  if not b or string.sub(v, 1, a - 1) ~= turn then return nil end
  return { outcomes = words(string.sub(v, a + 1, b - 1)), claims = words(string.sub(v, b + 1)) }
end

-- Keeps what a turn did for a few lease lengths: long enough for every
-- retry (after the lease lapses, its claims are rescued anyway), short
-- enough that a stopped worker's key goes away. A turn that did nothing
-- has nothing to repeat and writes nothing.
local function remember(worker, turn, outcomes, jobs, tokens, now, lease_until)
  if turn == '' or (#outcomes == 0 and #jobs == 0) then return end
  local claims = {}
  for i, j in ipairs(jobs) do push(claims, j[1], int(tokens[i])) end
  local ttl = math.max(1000, math.floor(3 * (tonumber(lease_until) - tonumber(now)) / 1000))
  local v = turn .. '\n' .. table.concat(outcomes, ' ') .. '\n' .. table.concat(claims, ' ')
  redis.call('SET', turn_key(worker), v, 'PX', int(ttl))
end

-- The jobs a remembered turn claimed that still run under the token it
-- gave them (one rescued or finished since is left out), as claim()
-- returns them; nothing new is claimed.
local function replay(claims)
  local out = {}
  for i = 1, #claims, 2 do
    local id, token = claims[i], claims[i + 1]
    local f = redis.call('HMGET', jkey(id), 'st', 'tk')
    if f[1] == 'running' and f[2] == token then out[#out + 1] = job_reply(id) end
  end
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
