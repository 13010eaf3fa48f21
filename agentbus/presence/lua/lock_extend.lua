-- Extend a lock only for its holder (compare-and-expire).
-- KEYS[1] lock, KEYS[2] locks index; ARGV[1] token, ARGV[2] ttl ms, ARGV[3] name, ARGV[4] now ms
-- Returns 1 when extended, 0 when the lock is not (any more) held with this token.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local entry = redis.call('HGET', KEYS[2], ARGV[3])
if entry then
  local decoded = cjson.decode(entry)
  decoded.expires_at = tonumber(ARGV[4]) + tonumber(ARGV[2])
  redis.call('HSET', KEYS[2], ARGV[3], cjson.encode(decoded))
end
return 1
