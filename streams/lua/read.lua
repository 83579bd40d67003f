-- Read entries after an id, never past the confirmed watermark (replica mode).
--
-- KEYS[1] room stream   KEYS[2] confirmed watermark
-- ARGV[1] exclusive start ('(id' or '-')   ARGV[2] count
local upto = redis.call('GET', KEYS[2])
if not upto then
  return {}
end
return redis.call('XRANGE', KEYS[1], ARGV[1], upto, 'COUNT', ARGV[2])
