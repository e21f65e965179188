-- The fields an acknowledgement reads: FINISH_FIELDS, then the lease, the
-- attempts, the cancellation flag, the token of the last acknowledgement
-- applied and the last error.
local ACK_FIELDS = { 'st', 'pr', 'ra', 'sq', 'g', 's', 'tk', 'lx', 'at', 'mx', 'cr', 'ak', 'er' }

-- Applies one acknowledgement if its token holds a live lease on a running
-- job; returns the job's new state, 'stale' or 'notfound'.
-- action: c(omplete), r(etry), d(efer), k(ill), l (release), s(tep):
-- continue at the step `msg`.
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
  if f[1] ~= 'running' or f[7] ~= token or tonumber(f[8]) <= tonumber(now) then
    if f[12] == token and f[1] ~= 'running' then return f[1] end
    return 'stale'
  end
  push(later.unlease, id)
  local attempt = tonumber(f[9])
  if action == 'c' then
    -- A completed job's earlier failure no longer describes it.
    if f[13] then redis.call('HDEL', jkey(id), 'er') end
    finish(id, f, 'completed', now, cfg, { 'ak', token })
    return 'completed'
  end
  if f[11] then
    finish(id, f, 'cancelled', now, cfg, { 'ak', token })
    return 'cancelled'
  end
  if action == 'k' or (action == 'r' and attempt >= tonumber(f[10])) then
    finish(id, f, 'dead', now, cfg, { 'er', msg, 'ak', token })
    return 'dead'
  end
  local extra = { 'tk', '', 'lx', '', 'wk', '', 'ak', token }
  local given_back = int(math.max(attempt - 1, 0))
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
