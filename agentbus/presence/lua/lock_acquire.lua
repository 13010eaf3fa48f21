-- Take a lock if it is free and hand out the next fencing token.
-- KEYS[1] lock, KEYS[2] locks index (hash: lock name -> newest fencing token, for the dashboard)
-- ARGV[1] holder token (32 hex digits), ARGV[2] ttl ms, ARGV[3] lock name, ARGV[4] the holder's
-- entry as JSON (holder, acquired_at, expires_at). The lock's value is token .. entry, so the
-- dashboard reads who holds it from the lock itself and nothing is left to clean up on release.
-- Two redis.call()s on the fast path: a script's cost here is mostly its calls.
-- Returns {fencing token, 0} when taken, {0, ms until the holder's lease runs out} when not.
if redis.call('SET', KEYS[1], ARGV[1] .. ARGV[4], 'NX', 'PX', ARGV[2]) then
  return {redis.call('HINCRBY', KEYS[2], ARGV[3], 1), 0}
end
return {0, redis.call('PTTL', KEYS[1])}
