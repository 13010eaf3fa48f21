-- Record a finished heartbeat run and end it (only the runner that holds the running key).
-- KEYS[1] heartbeat hash, KEYS[2] running key, KEYS[3] heartbeats index (hash name -> last run)
-- ARGV[1] runner#token, ARGV[2] last-run JSON, ARGV[3] heartbeat name
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
end
redis.call('HSET', KEYS[1], 'last_run', ARGV[2])
redis.call('HSET', KEYS[3], ARGV[3], ARGV[2])
return 1
