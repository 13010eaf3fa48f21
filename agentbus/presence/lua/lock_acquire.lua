-- Take a lock if it is free and hand out the next fencing token.
-- KEYS[1] lock, KEYS[2] fence counter, KEYS[3] locks index (hash, for the dashboard)
-- ARGV[1] holder token, ARGV[2] ttl ms, ARGV[3] lock name, ARGV[4] the index entry: JSON of
-- holder, acquired_at and expires_at without its closing brace (the fencing token goes last;
-- building the string here costs a third of cjson.encode)
-- Returns {fencing token, 0} when taken, {0, ms until the holder's lease runs out} when not.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local fence = redis.call('INCR', KEYS[2])
  redis.call('HSET', KEYS[3], ARGV[3], ARGV[4] .. ',"fencing_token":' .. fence .. '}')
  return {fence, 0}
end
return {0, redis.call('PTTL', KEYS[1])}
