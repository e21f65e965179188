-- The fields an acknowledgement reads: FINISH_FIELDS, then the lease and
-- the attempts.
local ACK_FIELDS = { 'st', 'pr', 'ra', 'sq', 'g', 'tk', 'lx', 'at', 'mx', 'cr' }

-- Applies one acknowledgement if its token holds a live lease on a running
-- job; returns the job's new state, 'stale' or 'notfound'.
-- action: c(omplete), r(etry), d(efer), k(ill), l (release).
local function ack_one(id, token, action, run_at, msg, now, cfg)
  local f = redis.call('HMGET', jkey(id), unpack(ACK_FIELDS))
  if not f[1] then return 'notfound' end
  if f[1] ~= 'running' or f[6] ~= token or tonumber(f[7]) <= tonumber(now) then return 'stale' end
  push(later.unlease, id)
  local attempt = tonumber(f[8])
  if action == 'c' then
    finish(id, f, 'completed', now, cfg)
    return 'completed'
  end
  if f[10] then
    finish(id, f, 'cancelled', now, cfg)
    return 'cancelled'
  end
  if action == 'k' or (action == 'r' and attempt >= tonumber(f[9])) then
    finish(id, f, 'dead', now, cfg, { 'er', msg })
    return 'dead'
  end
  local extra = { 'tk', '', 'lx', '', 'wk', '' }
  local given_back = int(math.max(attempt - 1, 0))
  if action == 'r' then
    f[3] = run_at
    extra[7], extra[8], extra[9], extra[10] = 'er', msg, 'ra', run_at
  elseif action == 'd' then
    f[3] = run_at
    extra[7], extra[8], extra[9], extra[10], extra[11], extra[12] = 'er', msg, 'ra', run_at, 'at', given_back
  else
    extra[7], extra[8] = 'at', given_back
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
