-- One page of an audit of the queue's invariants (see wq_core::Audit): the
-- Rust side calls it page by page, so a large queue never blocks the
-- server for long, and each call judges what it reads in one atomic view.
-- ARGV: now, origin, phase, cursor, repair ('1' or '0'), budget.
--   'wait':   waiting jobs in `wait` after the member `cursor` ('' first);
--   'leases': `leases` by ZSCAN from `cursor` ('0' first);
--   'all':    running jobs not in `leases`, among ids of `all` after `cursor`.
-- Returns { woke, found, checked, cursor, extra }: found is a list of
-- { kind, id, group ('' for none), repaired } with kind h(eadless),
-- m(isplaced head) or u(nleased); checked counts the waiting jobs looked at
-- ('wait') or the running jobs found unleased ('all'); cursor is '' (or '0'
-- for 'leases') when the walk is over; extra, for 'leases', is the ids of
-- the running jobs seen and the queue's count of running jobs.
local cfg = config()
if not cfg then return redis.error_reply(UNKNOWN_QUEUE) end
local now, phase, cursor = ARGV[1], ARGV[3], ARGV[4]
local repair, budget = ARGV[5] == '1', tonumber(ARGV[6])
-- How far into a group's line the audit looks past finished entries for
-- the job that should head it.
local LINE_PEEK = 100

local found = {}
local function report(kind, id, g, repaired)
  found[#found + 1] = { kind, id, g or '', repaired and 1 or 0 }
end

local function waiting(st) return st == 'scheduled' or st == 'available' end

-- Whether a waiting job is where a claim or the promotion finds it: due
-- in `ready` or its session's index, or in `sched`.
local function placed(id, pr, ra, sq, s, cn)
  return redis.call('ZSCORE', ready_of(s), member(pr, ra, sq, id, cn)) ~= false
    or redis.call('ZSCORE', K.sched, id) ~= false
end

-- A running job without a lease entry gets one that has lapsed already
-- (its own expiry if earlier than now), so the next rescue takes it back.
local function check_lease(id, g)
  if redis.call('ZSCORE', K.leases, id) then return false end
  if repair then
    local at = tonumber(now)
    local lx = tonumber(redis.call('HGET', jkey(id), 'lx') or '')
    if lx and lx < at then at = lx end
    redis.call('HSET', jkey(id), 'lx', int(at))
    redis.call('ZADD', K.leases, at, id)
  end
  report('u', id, g, repair)
  return true
end

-- What the audit knows of each group met in this call: whether it is held,
-- and the job that should head it (the first entry of its line that is
-- not finished), with that entry's index.
local groups = {}

local function group(g)
  local known = groups[g]
  if known then return known end
  local info = { held = redis.call('SISMEMBER', K.held, g) == 1 }
  if not info.held then
    local line = redis.call('LRANGE', gkey(g), 0, LINE_PEEK - 1)
    for k, id in ipairs(line) do
      local st = redis.call('HGET', jkey(id), 'st')
      if st == 'running' or waiting(st) then
        info.head, info.index, info.state = id, k - 1, st
        break
      end
    end
  end
  groups[g] = info
  return info
end

-- Checks that a group not held has a head a claim can reach or that runs;
-- `seen` is the waiting job that led here, reported when the line (as far
-- as the audit looks) holds no unfinished job at all.
local function check_head(g, seen)
  local info = group(g)
  if info.held or info.checked then return end
  info.checked = true
  if not info.head then
    report('h', seen, g, false)
    return
  end
  if info.state == 'running' then
    check_lease(info.head, g)
    return
  end
  local f = redis.call('HMGET', jkey(info.head), 'pr', 'ra', 'sq', 's', 'cn')
  if placed(info.head, f[1], f[2], f[3], f[4], f[5]) then return end
  if repair then
    -- Finished entries before the head are what kept it from being placed
    -- when its predecessor left the line.
    if info.index > 0 then redis.call('LTRIM', gkey(g), info.index, -1) end
    requeue(info.head, now, nil, nil, true)
  end
  report('h', info.head, g, repair)
end

local checked = 0

if phase == 'wait' then
  local start = '-'
  if cursor ~= '' then start = '(' .. cursor end
  local members = redis.call('ZRANGE', K.wait, start, '+', 'BYLEX', 'LIMIT', 0, budget)
  for _, m in ipairs(members) do
    local id = string.sub(m, SORT_KEY_LEN + 1)
    local f = redis.call('HMGET', jkey(id), 'st', 'g', 'pr', 'ra', 'sq', 's', 'cn')
    if waiting(f[1]) then
      checked = checked + 1
      local g = f[2]
      local here = placed(id, f[3], f[4], f[5], f[6], f[7])
      if not g then
        if not here then
          if repair then requeue(id, now, nil, nil, true) end
          report('h', id, nil, repair)
        end
      else
        local info = group(g)
        if here and (info.held or info.head ~= id) then
          if repair then
            redis.call('ZREM', ready_of(f[6]), member(f[3], f[4], f[5], id, f[7]))
            redis.call('ZREM', K.sched, id)
            if f[6] then session(f[6]).dirty = true end
          end
          report('m', id, g, repair)
        end
        check_head(g, id)
      end
    end
  end
  local after = ''
  if #members == budget then after = members[#members] end
  return { flush(ARGV[2]), found, checked, after, {} }
end

-- A running job that is not the head of its group: nothing to repair (its
-- attempt is under way), only to report.
local function check_running(id, g)
  if not g then return end
  local info = group(g)
  if info.held or info.head ~= id then report('m', id, g, false) end
end

if phase == 'leases' then
  local page = redis.call('ZSCAN', K.leases, cursor, 'COUNT', budget)
  local running = {}
  local entries = page[2]
  for i = 1, #entries, 2 do
    local id = entries[i]
    local f = redis.call('HMGET', jkey(id), 'st', 'g')
    if f[1] == 'running' then
      running[#running + 1] = id
      check_running(id, f[2])
    end
  end
  local n = tonumber(redis.call('HGET', K.counts, 'running') or '0')
  return { flush(ARGV[2]), found, #running, page[1], { running, n } }
end

if phase == 'all' then
  local start = '-'
  if cursor ~= '' then start = '(' .. cursor end
  local ids = redis.call('ZRANGE', K.all, start, '+', 'BYLEX', 'LIMIT', 0, budget)
  for _, id in ipairs(ids) do
    local f = redis.call('HMGET', jkey(id), 'st', 'g')
    if f[1] == 'running' and check_lease(id, f[2]) then
      checked = checked + 1
      check_running(id, f[2])
    end
  end
  local after = ''
  if #ids == budget then after = ids[#ids] end
  return { flush(ARGV[2]), found, checked, after, {} }
end

return redis.error_reply('WQAUDIT unknown phase ' .. tostring(phase))
