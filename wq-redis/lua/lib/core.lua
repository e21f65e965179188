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
--   counts  hash: state -> jobs, and 'finished': jobs ever finished
--   ready   zset, score 0: due heads by member()
--   wait    zset, score 0: every waiting job by member(), for positions
--   sched   zset: scheduled heads by run_at
--   leases  zset: running jobs by lease expiry
--   done    zset: completed and cancelled jobs by finished_at
--   dead    zset: dead jobs by finished_at
--   idem    hash: idempotency key -> job id
--   all     zset, score 0: every job id, for listing in id order
--   gj:<g>, tn:<t>  zsets, score 0: every job of a group, of a tenant, by id
--   glast   hash: group -> latest run_at, for time chaining
--   held    set: groups held by their dead head
--   gap     zset: emptied groups by the end of their gap (group_gap)
--   seq     counter: enqueue order
--   token   counter: fencing tokens
--   sessions zset, score 0: every session's name, for listing by name
--   open    zset, score 0: sessions that may start a job now, by their
--           best due head: that head's sort key followed by the name
--   stimer  zset: sessions waiting for next_start, by next_start
-- and per session (skey, srkey): its hash and its due heads.
local K = setmetatable({}, { __index = function(t, name)
  local key = B .. ':' .. name
  t[name] = key
  return key
end })
local WAKE_CHANNEL = B .. ':wake'
local LEASE_LAPSED = 'lease expired: the worker stopped heartbeating (crashed or stalled)'
-- member() is a 31-character sort key followed by the job id.
local SORT_KEY_LEN = 31
-- Whether a member is a job between steps (see member()), which runs
-- without a start under its session's rate.
local function continued(m) return string.sub(m, 5, 5) == '0' end

local function jkey(id) return B .. ':j:' .. id end
local function pkey(id) return B .. ':p:' .. id end
-- A job's finished runs and a completed job's output, each in a key of its
-- own like the payload: one record of a run passes the 64 bytes up to
-- which Redis keeps a hash compact, and would make every retained job's
-- hash several times larger (measured: 296 vs 1,387 bytes).
local function hkey(id) return B .. ':h:' .. id end
local function okey(id) return B .. ':o:' .. id end
local function gkey(g) return B .. ':g:' .. g end
-- Every job of a group, and of a tenant, by id: what listing reads.
local function gjkey(g) return B .. ':gj:' .. g end
local function tnkey(t) return B .. ':tn:' .. t end
-- A session's hash: mr max running, sp spacing and jt jitter (µs; no sp
-- without a rate), rs/rp/rj the rate as set (starts, per and jitter in
-- ns, read back by operators), pz paused (pw why, while paused), rn running, wt waiting, ns
-- next_start (µs), ro '1' once a claim's promotion saw next_start pass
-- (the rate holds the session back no more until its next start), ix
-- where it sits: '' nowhere, 't' in stimer, else its member in open.
local function skey(s) return B .. ':s:' .. s end
-- A session's due heads, by member().
local function srkey(s) return B .. ':sr:' .. s end

-- Lua turns numbers into text with 14 digits; timestamps need 16.
local function int(n) return string.format('%d', n) end

-- Count changes are summed and written once, at the end of the script.
local delta = {}
local woke = false
-- Sessions read by this script, by name (see session()).
local sessions = {}

-- Every job counted into a final state finished: 'finished' only grows.
local FINAL = { completed = true, dead = true, cancelled = true }
local function count(state, n)
  delta[state] = (delta[state] or 0) + n
  if n > 0 and FINAL[state] then delta.finished = (delta.finished or 0) + n end
end

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

