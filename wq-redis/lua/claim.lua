-- ARGV: now, origin, lease_until, worker, limit, turn ('' for none).
-- Returns { woke, jobs }. A turn sent again gets the jobs its first try
-- claimed that still run under their tokens, and nothing new.
local cfg = config()
if not cfg then return redis.error_reply(UNKNOWN_QUEUE) end
local now, lease_until, worker, turn = ARGV[1], ARGV[3], ARGV[4], ARGV[6]
local jobs
local past = recall(worker, turn)
if past then
  jobs = replay(past.claims)
else
  local tokens
  jobs, tokens = claim(now, lease_until, worker, tonumber(ARGV[5]), cfg)
  remember(worker, turn, {}, jobs, tokens, now, lease_until)
end
return { flush(ARGV[2]), jobs }
