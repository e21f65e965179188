-- Jobs in id order after a cursor, filtered by state and group, looking at
-- no more than `budget` jobs per call so that a large queue never blocks
-- the server. ARGV: after ('' for the start), state (''), group (''),
-- limit, budget. Returns { jobs, cursor }: cursor is '' when the page is
-- full or the queue exhausted, else the id to go on after.
local state, group = ARGV[2], ARGV[3]
local limit, budget = tonumber(ARGV[4]), tonumber(ARGV[5])
local CHUNK = 256
local start = '-'
if ARGV[1] ~= '' then start = '(' .. ARGV[1] end
local out, scanned = {}, 0
while true do
  local ids = redis.call('ZRANGE', K.all, start, '+', 'BYLEX', 'LIMIT', 0, CHUNK)
  for _, id in ipairs(ids) do
    local f = redis.call('HMGET', jkey(id), 'st', 'g')
    if (state == '' or f[1] == state) and (group == '' or f[2] == group) then
      out[#out + 1] = job_reply(id)
      if #out >= limit then return { out, '' } end
    end
  end
  scanned = scanned + #ids
  if #ids < CHUNK then return { out, '' } end
  start = '(' .. ids[#ids]
  if scanned >= budget then return { out, ids[#ids] } end
end
