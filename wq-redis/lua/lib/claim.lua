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
-- returns the job's fields as written, and its history (false for none).
local function lease(id, now, lease_until, worker, token)
  local jk = jkey(id)
  local h = redis.call('HGETALL', jk)
  local attempt, ran = 1, false
  for i = 1, #h, 2 do
    if h[i] == 'at' then
      attempt = tonumber(h[i + 1]) + 1
    elseif h[i] == 'hn' then
      ran = true
    end
  end
  -- A new claim clears `ak`: from now on, the last acknowledgement's token
  -- is stale (see ack_one).
  local changes = { st = 'running', ua = now, at = int(attempt), tk = int(token), lx = lease_until, wk = worker, ak = '', ls = now }
  redis.call('HSET', jk, 'st', changes.st, 'ua', now, 'at', changes.at, 'tk', changes.tk, 'lx', lease_until, 'wk', worker, 'ak', '', 'ls', now)
  push(later.lease, lease_until, id)
  return patch(h, changes), ran and redis.call('GET', hkey(id))
end

-- Takes up to `limit` due heads in key order from two sources: the
-- queue's `ready` (heads without a session) and the open sessions, each
-- standing in `open` for its best head. A session taken from gives its
-- next head a turn only while it may start another job in this claim:
-- below max_running counting this claim's starts, and no rate (a rate
-- allows one start per claim, as next_start moves past `now`). A session
-- not in `open` is never looked at; one that is reads, in one call, the
-- most heads this claim could take from it. Returns the members taken
-- and, for each, its session (false for none).
local function pick(limit)
  local free = redis.call('ZRANGE', K.ready, 0, limit - 1)
  -- Candidates in key order: { sort key, session name }.
  local cands = {}
  for i, m in ipairs(redis.call('ZRANGE', K.open, 0, limit - 1)) do
    cands[i] = { string.sub(m, 1, SORT_KEY_LEN), string.sub(m, SORT_KEY_LEN + 1) }
  end
  -- Per session taken from: its heads read ahead, and how many were taken.
  local lines = {}
  local members, owners, taken = {}, {}, {}
  local a = 1
  while #members < limit do
    local m, c = free[a], cands[1]
    if not m and not c then break end
    if c and (not m or c[1] < string.sub(m, 1, SORT_KEY_LEN)) then
      table.remove(cands, 1)
      local name = c[2]
      local s = session(name)
      local line = lines[name]
      if not line then
        local room = limit - #members
        if s.sp then room = 1 elseif s.mr then room = math.min(room, s.mr - s.running) end
        line = { heads = redis.call('ZRANGE', srkey(name), 0, room - 1), used = 0 }
        lines[name] = line
      end
      line.used = line.used + 1
      members[#members + 1] = line.heads[line.used]
      owners[#members] = name
      s.running = s.running + 1
      s.waiting = s.waiting - 1
      s.dirty = true
      local nxt = line.heads[line.used + 1]
      if nxt then
        local key = string.sub(nxt, 1, SORT_KEY_LEN)
        local at = #cands + 1
        for i, other in ipairs(cands) do
          if key < other[1] then
            at = i
            break
          end
        end
        table.insert(cands, at, { key, name })
      end
    else
      members[#members + 1] = m
      owners[#members] = false
      taken[#taken + 1] = m
      a = a + 1
    end
  end
  if #taken > 0 then redis.call('ZREM', K.ready, unpack(taken)) end
  for name, line in pairs(lines) do
    redis.call('ZREM', srkey(name), unpack(line.heads, 1, line.used))
  end
  return members, owners
end

-- The least time from one start of session `s` to its next, after a start
-- under `token` (wq_core::Rate::spacing_after): the spacing plus
-- jitter × ((token × 40503) mod 65536) / 65536, rounded down. The product
-- is taken in two parts so that every step stays exact in a double for
-- any jitter up to a year.
local function spacing_after(s, token)
  local h = (token * 40503) % 65536
  local whole = math.floor(s.jt / 65536)
  return s.sp + whole * h + math.floor((s.jt - whole * 65536) * h / 65536)
end

-- Claims up to `limit` due heads in priority order, each under a new lease
-- with its own fencing token; returns the jobs and their tokens. Only
-- ungrouped jobs and group heads are ever in `ready` or a session's
-- index, so a claim never looks at the backlog behind them; a queue with
-- no open session pops `ready` alone.
local function claim(now, lease_until, worker, limit, cfg)
  if cfg.paused or limit <= 0 then return {}, {} end
  limit = math.min(limit, MAX_CLAIM)
  -- Sessions changed by this call's acknowledgements first (their wake-up
  -- is for other workers too), then those the promotion opens, which the
  -- claim takes itself.
  settle(true)
  promote(now, PROMOTE_PER_CLAIM, cfg, false)
  settle(false)
  local members, owners
  if cfg.sessions and redis.call('ZCARD', K.open) > 0 then
    members, owners = pick(limit)
  else
    local popped = redis.call('ZPOPMIN', K.ready, limit)
    members = {}
    for i = 1, #popped / 2 do members[i] = popped[2 * i - 1] end
  end
  local n = #members
  local out, tokens = {}, {}
  if n == 0 then return out, tokens end
  local ids, payloads = {}, {}
  for i = 1, n do
    ids[i] = string.sub(members[i], SORT_KEY_LEN + 1)
    payloads[i] = pkey(ids[i])
  end
  redis.call('ZREM', K.wait, unpack(members))
  payloads = redis.call('MGET', unpack(payloads))
  local last = redis.call('INCRBY', K.token, n)
  local at = tonumber(now)
  for i = 1, n do
    tokens[i] = last - n + i
    local fields, history = lease(ids[i], now, lease_until, worker, tokens[i])
    -- A job that runs holds no output: only a completion stores one.
    out[i] = { ids[i], payloads[i], fields, history, false }
    local s = owners and owners[i] and session(owners[i])
    -- A job between steps has had its start: the rate keeps its time.
    if s and s.sp and not continued(members[i]) then
      s.ns = at + spacing_after(s, tokens[i])
      s.rate_open = false
    end
  end
  count('available', -n)
  count('running', n)
  settle(false)
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

-- The earliest time a job may become claimable: { now } if a head
-- without a session is due or a session is open, else the earliest of the
-- first scheduled head's run_at and the first next_start a session waits
-- for (`now` if that has passed: the next claim opens it), or {} if none
-- (or the queue is paused). A paused or full session has no entry to
-- answer with: a worker never spins on one.
local function next_due(now, cfg)
  if cfg.paused then return {} end
  if redis.call('ZCARD', K.ready) > 0 then return { now } end
  if cfg.sessions and redis.call('ZCARD', K.open) > 0 then return { now } end
  local first = redis.call('ZRANGE', K.sched, 0, 0, 'WITHSCORES')[2]
  if cfg.sessions then
    local timer = redis.call('ZRANGE', K.stimer, 0, 0, 'WITHSCORES')[2]
    if timer then
      timer = int(math.max(tonumber(timer), tonumber(now)))
      if not first or tonumber(timer) < tonumber(first) then first = timer end
    end
  end
  if not first then return {} end
  return { first }
end
