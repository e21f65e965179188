-- ARGV: now, origin, lease_until, worker, limit.
-- Returns { woke, jobs }.
local cfg = config()
if not cfg then return redis.error_reply(UNKNOWN_QUEUE) end
local jobs = claim(ARGV[1], ARGV[3], ARGV[4], tonumber(ARGV[5]), cfg)
return { flush(ARGV[2]), jobs }
