-- Append a reply to the requesting instance's reply stream and (re)arm its expiry, in one
-- command: a reply stream whose requester died disappears by itself.
-- KEYS[1] reply stream; ARGV[1] type, ARGV[2] sender, ARGV[3] envelope bytes, ARGV[4] TTL ms
redis.call('XADD', KEYS[1], '*', 'type', ARGV[1], 'sender', ARGV[2], 'env', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
