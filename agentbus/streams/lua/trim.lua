-- Trim a mailbox without losing anything: on Redis 7.0 XTRIM deletes pending entries too, so
-- trim only below the oldest entry that is still pending or not yet delivered to the group.
-- KEYS[1] mailbox stream; ARGV[1] consumer group
-- Returns the number of entries deleted.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
local last_delivered = nil
for _, group in ipairs(groups) do
  -- XINFO GROUPS replies with flat name/value arrays.
  local name, delivered = nil, nil
  for i = 1, #group, 2 do
    if group[i] == 'name' then name = group[i + 1] end
    if group[i] == 'last-delivered-id' then delivered = group[i + 1] end
  end
  if name == ARGV[1] then last_delivered = delivered end
end
if not last_delivered then
  return 0  -- no group yet: nothing has been delivered, nothing may go
end

local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function older(a, b)
  local ams, aseq = parse(a)
  local bms, bseq = parse(b)
  return ams < bms or (ams == bms and aseq < bseq)
end

-- Everything after last-delivered-id is undelivered, so the bound is at most last-delivered + 1.
local ms, seq = parse(last_delivered)
local bound = ms .. '-' .. (seq + 1)
local pending = redis.call('XPENDING', KEYS[1], ARGV[1])
if pending[1] > 0 and older(pending[2], bound) then
  bound = pending[2]
end
-- MINID keeps entries with id >= bound.
return redis.call('XTRIM', KEYS[1], 'MINID', bound)
