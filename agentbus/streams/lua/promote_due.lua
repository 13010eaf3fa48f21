-- Move retries that are due from the delayed set back into the mailbox, atomically, so that two
-- instances running this at once never promote one retry twice.
-- KEYS[1] delayed sorted set, KEYS[2] mailbox stream
-- ARGV[1] now (ms), ARGV[2] most entries to move
-- Members are "type\nsender\n" followed by the envelope bytes (types and agent ids hold no
-- whitespace, so the first two newlines split them off).
-- Returns the score (ms) of the next retry still waiting, or -1 when none.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  local first = string.find(member, '\n', 1, true)
  local second = string.find(member, '\n', first + 1, true)
  redis.call('XADD', KEYS[2], '*',
    'type', string.sub(member, 1, first - 1),
    'sender', string.sub(member, first + 1, second - 1),
    'env', string.sub(member, second + 1))
  redis.call('ZREM', KEYS[1], member)
end
local next_due = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if next_due[2] then
  return tonumber(next_due[2])
end
return -1
