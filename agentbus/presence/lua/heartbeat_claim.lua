-- Claim one window of a periodic heartbeat: at most one run per window across all processes.
-- KEYS[1] heartbeat hash, KEYS[2] running key, KEYS[3] fence counter
-- ARGV[1] window number, ARGV[2] runner (agent/instance), ARGV[3] running TTL ms, ARGV[4] now ms
-- Returns the fencing token of the run, 0 when the window was already claimed, -1 when the
-- previous run is still going (this window is skipped: missed windows do not pile up).
local last = tonumber(redis.call('HGET', KEYS[1], 'window') or '-1')
if tonumber(ARGV[1]) <= last then
  return 0
end
redis.call('HSET', KEYS[1], 'window', ARGV[1])
if redis.call('EXISTS', KEYS[2]) == 1 then
  return -1
end
local token = redis.call('INCR', KEYS[3])
redis.call('SET', KEYS[2], ARGV[2] .. '#' .. token, 'PX', ARGV[3])
return token
