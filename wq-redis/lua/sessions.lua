-- Sessions as stored, for operators. ARGV: 'one' and a name, or 'list',
-- the name to list after ('' from the start) and the most to return.
-- Returns { name, fields } per session found, by name.
if not config() then return redis.error_reply(UNKNOWN_QUEUE) end
local names
if ARGV[1] == 'one' then
  names = {}
  if redis.call('ZSCORE', K.sessions, ARGV[2]) then names[1] = ARGV[2] end
else
  local start = '-'
  if ARGV[2] ~= '' then start = '(' .. ARGV[2] end
  names = redis.call('ZRANGE', K.sessions, start, '+', 'BYLEX', 'LIMIT', 0, tonumber(ARGV[3]))
end
local out = {}
for i, n in ipairs(names) do out[i] = { n, redis.call('HGETALL', skey(n)) } end
return out
