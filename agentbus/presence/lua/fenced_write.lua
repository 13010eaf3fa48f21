-- Write fields only when the writer's fencing token is not older than one already seen.
-- KEYS[1] fenced hash (field "~token" holds the highest token seen)
-- ARGV[1] token, ARGV[2..] field, value pairs
-- Returns {1, token} when written, {0, highest token seen} when refused.
local seen = tonumber(redis.call('HGET', KEYS[1], '~token') or '0')
local token = tonumber(ARGV[1])
if token < seen then
  return {0, seen}
end
redis.call('HSET', KEYS[1], '~token', ARGV[1])
for i = 2, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
return {1, token}
