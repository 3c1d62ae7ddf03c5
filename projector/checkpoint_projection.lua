-- The checkpoint projection's apply step (chatlog.projector.checkpoint_projection).
-- Layout and codes: chatlog.projector.protocol, whose SCRIPT_CONSTANTS
-- ["checkpoint_projection"] must equal the constants declared here.
-- KEYS: CheckpointKeys.all(). ARGV: the partition, then per event its offset,
-- op, the number n of its arguments and the n arguments:
--   OP_PUT: index member, checkpoint ns, stored checkpoint, stored versions, (blob field, blob)*
--   OP_WRITES: (write field, stored write, overwrite flag)* - HSETNX unless the flag is 1,
--      as LangGraph's savers keep the first write of a (task, index) >= 0
--   OP_DELETE: drop the thread's checkpoints, blobs and writes (the tracking position stays)
-- Returns {applied, skipped}; the checks run before the first write.
local ARG_PARTITION = 1
local ARG_EVENTS = 2
local OP_PUT = 'P'
local OP_WRITES = 'W'
local OP_DELETE = 'D'
local F_PARTITION = 'partition'
local F_OFFSET = 'offset'

local meta, idx, nss, cps, cpv, blobs, w, wi =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local partition = ARGV[ARG_PARTITION]
local state = redis.call('HMGET', meta, F_PARTITION, F_OFFSET)
if state[1] and state[1] ~= partition then
  return redis.error_reply('PARTITION thread is tracked on partition ' .. state[1] ..
    ', event comes from partition ' .. partition)
end
local last = tonumber(state[2] or '-1')
local applied, skipped = 0, 0
local i = ARG_EVENTS
while i <= #ARGV do
  local offset, op, n = tonumber(ARGV[i]), ARGV[i + 1], tonumber(ARGV[i + 2])
  local a = i + 3
  if offset <= last then
    skipped = skipped + 1
  else
    if op == OP_PUT then
      local member = ARGV[a]
      redis.call('ZADD', idx, 0, member)
      redis.call('ZADD', nss, 'NX', offset, ARGV[a + 1])
      redis.call('HSET', cps, member, ARGV[a + 2])
      redis.call('HSET', cpv, member, ARGV[a + 3])
      for j = a + 4, a + n - 1, 2 do
        redis.call('HSET', blobs, ARGV[j], ARGV[j + 1])
      end
    elseif op == OP_WRITES then
      for j = a, a + n - 1, 3 do
        if ARGV[j + 2] == '1' then
          redis.call('HSET', w, ARGV[j], ARGV[j + 1])
        else
          redis.call('HSETNX', w, ARGV[j], ARGV[j + 1])
        end
        redis.call('ZADD', wi, 0, ARGV[j])
      end
    elseif op == OP_DELETE then
      redis.call('DEL', idx, nss, cps, cpv, blobs, w, wi)
    end
    last = offset
    applied = applied + 1
  end
  i = a + n
end
if applied > 0 then
  redis.call('HSET', meta, F_PARTITION, partition, F_OFFSET, last)
end
return {applied, skipped}
