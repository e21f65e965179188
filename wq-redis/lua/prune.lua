-- Deletes up to `limit` finished jobs past the queue's retention, freeing
-- their idempotency keys: completed and cancelled first, then dead.
-- ARGV: now, origin, limit. Returns { woke, n }.
local cfg = config()
if not cfg then return redis.error_reply(UNKNOWN_QUEUE) end
local now, limit = ARGV[1], tonumber(ARGV[3])
local pruned = 0
for _, set in ipairs({ { K.done, cfg.keep_done }, { K.dead, cfg.keep_dead } }) do
  if pruned < limit then
    local before = tonumber(now) - set[2]
    local ids = redis.call('ZRANGEBYSCORE', set[1], '-inf', before, 'LIMIT', 0, limit - pruned)
    for _, id in ipairs(ids) do purge(id, now, cfg) end
    pruned = pruned + #ids
  end
end
return { flush(ARGV[2]), pruned }
