-- ARGV: now, origin, n, then n acknowledgements of five arguments each:
-- id, token, action, run_at, message. Returns { woke, outcomes }.
local cfg = config()
if not cfg then return redis.error_reply(UNKNOWN_QUEUE) end
local outcomes = ack_batch(4, tonumber(ARGV[3]), ARGV[1], cfg)
return { flush(ARGV[2]), outcomes }
