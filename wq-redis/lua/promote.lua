-- Moves up to `max` scheduled heads whose run_at has come to available.
-- ARGV: now, origin, max. Returns { woke, moved }.
local cfg = config()
if not cfg then return redis.error_reply(UNKNOWN_QUEUE) end
local moved = promote(ARGV[1], tonumber(ARGV[3]), cfg, true)
if moved > 0 then woke = true end
return { flush(ARGV[2]), moved }
