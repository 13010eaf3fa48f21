-- Keep a heartbeat run marked as running (only its runner). KEYS[1] running key
-- ARGV[1] runner#token, ARGV[2] running TTL ms. Returns 1 when renewed.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
