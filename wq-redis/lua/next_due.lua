-- ARGV: now. The earliest time a job may become claimable: { now } if a
-- head is due, { run_at } of the earliest scheduled head, or {} if none
-- (or the queue is paused).
local cfg = config()
if not cfg then return redis.error_reply(UNKNOWN_QUEUE) end
if cfg.paused then return {} end
if redis.call('ZCARD', K.ready) > 0 then return { ARGV[1] } end
local first = redis.call('ZRANGE', K.sched, 0, 0, 'WITHSCORES')
if #first == 0 then return {} end
return { first[2] }
