-- Deletes dead jobs; a group held by its dead head moves on.
-- ARGV: now, origin, then the selection (see dead_ids). Returns { woke, n }.
local cfg = config()
if not cfg then return redis.error_reply(UNKNOWN_QUEUE) end
local ids = dead_ids()
for _, id in ipairs(ids) do purge(id, ARGV[1], cfg) end
return { flush(ARGV[2]), #ids }
