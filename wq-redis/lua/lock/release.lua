-- KEYS: the lock. ARGV: token. Gives the lock up: 1, or 0 if it was no
-- longer held under `token`.
if redis.call('HGET', KEYS[1], 'tok') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
