-- Move a user's cursor in a room forward, never back.
--
-- KEYS[1] cursor hash   ARGV[1] user   ARGV[2] id ('ms-seq', validated)
-- Returns the cursor after the call.
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

local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
  local cms, cseq = parse(current)
  local nms, nseq = parse(ARGV[2])
  local c = cmpnum(nms, cms)
  if c < 0 or (c == 0 and cmpnum(nseq, cseq) <= 0) then
    return current
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return ARGV[2]