-- A session's state, read once per script and kept here: changes to it
-- are made on this table, marked dirty, and written back (with the
-- session's place in the indexes re-evaluated) by settle().
local SESSION_FIELDS = { 'mr', 'sp', 'jt', 'pz', 'rn', 'wt', 'ns', 'ro', 'ix' }
local function session(name)
  local s = sessions[name]
  if s then return s end
  local h = redis.call('HMGET', skey(name), unpack(SESSION_FIELDS))
  s = {
    name = name, mr = tonumber(h[1] or ''), sp = tonumber(h[2] or ''), jt = tonumber(h[3] or '0'),
    paused = h[4] == '1', running = tonumber(h[5] or '0'), waiting = tonumber(h[6] or '0'),
    ns = tonumber(h[7] or ''), rate_open = h[8] == '1', ix = h[9] or '', exists = h[5] ~= false,
    dirty = false,
  }
  sessions[name] = s
  return s
end

local function is_waiting(st) return st == 'scheduled' or st == 'available' end

-- Counts a job of session `name` (false for none) moving from state
-- `from` to `to` (either nil for a job that appears or goes): its running
-- and waiting counters follow, and the session is re-evaluated.
local function session_moved(name, from, to)
  if not name then return end
  local s = session(name)
  if from == 'running' then s.running = s.running - 1 elseif is_waiting(from) then s.waiting = s.waiting - 1 end
  if to == 'running' then s.running = s.running + 1 elseif is_waiting(to) then s.waiting = s.waiting + 1 end
  s.dirty = true
end

-- The zset a due head waits in: its session's, or the queue's.
local function ready_of(name)
  if name then return srkey(name) end
  return K.ready
end

-- Puts a session where it belongs: in `open`, keyed by its best due head,
-- when it may start a job; in `stimer` when only its rate holds it back
-- (a start under the rate puts it there, even when next_start is already
-- past: only a promotion, at the next claim, opens it, so a rate allows
-- one start per claim); else nowhere, so that no claim ever looks at the
-- heads of a paused or full session. When `wake` is set, a session that
-- becomes open, or starts waiting for its timer, wakes the workers (who
-- then learn when it will be due).
local function place(s, wake)
  local want, at = '', nil
  if not s.paused and (not s.mr or s.running < s.mr) then
    local best = redis.call('ZRANGE', srkey(s.name), 0, 0)[1]
    if best then
      -- A head between steps takes no start: the rate does not hold it.
      if s.sp and s.ns and not s.rate_open and not continued(best) then
        want, at = 't', s.ns
      else
        want = string.sub(best, 1, SORT_KEY_LEN) .. s.name
      end
    end
  end
  if want == s.ix and want ~= 't' then return end
  if s.ix == 't' then
    if want ~= 't' then redis.call('ZREM', K.stimer, s.name) end
  elseif s.ix ~= '' then
    redis.call('ZREM', K.open, s.ix)
  end
  if want == 't' then
    redis.call('ZADD', K.stimer, at, s.name)
    if wake and s.ix == '' then woke = true end
  elseif want ~= '' then
    redis.call('ZADD', K.open, 0, want)
    if wake and (s.ix == '' or s.ix == 't') then woke = true end
  end
  s.ix = want
end

-- Writes back every session changed since the last call, each in its
-- right place; a session seen for the first time is created (and the
-- queue marked as one with sessions).
local function settle(wake)
  for name, s in pairs(sessions) do
    if s.dirty then
      place(s, wake)
      local fields = { skey(name), 'rn', int(s.running), 'wt', int(s.waiting), 'ix', s.ix, 'ro', s.rate_open and '1' or '0' }
      if s.ns then push(fields, 'ns', int(s.ns)) end
      redis.call('HSET', unpack(fields))
      if not s.exists then
        redis.call('ZADD', K.sessions, 0, name)
        redis.call('HSET', K.cfg, 'ss', '1')
        s.exists = true
      end
      s.dirty = false
    end
  end
end

-- Writes what was gathered, publishes a wake-up if work may have become
-- claimable, and says whether it did.
local function flush(origin)
  settle(true)
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
  sessions = {}
end

-- The queue's settings, or nil when it was never declared. `sessions`
-- says whether any session was ever created in it: a queue without lets
-- the claim and next_due skip every session index.
local function config()
  local c = redis.call('HMGET', K.cfg, 'name', 'paused', 'hold', 'kd', 'kx', 'gg', 'ss')
  if not c[1] then return nil end
  return {
    paused = c[2] == '1', hold = c[3] == '1', keep_done = tonumber(c[4]), keep_dead = tonumber(c[5]),
    gap = tonumber(c[6] or '0'), sessions = c[7] == '1',
  }
end

local UNKNOWN_QUEUE = 'WQUNKNOWN queue not declared'

-- A job's place in the queue's order: priority, then '0' for a job between
-- steps (its `cn`, '1' from a step until its next run ends otherwise) and
-- '1' for the rest, then run_at and enqueue order, as fixed-width hex so
-- that the lexicographic order of a zset with equal scores is that order
-- (a run_at before the epoch sorts as the epoch). A job between steps has
-- started already, so it comes first at its priority (docs/sessions.md).
local function member(pr, ra, sq, id, cn)
  local r = tonumber(ra)
  if r < 0 then r = 0 end
  local fresh = cn == '1' and '0' or '1'
  return string.format('%04x%s%014x%012x', tonumber(pr) + 32768, fresh, r, tonumber(sq)) .. id
end


local function set_state(jk, from, to, now)
  redis.call('HSET', jk, 'st', to, 'ua', now)
  count(from, -1)
  count(to, 1)
end

-- Most runs a job's history keeps (wq_core::attempt::MAX_HISTORY).
local MAX_HISTORY = 20
-- What the record of a run needs of its job, in this order: the attempt,
-- the lease's start and worker, the number of records kept (`hn`), and
-- updated_at.
local RUN_FIELDS = { 'at', 'ls', 'wk', 'hn', 'ua' }

-- Appends to job `id`'s history the run its lease held, ended at `now` as
-- `outcome` with message `err` (nil for none), as the JSON of a
-- wq_core::Attempt, dropping the oldest record past MAX_HISTORY; the
-- arguments after `err` are RUN_FIELDS as read. Pushes the new count onto
-- `fields`, the job's fields still to be written. A job without a lease
-- ran nothing to record.
local function record_run(fields, id, now, outcome, err, attempt, started, worker, n, ua)
  if not worker or worker == '' then return end
  -- A lease taken before its start was kept counts from the claim's update.
  if not started or started == '' then started = ua end
  -- Numbers go in as the text they are: Lua prints a timestamp with 14
  -- digits, cjson too.
  local rec = '{"attempt":' .. attempt .. ',"started_at":' .. started .. ',"ended_at":' .. now
    .. ',"worker":' .. cjson.encode(worker) .. ',"outcome":"' .. outcome .. '"'
  if err then rec = rec .. ',"error":' .. cjson.encode(err) end
  rec = rec .. '}'
  local list = n and redis.call('GET', hkey(id))
  if not list then
    redis.call('SET', hkey(id), '[' .. rec .. ']')
    push(fields, 'hn', '1')
    return
  end
  n = tonumber(n)
  if n >= MAX_HISTORY then
    -- Where one record ends and the next begins: text no JSON string
    -- holds, its quotes being escaped.
    list = '[' .. string.sub(list, string.find(list, '},{"attempt":', 1, true) + 2)
    n = n - 1
  end
  redis.call('SET', hkey(id), string.sub(list, 1, -2) .. ',' .. rec .. ']')
  push(fields, 'hn', int(n + 1))
end

-- The fields finish() and requeue() need, in this order.
local FINISH_FIELDS = { 'st', 'pr', 'ra', 'sq', 'g', 's', 'cn' }

-- Puts a job that heads its group (or has none) back in the indexes, as
-- scheduled or available by its run_at; returns the state. `f` holds
-- FINISH_FIELDS when the caller has them (with ra as it will be), `extra`
-- more field/value pairs to write. A job that waited behind its group's
-- head (`waiting`) is in K.wait already. A due job of a session waits in
-- the session's own index.
local function requeue(id, now, f, extra, waiting)
  local jk = jkey(id)
  f = f or redis.call('HMGET', jk, unpack(FINISH_FIELDS))
  local m = member(f[2], f[3], f[4], id, f[7])
  local state = 'scheduled'
  if tonumber(f[3]) <= tonumber(now) then
    state = 'available'
    redis.call('ZADD', ready_of(f[6]), 0, m)
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
  session_moved(f[6], f[1], state)
  woke = true
  return state
end

-- Deletes a job outright; false if it did not exist.
local function remove(id)
  local jk = jkey(id)
  local f = redis.call('HMGET', jk, 'st', 'ik', 'g', 'tn')
  if not f[1] then return false end
  redis.call('DEL', jk, pkey(id), hkey(id), okey(id))
  redis.call('ZREM', K.all, id)
  if f[3] then redis.call('ZREM', gjkey(f[3]), id) end
  if f[4] then redis.call('ZREM', tnkey(f[4]), id) end
  redis.call('ZREM', K.done, id)
  redis.call('ZREM', K.dead, id)
  count(f[1], -1)
  if f[2] and redis.call('HGET', K.idem, f[2]) == id then redis.call('HDEL', K.idem, f[2]) end
  return true
end

-- The end of an emptied group's gap, if it is still to come at `now`: a
-- job that becomes the head of the group runs no earlier.
local function gap_until(g, now)
  local at = tonumber(redis.call('ZSCORE', K.gap, g) or '')
  if at and at > tonumber(now) then return at end
  return nil
end

-- Indexes `next`, the group's new head after its old one left at `now`,
-- with run_at no earlier than the end of the queue's group gap (a queue
-- without a gap leaves run_at, and so the head's place in the queue's
-- order, as it was); or forgets a group
-- whose line is empty and whose chain no longer matters, keeping the end
-- of its gap for a job enqueued into it meanwhile.
local function advance(g, next, now, cfg)
  local until_ = tonumber(now) + cfg.gap
  if next then
    local f = redis.call('HMGET', jkey(next), unpack(FINISH_FIELDS))
    if cfg.gap > 0 and tonumber(f[3]) < until_ then
      -- Its sort key changes with run_at: `wait` gets the new one.
      redis.call('ZREM', K.wait, member(f[2], f[3], f[4], next, f[7]))
      f[3] = int(until_)
      requeue(next, now, f, { 'ra', f[3] })
    else
      requeue(next, now, f, nil, true)
    end
  else
    if cfg.gap > 0 then redis.call('ZADD', K.gap, 'GT', until_, g) end
    local last = redis.call('HGET', K.glast, g)
    if not last or tonumber(last) <= tonumber(now) then redis.call('HDEL', K.glast, g) end
  end
