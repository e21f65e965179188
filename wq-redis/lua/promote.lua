-- Moves up to `max` scheduled heads whose run_at has come to available.
-- ARGV: now, origin, max. Returns { woke, moved }.
if not config() then return redis.error_reply(UNKNOWN_QUEUE) end
local moved = promote(ARGV[1], tonumber(ARGV[3]))
if moved > 0 then woke = true end
return { flush(ARGV[2]), moved }
