-- KEYS: the lock. ARGV: token, now, until, cleanup_ms. Extends a lock still
-- held under `token`: 1, or 0 if it lapsed or was taken over.
local f = redis.call('HMGET', KEYS[1], 'tok', 'exp')
if f[1] ~= ARGV[1] or tonumber(f[2]) <= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'exp', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
