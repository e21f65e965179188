-- Sets a session's limits or its pause, creating the session if needed,
-- and puts it where it now belongs: a session that may start jobs again
-- (resumed, or given room by new limits) wakes the workers.
-- ARGV: now, origin, session, then either 'limits' and max_running,
-- spacing and jitter (µs), starts, per and jitter (ns), '' for each one
-- not set; or 'pause', a change and a reason: 'pause' (for the reason),
-- 'pause_unless' (the same unless paused), 'resume', 'resume_if' (only a
-- pause for the reason), as wq_core::PauseChange. Returns { woke, changed }
-- (changed 1 if the pause or its reason changed).

local cfg = config()
if not cfg then return redis.error_reply(UNKNOWN_QUEUE) end
local name = ARGV[3]
local s = session(name)
local sk = skey(name)
if ARGV[4] == 'limits' then
  s.mr, s.sp, s.jt = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]) or 0
  local set, unset = { sk }, {}
  for i, field in ipairs({ 'mr', 'sp', 'jt', 'rs', 'rp', 'rj' }) do
    local v = ARGV[4 + i]
    if v == '' then unset[#unset + 1] = field else push(set, field, v) end
  end
  if #set > 1 then redis.call('HSET', unpack(set)) end
  if #unset > 0 then redis.call('HDEL', sk, unpack(unset)) end
else
  local change, reason = ARGV[5], ARGV[6]
  local was = redis.call('HGET', sk, 'pw') or false
  if not s.paused then was = false end
  local now = was
  if change == 'pause' then
    now = reason
  elseif change == 'pause_unless' then
    now = was or reason
  elseif change == 'resume' then
    now = false
  elseif change == 'resume_if' and was == reason then
    now = false
  end
  if now == was then
    -- Nothing changes; a session named for the first time is created all
    -- the same, as with any other change.
    if s.exists then return { 0, 0 } end
  elseif now then
    s.paused = true
    redis.call('HSET', sk, 'pz', '1', 'pw', now)
  else
    s.paused = false
    redis.call('HSET', sk, 'pz', '0')
    redis.call('HDEL', sk, 'pw')
  end
  s.dirty = true
  return { flush(ARGV[2]), now ~= was and 1 or 0 }
end
s.dirty = true
return { flush(ARGV[2]) }
