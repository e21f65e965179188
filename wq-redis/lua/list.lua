-- Jobs in id order after a cursor, filtered by state, group, tenant or
-- idempotency key, looking at no more than `budget` jobs per call so that
-- a large queue never blocks the server. ARGV: after ('' for the start),
-- state, group, tenant, idempotency key ('' where not filtered), limit,
-- budget. Returns { jobs, cursor }: cursor is '' when the page is full or
-- the index exhausted, else the id to go on after.
--
-- The index read is the most selective one at hand: the job an
-- idempotency key names; a group's or a tenant's jobs (gj:, tn:, in id
-- order); a state's own set when it holds at most `budget` jobs (read
-- whole and sorted: running jobs always are few); else every job (all).
local after, state, group, tenant, ik = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local limit, budget = tonumber(ARGV[6]), tonumber(ARGV[7])
local CHUNK = 256

local function matches(id)
  local f = redis.call('HMGET', jkey(id), 'st', 'g', 'tn')
  return f[1] and (state == '' or f[1] == state) and (group == '' or f[2] == group)
    and (tenant == '' or f[3] == tenant)
end

if ik ~= '' then
  local id = redis.call('HGET', K.idem, ik)
  if id and (after == '' or id > after) and matches(id) then return { { job_reply(id) }, '' } end
  return { {}, '' }
end

local index = K.all
if group ~= '' then
  index = gjkey(group)
elseif tenant ~= '' then
  index = tnkey(tenant)
end

-- A state's set, and whether its members end with the id after a sort key.
local by_state = {
  scheduled = { K.wait, true }, available = { K.wait, true }, running = { K.leases, false },
  completed = { K.done, false }, cancelled = { K.done, false }, dead = { K.dead, false },
}
local small = by_state[state]
if small then
  local n = redis.call('ZCARD', small[1])
  if n <= budget and (index == K.all or n < redis.call('ZCARD', index)) then
    local ids = {}
    for _, m in ipairs(redis.call('ZRANGE', small[1], 0, -1)) do
      local id = m
      if small[2] then id = string.sub(m, SORT_KEY_LEN + 1) end
      if (after == '' or id > after) then ids[#ids + 1] = id end
    end
    table.sort(ids)
    local out = {}
    for _, id in ipairs(ids) do
      if matches(id) then
        out[#out + 1] = job_reply(id)
        if #out >= limit then break end
      end
    end
    return { out, '' }
  end
end

local start = '-'
if after ~= '' then start = '(' .. after end
local out, scanned = {}, 0
while true do
  local ids = redis.call('ZRANGE', index, start, '+', 'BYLEX', 'LIMIT', 0, CHUNK)
  for _, id in ipairs(ids) do
    if matches(id) then
      out[#out + 1] = job_reply(id)
      if #out >= limit then return { out, '' } end
    end
  end
  scanned = scanned + #ids
  if #ids < CHUNK then return { out, '' } end
  start = '(' .. ids[#ids]
  if scanned >= budget then return { out, ids[#ids] } end
end
