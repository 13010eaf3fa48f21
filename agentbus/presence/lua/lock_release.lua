-- Release a lock only for its holder (compare-and-delete on the token prefix of the value).
-- KEYS[1] lock; ARGV[1] token. Returns 1 when released, 0 when it was not held with this token.
local value = redis.call('GET', KEYS[1])
if not value or string.sub(value, 1, #ARGV[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
return 1
