-- ARGV: now, origin, id. A waiting job is cancelled at once; a running one
-- gets its cancellation requested. Returns { woke, outcome, data }:
-- 'ok' and the job; 'dropped' and the job as it was (zero retention
-- deleted it); 'state' and the terminal state; 'notfound'.
local cfg = config()
if not cfg then return redis.error_reply(UNKNOWN_QUEUE) end
local now, id = ARGV[1], ARGV[3]
local jk = jkey(id)
local f = redis.call('HMGET', jk, unpack(FINISH_FIELDS))
local st = f[1]
local result
if not st then
  result = { 'notfound' }
elseif st == 'running' then
  redis.call('HSET', jk, 'cr', '1', 'ua', now)
  result = { 'ok', job_reply(id) }
elseif st == 'scheduled' or st == 'available' then
  local before = job_reply(id)
  finish(id, f, 'cancelled', now, cfg)
  if redis.call('EXISTS', jk) == 1 then
    result = { 'ok', job_reply(id) }
  else
    result = { 'dropped', before }
  end
else
  result = { 'state', st }
end
return { flush(ARGV[2]), result[1], result[2] }
