-- Remove instances from the presence index and publish one leave diff for each one removed.
-- Called for a graceful close (ARGV[3] = the member) and by the sweeper (ARGV[3] = '' : every
-- member whose expiry passed). Only the call that removes a member publishes its leave, so there
-- is exactly one leave per instance however many sweepers run.
-- KEYS[1] index, KEYS[2] info, KEYS[3] version, KEYS[4] sweep gate
-- ARGV[1] now ms, ARGV[2] diffs channel, ARGV[3] member or '', ARGV[4] sweep gate ms (0 = none)
-- Returns the members removed.
local members
if ARGV[3] ~= '' then
  members = {ARGV[3]}
else
  if tonumber(ARGV[4]) > 0 then
    -- One sweep per interval family-wide: the other sweepers return at once.
    if not redis.call('SET', KEYS[4], '1', 'NX', 'PX', ARGV[4]) then
      return {}
    end
  end
  members = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1000)
end
local removed = {}
for _, member in ipairs(members) do
  if redis.call('ZREM', KEYS[1], member) == 1 then
    local info = redis.call('HGET', KEYS[2], member) or ''
    redis.call('HDEL', KEYS[2], member)
    local version = redis.call('INCR', KEYS[3])
    local slash = string.find(member, '/', 1, true)
    redis.call('PUBLISH', ARGV[2], cjson.encode({
      kind = 'leave', version = version, time = tonumber(ARGV[1]),
      agent = string.sub(member, 1, slash - 1), instance = string.sub(member, slash + 1),
      info = info}))
    removed[#removed + 1] = member
  end
end
return removed
