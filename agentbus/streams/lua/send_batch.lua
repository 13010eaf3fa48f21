-- Append a batch of messages to one mailbox in one command (send_many): one request and one
-- reply for the whole batch instead of one per message.
-- KEYS[1] mailbox stream; ARGV[1] sender, then type, envelope bytes pairs.
-- Returns the number of entries appended.
local sender = ARGV[1]
for i = 2, #ARGV, 2 do
  redis.call('XADD', KEYS[1], '*', 'type', ARGV[i], 'sender', sender, 'env', ARGV[i + 1])
end
return (#ARGV - 1) / 2
