-- A worker's turn in one call: acknowledge what finished, then claim.
-- ARGV: now, origin, n, n acknowledgements of five arguments each, then
-- lease_until, worker, limit. Returns { woke, outcomes, jobs, due }: due is
-- what next_due answers when the claim came back short, else -1, sparing
-- an idle worker a second call.
local cfg = config()
if not cfg then return redis.error_reply(UNKNOWN_QUEUE) end
local now, n = ARGV[1], tonumber(ARGV[3])
local outcomes = ack_batch(4, n, now, cfg)
local c = 4 + n * 5
local limit = tonumber(ARGV[c + 2])
local jobs = claim(now, ARGV[c], ARGV[c + 1], limit, cfg)
local due = -1
if #jobs < limit then due = next_due(now, cfg) end
return { flush(ARGV[2]), outcomes, jobs, due }
