-- A worker's turn in one call: acknowledge what finished, then claim.
-- ARGV: now, origin, n, n acknowledgements of five arguments each, then
-- lease_until, worker, limit. Returns { woke, outcomes, jobs }.
local cfg = config()
if not cfg then return redis.error_reply(UNKNOWN_QUEUE) end
local now, n = ARGV[1], tonumber(ARGV[3])
local outcomes = ack_batch(4, n, now, cfg)
local c = 4 + n * 5
local jobs = claim(now, ARGV[c], ARGV[c + 1], tonumber(ARGV[c + 2]), cfg)
return { flush(ARGV[2]), outcomes, jobs }
