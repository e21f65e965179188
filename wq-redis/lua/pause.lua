-- ARGV: now, origin, '1' to pause or '0' to resume (which wakes workers).
-- Returns { woke }.
if not config() then return redis.error_reply(UNKNOWN_QUEUE) end
redis.call('HSET', K.cfg, 'paused', ARGV[3])
woke = ARGV[3] == '0'
return { flush(ARGV[2]) }
