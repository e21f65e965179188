-- ARGV: now, until, then job id and token pairs. Returns one outcome per
-- lease: 'x' extended, 'c' extended but cancellation requested, 'l' lost.
local now, until_ = tonumber(ARGV[1]), ARGV[2]
local out = {}
for a = 3, #ARGV, 2 do
  local id, token = ARGV[a], ARGV[a + 1]
  local jk = jkey(id)
  local f = redis.call('HMGET', jk, 'st', 'tk', 'lx', 'cr')
  if f[1] ~= 'running' or f[2] ~= token or tonumber(f[3]) <= now then
    out[#out + 1] = 'l'
  else
    redis.call('HSET', jk, 'lx', until_)
    redis.call('ZADD', K.leases, until_, id)
    out[#out + 1] = f[4] and 'c' or 'x'
  end
end
return out