end

-- Takes a terminal job out of its group's line (or holds the group on it:
-- a held group's line starts with its dead head). `was_dead` says whether
-- the job was dead before, so that it might have held the group.
local function leave_group(g, id, hold, now, was_dead, cfg)
  local gk = gkey(g)
  local first = redis.call('LRANGE', gk, 0, 1)
  if first[1] ~= id then
    redis.call('LREM', gk, 1, id)
  elseif hold then
    redis.call('SADD', K.held, g)
  else
    redis.call('LPOP', gk)
    if was_dead then redis.call('SREM', K.held, g) end
    advance(g, first[2], now, cfg)
  end
end

-- Ends a job in a terminal state and lets its group move on (unless a
-- dead head holds it); `f` holds FINISH_FIELDS as read before any change,
-- `extra` more field/value pairs to write. The lease, if any, goes.
local function finish(id, f, state, now, cfg, extra)
  local jk = jkey(id)
  if is_waiting(f[1]) then
    local m = member(f[2], f[3], f[4], id, f[7])
    redis.call('ZREM', ready_of(f[6]), m)
    redis.call('ZREM', K.wait, m)
    redis.call('ZREM', K.sched, id)
  end
  local fields = { jk, 'st', state, 'ua', now, 'fa', now, 'tk', '', 'lx', '', 'wk', '', 'ls', '' }
  if extra then
    for _, v in ipairs(extra) do fields[#fields + 1] = v end
  end
  redis.call('HSET', unpack(fields))
  count(f[1], -1)
  count(state, 1)
  session_moved(f[6], f[1], state)
  if f[5] then leave_group(f[5], id, state == 'dead' and cfg.hold, now, false, cfg) end
  if state == 'dead' then
    redis.call('ZADD', K.dead, now, id)
  elseif cfg.keep_done == 0 then
    remove(id)
  else
    push(later.done, now, id)
  end
end

-- Deletes a terminal job; a group it held moves on.
local function purge(id, now, cfg)
  local f = redis.call('HMGET', jkey(id), 'g', 'st')
  if remove(id) and f[1] then leave_group(f[1], id, false, now, f[2] == 'dead', cfg) end
end

-- Moves up to `max` scheduled heads whose time has come into their ready
-- index (the queue's or their session's); then lets up to `max` sessions
-- whose next_start has come start again, to be opened by the next
-- settle(), and forgets the gaps of emptied groups that have ended.
-- Sessions are settled in between (`wake` as for settle()), so that one
-- whose promoted head put it on a past timer opens too. Returns the heads
-- moved.
local function promote(now, max, cfg, wake)
  local ids = redis.call('ZRANGEBYSCORE', K.sched, '-inf', now, 'LIMIT', 0, max)
  for _, id in ipairs(ids) do
    local jk = jkey(id)
    local f = redis.call('HMGET', jk, 'st', 'pr', 'ra', 'sq', 's', 'cn')
    redis.call('ZREM', K.sched, id)
    redis.call('ZADD', ready_of(f[5]), 0, member(f[2], f[3], f[4], id, f[6]))
    set_state(jk, f[1], 'available', now)
    if f[5] then session(f[5]).dirty = true end
  end
  if cfg.sessions then
    settle(wake)
    for _, name in ipairs(redis.call('ZRANGEBYSCORE', K.stimer, '-inf', now, 'LIMIT', 0, max)) do
      local s = session(name)
      s.rate_open = true
      s.dirty = true
    end
  end
  -- Only a queue with a gap writes gaps (one whose gap was set to zero
  -- leaves its last few to be read past their end and ignored).
  if cfg.gap > 0 then redis.call('ZREMRANGEBYSCORE', K.gap, '-inf', now) end
  return #ids
end

-- A job as the client decodes it: id, payload, the hash's fields, its
-- history and its output (nil for none).
local function job_reply(id)
  local f = redis.call('HGETALL', jkey(id))
  return { id, redis.call('GET', pkey(id)), f, redis.call('GET', hkey(id)), redis.call('GET', okey(id)) }
end
