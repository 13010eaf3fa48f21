-- Extend a lock only for its holder, refreshing the holder's entry (its expires_at).
-- KEYS[1] lock; ARGV[1] token, ARGV[2] ttl ms, ARGV[3] the entry JSON.
-- Returns 1 when extended, 0 when the lock is not (any more) held with this token.
local value = redis.call('GET', KEYS[1])
if not value or string.sub(value, 1, #ARGV[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1] .. ARGV[3], 'XX', 'PX', ARGV[2])
return 1
