-- ARGV: id. Where a waiting job stands: { in_group (-1 without a group),
-- in_queue }, or {} if it is not waiting.
local id = ARGV[1]
local f = redis.call('HMGET', jkey(id), 'st', 'g', 'pr', 'ra', 'sq', 'cn')
if f[1] ~= 'scheduled' and f[1] ~= 'available' then return {} end
local in_group = -1
if f[2] then in_group = redis.call('LPOS', gkey(f[2]), id) or 0 end
local in_queue = redis.call('ZLEXCOUNT', K.wait, '-', '(' .. member(f[3], f[4], f[5], id, f[6]))
return { in_group, in_queue }
