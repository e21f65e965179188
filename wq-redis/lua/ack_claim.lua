-- A worker's turn in one call: acknowledge what finished, then claim.
-- ARGV: now, origin, n, n acknowledgements of five arguments each, then
-- lease_until, worker, limit, turn ('' for none). Returns { woke,
-- outcomes, jobs, due }: due is what next_due answers when the claim came
-- back short, else -1, sparing an idle worker a second call.
--
-- A turn sent again (see recall in lib/claim.lua) answers what its first
-- try did: the same outcomes, the jobs it claimed that still run under
-- their tokens, nothing new.
local cfg = config()
if not cfg then return redis.error_reply(UNKNOWN_QUEUE) end
local now, n = ARGV[1], tonumber(ARGV[3])
local c = 4 + n * 5
local lease_until, worker, limit, turn = ARGV[c], ARGV[c + 1], tonumber(ARGV[c + 2]), ARGV[c + 3]
local outcomes, jobs
local past = recall(worker, turn)
if past then
  outcomes = past.outcomes
  -- The same turn with other acknowledgements is the caller's mistake;
  -- applying them (a repeated one answers by its `ak`) beats dropping them.
  if #outcomes ~= n then outcomes = ack_batch(4, n, now, cfg) end
  jobs = replay(past.claims)
else
  outcomes = ack_batch(4, n, now, cfg)
  local tokens
  jobs, tokens = claim(now, lease_until, worker, limit, cfg)
  remember(worker, turn, outcomes, jobs, tokens, now, lease_until)
end
local due = -1
if #jobs < limit then due = next_due(now, cfg) end
return { flush(ARGV[2]), outcomes, jobs, due }
