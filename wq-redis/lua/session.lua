-- Sets a session's limits or its pause, creating the session if needed,
-- and puts it where it now belongs: a session that may start jobs again
-- (resumed, or given room by new limits) wakes the workers.
-- ARGV: now, origin, session, then either 'limits' and max_running,
-- spacing and jitter (µs), starts, per and jitter (ns), '' for each one
-- not set; or 'pause' and '1' to pause, '0' to resume. Returns { woke }.
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
  s.paused = ARGV[5] == '1'
  redis.call('HSET', sk, 'pz', ARGV[5])
end
s.dirty = true
return { flush(ARGV[2]) }
