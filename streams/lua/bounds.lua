-- The stream's bounds and its epoch, read in one atomic step.
--
-- KEYS[1] room stream   KEYS[2] epoch record (hash)
-- ARGV[1] a fresh epoch token for a stream older than epochs ('' = read only)
--
-- Returns {} when the stream does not exist, else
-- {length, last-generated-id, entries-added, first-entry id or '', token or '', born}.
-- A stream without an epoch record (written before epochs existed) is given
-- one with born unknown ('0-0') when ARGV[1] is set; the read-only variant
-- (registered with flags=no-writes, so it runs under CLIENT PAUSE WRITE)
-- returns '' instead and the caller adopts the stream with the other one.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {}
end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local f = {}
for i = 1, #info, 2 do
  f[info[i]] = info[i + 1]
end
local first = ''
if f['first-entry'] then
  first = f['first-entry'][1]
end
local added = f['entries-added'] or f['length']
local rec = redis.call('HMGET', KEYS[2], 'token', 'born')
local token, born = rec[1], rec[2]
if not token then
  token, born = ARGV[1], '0-0'
  if token ~= '' then
    redis.call('HSET', KEYS[2], 'token', token, 'born', born)
  end
end
return {f['length'], f['last-generated-id'], added, first, token, born or '0-0'}
