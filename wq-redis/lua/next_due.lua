-- ARGV: now. When to look again: see next_due in lib/claim.lua.
local cfg = config()
if not cfg then return redis.error_reply(UNKNOWN_QUEUE) end
return next_due(ARGV[1], cfg)
