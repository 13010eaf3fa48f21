-- Take a lock if it is free and hand out the next fencing token.
-- KEYS[1] lock, KEYS[2] fence counter, KEYS[3] locks index (hash, for the dashboard)
-- ARGV[1] holder token, ARGV[2] ttl ms, ARGV[3] lock name, ARGV[4] holder (agent/instance),
-- ARGV[5] now ms
-- Returns {fencing token, 0} when taken, {0, ms until the holder's lease runs out} when not.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local fence = redis.call('INCR', KEYS[2])
  redis.call('HSET', KEYS[3], ARGV[3], cjson.encode({
    holder = ARGV[4], fencing_token = fence, acquired_at = tonumber(ARGV[5]),
    expires_at = tonumber(ARGV[5]) + tonumber(ARGV[2])}))
  return {fence, 0}
end
return {0, redis.call('PTTL', KEYS[1])}
