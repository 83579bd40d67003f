-- Mark an entry as confirmed by replicas, or announce it (replica mode).
--
-- KEYS[1] room stream   KEYS[2] confirmed watermark
-- ARGV[1] entry id      ARGV[2] Pub/Sub channel   ARGV[3] 'set' or 'announce'
--
-- A WAIT on the same connection runs between the two steps, so the
-- watermark has reached the replicas before anyone is told of the entry:
-- after a failover, an entry that was delivered is still readable. 'announce'
-- publishes only while the watermark is still this entry's id; an entry whose
-- confirmation was overtaken is announced through its successor's `prev`.
--
-- Replication is in order, so once an entry is confirmed everything before
-- it is too: the watermark only moves forward, and readers never read past
-- it. The notification is built from the stored entry (so a retried publish
-- that only learned the id can announce it) and carries the id before it.
local function newer(a, b)
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  ams, aseq, bms, bseq = tonumber(ams), tonumber(aseq), tonumber(bms), tonumber(bseq)
  return ams > bms or (ams == bms and aseq > bseq)
end

local current = redis.call('GET', KEYS[2])
if ARGV[3] == 'set' then
  if current and not newer(ARGV[1], current) then
    return 0
  end
  redis.call('SET', KEYS[2], ARGV[1])
  return 1
end
if current ~= ARGV[1] then
  return 0
end

local rows = redis.call('XREVRANGE', KEYS[1], ARGV[1], '-', 'COUNT', 2)
if #rows == 0 or rows[1][1] ~= ARGV[1] then
  return 1  -- trimmed already: the watermark is enough
end
local prev = '0-0'
if #rows > 1 then prev = rows[2][1] end
local fields = rows[1][2]
local u, b = '', 'null'
for i = 1, #fields, 2 do
  if fields[i] == 'u' then u = fields[i + 1] elseif fields[i] == 'b' then b = fields[i + 1] end
end
redis.call('PUBLISH', ARGV[2], ARGV[1] .. '\n' .. prev .. '\n' .. u .. '\n' .. b)
return 1
