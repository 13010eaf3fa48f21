-- Release a lock only for its holder (compare-and-delete).
-- KEYS[1] lock, KEYS[2] locks index; ARGV[1] token, ARGV[2] name
-- Returns 1 when released, 0 when it was not held with this token.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[2], ARGV[2])
return 1
