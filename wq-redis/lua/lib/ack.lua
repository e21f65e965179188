-- The fields an acknowledgement reads: FINISH_FIELDS, then the lease, the
-- most attempts, the cancellation flag, the token of the last
-- acknowledgement applied, the last error, and RUN_FIELDS.
local ACK_FIELDS = { 'st', 'pr', 'ra', 'sq', 'g', 's', 'cn', 'tk', 'lx', 'mx', 'cr', 'ak', 'er', unpack(RUN_FIELDS) }
-- Where RUN_FIELDS start in ACK_FIELDS; the first is the attempt.
local ACK_RUN = 14

-- How a run acknowledged with `action` ends, when neither completed nor
-- cancelled nor dead for want of attempts.
local RUN_OUTCOMES = { r = 'retried', d = 'deferred', s = 'continued', l = 'released', k = 'dead' }
-- The actions whose message is the run's error (a failure or a reason to
-- wait), whatever the run's outcome.
local RUN_ERRORS = { r = true, d = true, k = true }

local function run_outcome(action, cancelled, exhausted)
  if action == 'c' then return 'completed' end
  if cancelled then return 'cancelled' end
  if action == 'r' and exhausted then return 'dead' end
  return RUN_OUTCOMES[action]
end

-- Puts back a running job whose run ended in a retry, a deferral, a step
-- or a release; `attempt` is the run's, `fields` what the acknowledgement
-- writes in any case. Returns the job's new state.
local function give_back(id, f, action, run_at, msg, now, attempt, fields)
  local extra = { 'tk', '', 'lx', '', 'wk', '', 'ls', '', unpack(fields) }
  local given_back = int(math.max(attempt - 1, 0))
  -- Between steps after a step, fresh after anything else (written only
  -- when it changes).
  local cn = action == 's' and '1' or ''
  if (f[7] or '') ~= cn then
    f[7] = cn
    push(extra, 'cn', cn)
  end
  if action == 'r' then
    f[3] = run_at
    push(extra, 'er', msg)
    push(extra, 'ra', run_at)
  elseif action == 'd' then
    f[3] = run_at
    push(extra, 'er', msg)
    push(extra, 'ra', run_at)
    push(extra, 'at', given_back)
  elseif action == 's' then
    f[3] = run_at
    push(extra, 'sp', msg)
    push(extra, 'ra', run_at)
    push(extra, 'at', given_back)
  else
    push(extra, 'at', given_back)
  end
  return requeue(id, now, f, extra)
end

-- Applies one acknowledgement if its token holds a live lease on a running
-- job, recording the run in the job's history; returns the job's new
-- state, 'stale' or 'notfound'.
-- action: c(omplete), with the output as `msg` ('' for none), r(etry),
-- d(efer), k(ill), l (release), s(tep): continue at the step `msg`.
--
-- The token of an applied acknowledgement stays in the job as `ak` until
-- the next claim, or a retry of the dead job, clears it: the same
-- acknowledgement sent again, because its reply was lost on the way back,
-- answers with the job's state instead of 'stale' (which would say the
-- lease had lapsed), while an old token after a newer claim still answers
-- 'stale'.
local function ack_one(id, token, action, run_at, msg, now, cfg)
  local f = redis.call('HMGET', jkey(id), unpack(ACK_FIELDS))
  if not f[1] then return 'notfound' end
  if f[1] ~= 'running' or f[8] ~= token or tonumber(f[9]) <= tonumber(now) then
    if f[12] == token and f[1] ~= 'running' then return f[1] end
    return 'stale'
  end
  push(later.unlease, id)
  local attempt = tonumber(f[ACK_RUN])
  local outcome = run_outcome(action, f[11], attempt >= tonumber(f[10]))
  local fields = { 'ak', token }
  record_run(fields, id, now, outcome, RUN_ERRORS[action] and msg or nil, unpack(f, ACK_RUN))
  if outcome == 'completed' then
    -- A completed job's earlier failure no longer describes it.
    if f[13] then redis.call('HDEL', jkey(id), 'er') end
    -- Before finish(), which deletes the job of a queue that keeps none.
    if msg ~= '' then redis.call('SET', okey(id), msg) end
  elseif outcome == 'dead' then
    push(fields, 'er', msg)
  elseif outcome ~= 'cancelled' then
    return give_back(id, f, action, run_at, msg, now, attempt, fields)
  end
  finish(id, f, outcome, now, cfg, fields)
  return outcome
end

-- Applies `n` acknowledgements of five arguments each, starting at
-- ARGV[first]; returns their outcomes in order.
local function ack_batch(first, n, now, cfg)
  local out = {}
  for i = 0, n - 1 do
    local a = first + i * 5
    out[i + 1] = ack_one(ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], now, cfg)
  end
  return out
end
