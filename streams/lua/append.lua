-- Append one message to a room, atomically.
--
-- KEYS[1] room stream            KEYS[2] idempotency key for (sender, client_id)
-- KEYS[3] epoch record (hash)   KEYS[4] confirmed watermark (replica mode)
-- ARGV[1] MAXLEN (approximate)   ARGV[2] sender
-- ARGV[3] body (JSON text)       ARGV[4] 'c:'+client_id, or an internal 'i:' id
-- ARGV[5] idempotency TTL (s)    ARGV[6] Pub/Sub channel ('' = do not notify)
-- ARGV[7] a fresh random epoch token (Lua's random is deterministic)
-- ARGV[8] '1' when this call may repeat one that already ran (a retry),
--         '0' on a first attempt
--
-- Returns {id, duplicate (0/1), prev}. `prev` is the id of the entry stored
-- just before this one ('0-0' for the first), so that every receiver of the
-- notification can tell whether it missed something.
--
-- Redis 7 has no idempotent XADD, so the script records the client_id itself,
-- in the same atomic step as the append: a publish whose reply was lost and
-- that is retried finds the record and stores nothing new.
--
-- The entry that creates the stream also creates a fresh epoch record (any
-- older one belongs to a lost incarnation and is overwritten, never reused),
-- so a reader can tell a recreated stream from the one it read before. In
-- replica mode the WAIT that follows on the same connection covers it.
local cid = ARGV[4]  -- never empty: an internal one when the client gave none
-- An internal id is new on a first attempt: only a retry can find a record.
local seen = (ARGV[8] ~= '0' or string.sub(cid, 1, 2) ~= 'i:') and redis.call('GET', KEYS[2])
if seen then
  -- Rewrite the record: a write of this connection that replicates after
  -- the original entry, so a WAIT that follows covers the original too.
  redis.call('SET', KEYS[2], seen, 'KEEPTTL')
  return {seen, 1, ''}
end

local prev = '0-0'
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local fresh = #last == 0
if not fresh then
  prev = last[1][1]
end

-- Only a client's id is kept with the entry (for operators): an internal
-- one would cost every entry ~50 bytes and is never read back.
local id
if string.sub(cid, 1, 2) == 'c:' then
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
                  'u', ARGV[2], 'b', ARGV[3], 'c', cid)
else
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'u', ARGV[2], 'b', ARGV[3])
end
redis.call('SET', KEYS[2], id, 'EX', ARGV[5])

if fresh then
  -- A stream with no entry is a new incarnation: a fresh record (a lost
  -- one's watermark goes too). A stream older than epochs gets its record
  -- from the first bounds read instead (bounds.lua).
  redis.call('DEL', KEYS[3], KEYS[4])
  redis.call('HSET', KEYS[3], 'token', ARGV[7], 'born', id)
end

if ARGV[6] ~= '' then
  redis.call('PUBLISH', ARGV[6], id .. '\n' .. prev .. '\n' .. ARGV[2] .. '\n' .. ARGV[3])
end
return {id, 0, prev}
