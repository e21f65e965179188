-- KEYS: the lock, the token counter. ARGV: holder, now, until, cleanup_ms.
-- Takes the lock unless someone holds it past `now`: { token } or nil.
-- Expiry is judged by the caller's time; the key's own TTL only cleans up.
local exp = redis.call('HGET', KEYS[1], 'exp')
if exp and tonumber(exp) > tonumber(ARGV[2]) then return false end
local token = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'holder', ARGV[1], 'tok', token, 'exp', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return { token }
