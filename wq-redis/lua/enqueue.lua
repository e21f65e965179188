-- Stores a batch of jobs over one or more queues, in order, atomically.
-- KEYS: the base of each queue of the batch.
-- ARGV: now, origin, then for each queue its number of jobs, then the
-- jobs of every queue in KEYS order, ten arguments each: id, tenant,
-- group, session, priority, mode ('a': run at `time`; 'c': chained `time`
-- after the group's latest run_at), time, max_attempts, idempotency key,
-- payload.
-- Empty strings stand for absent values.
-- Returns { woke, results }, one entry per queue: woke is 1 when the
-- queue's workers were woken; results hold { 1, seq, run_at, state } for
-- a stored job, { 0, job } when the id or the idempotency key was already
-- known.
--
-- Redis does not undo a script that stops half way, so nothing is written
-- until every queue of the batch is known to exist and every read has
-- been done. Reads are done for the whole batch first and writes gathered
-- into one command per key where the order allows: one call per job (its
-- hash) plus a handful per queue. A job that heads a group whose gap
-- (group_gap) has not ended runs no earlier than its end.
local NOW = ARGV[1]
local now = tonumber(NOW)
local queues = #KEYS
local ARGS = 10

for q = 1, queues do
  use_queue(KEYS[q])
  if not config() then return redis.error_reply(UNKNOWN_QUEUE .. ': ' .. q) end
end

-- Reads one queue's part of the batch and what its queue knows already:
-- ids, idempotency keys, groups' chains.
local function read(first, n)
  local jobs = {}
  local ids, keyed = {}, {}
  for i = 1, n do
    local a = first + (i - 1) * ARGS
    local j = {
      id = ARGV[a], tenant = ARGV[a + 1], g = ARGV[a + 2], s = ARGV[a + 3], pr = ARGV[a + 4],
      mode = ARGV[a + 5], time = ARGV[a + 6], mx = ARGV[a + 7], ik = ARGV[a + 8], payload = ARGV[a + 9],
    }
    jobs[i] = j
    ids[i] = j.id
    if j.ik ~= '' then keyed[#keyed + 1] = j.ik end
  end

  local known_ids, known_keys = {}, {}
  for i, score in ipairs(batched('ZMSCORE', K.all, ids)) do
    if score then known_ids[ids[i]] = true end
  end
  for i, id in ipairs(batched('HMGET', K.idem, keyed)) do
    if id then known_keys[keyed[i]] = id end
  end

  -- Which jobs are new, in order (a known id first, then a known key); a
  -- repeat within the batch finds the first.
  local new = {}
  for _, j in ipairs(jobs) do
    j.known = (known_ids[j.id] and j.id) or (j.ik ~= '' and known_keys[j.ik]) or nil
    if not j.known then
      new[#new + 1] = j
      known_ids[j.id] = true
      if j.ik ~= '' then known_keys[j.ik] = j.id end
    end
  end

  local groups, last = {}, {}
  for _, j in ipairs(new) do
    if j.g ~= '' and last[j.g] == nil then
      groups[#groups + 1] = j.g
      last[j.g] = 0
    end
  end
  for i, v in ipairs(batched('HMGET', K.glast, groups)) do
    last[groups[i]] = tonumber(v or '0')
  end
  -- The end of a gap still to come, for each group the batch will find
  -- empty: its first job there heads it.
  local gaps = {}
  for i, v in ipairs(batched('ZMSCORE', K.gap, groups)) do
    if v and tonumber(v) > now and redis.call('LLEN', gkey(groups[i])) == 0 then
      gaps[groups[i]] = tonumber(v)
    end
  end
  for _, j in ipairs(new) do
    if j.s ~= '' then session(j.s) end
  end
  return { jobs = jobs, new = new, groups = groups, last = last, gaps = gaps, sessions = sessions }
end

-- Writes one queue's new jobs; returns its results.
local function write(part)
  local jobs, new, groups, last, gaps = part.jobs, part.new, part.groups, part.last, part.gaps
  local seq = redis.call('INCRBY', K.seq, #new) - #new
  local lines, all, payloads, wait, ready, sched, idem = {}, {}, {}, {}, {}, {}, {}
  local changed = {}
  for _, j in ipairs(new) do
    seq = seq + 1
    j.sq = int(seq)
    local run_at = j.time
    if j.mode == 'c' then
      local base = now
      if j.g ~= '' then base = math.max(last[j.g], now) end
      run_at = int(base + tonumber(j.time))
    end
    if j.g ~= '' and not lines[j.g] and gaps[j.g] and tonumber(run_at) < gaps[j.g] then
      run_at = int(gaps[j.g])
    end
    j.ra = run_at
    if j.g ~= '' then
      if tonumber(run_at) > last[j.g] then
        last[j.g] = tonumber(run_at)
        changed[j.g] = run_at
      end
      lines[j.g] = lines[j.g] or {}
      push(lines[j.g], j.id)
    end
  end
  -- A job heads its group when the group's line was empty before it.
  local heads = {}
  for _, g in ipairs(groups) do
    local len = batched('RPUSH', gkey(g), lines[g])
    if len[#len] == #lines[g] then heads[lines[g][1]] = true end
    -- Every job of the group, finished ones too, for listing (list.lua).
    local listed = {}
    for _, id in ipairs(lines[g]) do push(listed, 0, id) end
    batched('ZADD', gjkey(g), listed)
  end
  local tenants = {}
  local glast = {}
  for g, v in pairs(changed) do push(glast, g, v) end

  for _, j in ipairs(new) do
    j.st = 'scheduled'
    if tonumber(j.ra) <= now then j.st = 'available' end
    local fields = { jkey(j.id), 'sq', j.sq, 'pr', j.pr, 'ra', j.ra, 'at', 0, 'mx', j.mx, 'st', j.st, 'ca', NOW, 'ua', NOW }
    if j.tenant ~= '' then
      push(fields, 'tn', j.tenant)
      tenants[j.tenant] = tenants[j.tenant] or {}
      push(tenants[j.tenant], 0, j.id)
    end
    if j.g ~= '' then push(fields, 'g', j.g) end
    if j.s ~= '' then push(fields, 's', j.s) end
    if j.ik ~= '' then
      push(fields, 'ik', j.ik)
      push(idem, j.ik, j.id)
    end
    redis.call('HSET', unpack(fields))
    push(all, 0, j.id)
    push(payloads, pkey(j.id), j.payload)
    local m = member(j.pr, j.ra, j.sq, j.id)
    push(wait, 0, m)
    local session_name = j.s ~= '' and j.s
    if j.g == '' or heads[j.id] then
      if j.st ~= 'available' then
        push(sched, j.ra, j.id)
      elseif session_name then
        redis.call('ZADD', srkey(session_name), 0, m)
      else
        push(ready, 0, m)
      end
    end
    count(j.st, 1)
    session_moved(session_name, nil, j.st)
  end

  batched('ZADD', K.all, all)
  batched('MSET', nil, payloads)
  batched('ZADD', K.wait, wait)
  batched('ZADD', K.ready, ready)
  batched('ZADD', K.sched, sched)
  batched('HSET', K.idem, idem)
  batched('HSET', K.glast, glast)
  for t, listed in pairs(tenants) do batched('ZADD', tnkey(t), listed) end
  if #new > 0 then woke = true end

  local out = {}
  for i, j in ipairs(jobs) do
    if j.known then
      out[i] = { 0, job_reply(j.known) }
    else
      out[i] = { 1, j.sq, j.ra, j.st }
    end
  end
  return out
end

local parts = {}
local first = 3 + queues
for q = 1, queues do
  use_queue(KEYS[q])
  local n = tonumber(ARGV[2 + q])
  parts[q] = read(first, n)
  first = first + n * ARGS
end

local woken, results = {}, {}
for q = 1, queues do
  use_queue(KEYS[q])
  -- The sessions read for this queue, before anything was written.
  sessions = parts[q].sessions
  results[q] = write(parts[q])
  woken[q] = flush(ARGV[2])
end
return { woken, results }
