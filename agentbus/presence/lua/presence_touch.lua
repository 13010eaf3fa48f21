-- Join or refresh an instance in the presence index; publish a diff when it joins or its info
-- changed. All keys share the {~presence} tag.
-- KEYS[1] index (zset), KEYS[2] info (hash), KEYS[3] version (counter)
-- ARGV[1] member "agent/instance", ARGV[2] expiry ms, ARGV[3] info JSON, ARGV[4] diffs channel,
-- ARGV[5] now ms, ARGV[6] "1" when the info changed on purpose (an update event)
-- Returns the version of the diff published, or 0 when nothing was published.
local known = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
local kind = nil
if not known then
  kind = 'join'
elseif ARGV[6] == '1' then
  kind = 'update'
end
if not kind then
  return 0
end
local version = redis.call('INCR', KEYS[3])
local slash = string.find(ARGV[1], '/', 1, true)
redis.call('PUBLISH', ARGV[4], cjson.encode({
  kind = kind, version = version, time = tonumber(ARGV[5]),
  agent = string.sub(ARGV[1], 1, slash - 1), instance = string.sub(ARGV[1], slash + 1),
  info = ARGV[3]}))
return version
