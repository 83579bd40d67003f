-- Move a user's cursor in a room forward, never back, never past the stream.
--
-- KEYS[1] cursor hash   KEYS[2] room stream   KEYS[3] epoch record (hash)
-- ARGV[1] user   ARGV[2] id ('ms-seq', validated)
-- ARGV[3] a fresh epoch token, for a stream older than epochs
--
-- Returns {1, cursor} after storing, or {0, ''} when the id is beyond the
-- last id the stream ever generated (or there is no stream): such an id was
-- erased by a failover or made up, and a cursor there would block every
-- later ack and make every cursor join say recovered:false for ever.
--
-- The cursor is stored as '<id>/<epoch>'. A stored cursor from another
-- epoch (the stream was lost and recreated) or beyond the stream's end
-- (erased by a failover) is replaced instead of compared with.
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return ms, seq
end

-- Compare two decimal strings of any length without converting to numbers
-- (stream id parts are 64-bit and Lua numbers are doubles).
local function cmpnum(a, b)
  a = string.gsub(a, '^0+', '')
  b = string.gsub(b, '^0+', '')
  if #a ~= #b then
    return #a < #b and -1 or 1
  end
  if a == b then return 0 end
  return a < b and -1 or 1
end

local function cmpid(x, y)
  local xms, xseq = parse(x)
  local yms, yseq = parse(y)
  local c = cmpnum(xms, yms)
  if c ~= 0 then return c end
  return cmpnum(xseq, yseq)
end

if redis.call('EXISTS', KEYS[2]) == 0 then
  -- No stream: only '0-0' is not beyond it, and there is nothing to store.
  if cmpid(ARGV[2], '0-0') == 0 then return {1, '0-0'} end
  return {0, ''}
end
local info = redis.call('XINFO', 'STREAM', KEYS[2])
local last = '0-0'
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then last = info[i + 1] end
end
if cmpid(ARGV[2], last) > 0 then
  return {0, ''}
end

local epoch = redis.call('HGET', KEYS[3], 'token')
if not epoch then
  epoch = ARGV[3]
  redis.call('HSET', KEYS[3], 'token', epoch, 'born', '0-0')
end

local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
  local cid, cepoch = string.match(current, '^([^/]+)/(.*)$')
  if not cid then cid = current end  -- stored before cursors had an epoch
  local same = cepoch == nil or cepoch == epoch
  if same and cmpid(cid, last) <= 0 and cmpid(ARGV[2], cid) <= 0 then
    if cepoch == nil then
      redis.call('HSET', KEYS[1], ARGV[1], cid .. '/' .. epoch)
    end
    return {1, cid}
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '/' .. epoch)
return {1, ARGV[2]}
