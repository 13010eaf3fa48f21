-- Append a message unless its idempotency key was seen; return the envelope id that holds the key.
-- KEYS[1] dedup key, KEYS[2] mailbox stream (one agent: one hash slot)
-- ARGV[1] envelope id, ARGV[2] dedup TTL ms, ARGV[3] type, ARGV[4] sender, ARGV[5] envelope bytes
local first = redis.call('GET', KEYS[1])
if first then
  return first
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('XADD', KEYS[2], '*', 'type', ARGV[3], 'sender', ARGV[4], 'env', ARGV[5])
return ARGV[1]
