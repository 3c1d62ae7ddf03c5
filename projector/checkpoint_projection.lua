-- The checkpoint projection's apply step (chatlog.projector.checkpoint_projection).
-- Layout and codes: chatlog.projector.protocol, whose SCRIPT_CONSTANTS
-- ["checkpoint_projection"] must equal the constants declared here.
-- KEYS: CheckpointKeys.all(). ARGV: the partition, the user index key's prefix
-- and suffix, the run index key's prefix and suffix, the thread id, then per
-- event its offset, op, event time (epoch ms), user ('' none), TTL in ms ('' keep
-- the thread's, '0' never), the number n of its arguments and the n arguments:
--   OP_PUT: index member, checkpoint ns, stored checkpoint, stored versions, run id,
--      (blob field, blob)*
--   OP_WRITES: (write field, stored write, overwrite flag)* - HSETNX unless the flag is 1,
--      as LangGraph's savers keep the first write of a (task, index) >= 0. Writes are kept
--      even before their checkpoint arrives: LangGraph publishes a task's writes and the
--      checkpoint they belong to from different threads, in either order.
--   OP_DELETE: drop the thread's checkpoints, blobs, writes and chunks (the meta stays)
--   OP_DROP: index members of checkpoints to drop with their writes; blobs no
--      remaining checkpoint refers to go too
--   OP_MULTI: (op, n, args)* applied in order as one event (copy_thread, a reassembled chunk)
--   OP_TOUCH: nothing but the expiry refresh every event gets
--   OP_CHUNK: chunk field, chunk bytes (kept until the last chunk of the group arrives)
--   OP_CHUNK_DONE: chunk fields to drop (inside OP_MULTI, after the reassembled event)
-- Every applied event first drops the thread's data if it had expired by the
-- event's time (as Redis would have), then moves the expiry to event time + TTL.
-- An event whose user is not the thread's owner is refused: nothing of it is applied.
-- Returns {applied, skipped, refused}; the checks run before the first write.
local ARG_PARTITION = 1
local ARG_USER_PREFIX = 2
local ARG_USER_SUFFIX = 3
local ARG_RUN_PREFIX = 4
local ARG_RUN_SUFFIX = 5
local ARG_THREAD = 6
local ARG_EVENTS = 7
local OP_PUT = 'P'
local OP_WRITES = 'W'
local OP_DELETE = 'D'
local OP_DROP = 'X'
local OP_MULTI = 'M'
local OP_TOUCH = 'T'
local OP_CHUNK = 'K'
local OP_CHUNK_DONE = 'Z'
local F_PARTITION = 'partition'
local F_OFFSET = 'offset'
local F_OWNER = 'owner'
local F_TTL = 'ttl_ms'
local F_EXPIRY = 'expiry'

local meta, idx, nss, cps, cpv, blobs, w, wi =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local runs, chunks = KEYS[9], KEYS[10]
local data_keys = {idx, nss, cps, cpv, blobs, w, wi, runs, chunks}
local partition = ARGV[ARG_PARTITION]
local user_p, user_s = ARGV[ARG_USER_PREFIX], ARGV[ARG_USER_SUFFIX]
local run_p, run_s = ARGV[ARG_RUN_PREFIX], ARGV[ARG_RUN_SUFFIX]
local thread = ARGV[ARG_THREAD]
local state = redis.call('HMGET', meta, F_PARTITION, F_OFFSET, F_OWNER, F_TTL, F_EXPIRY)
if state[1] and state[1] ~= partition then
  return redis.error_reply('PARTITION thread is tracked on partition ' .. state[1] ..
    ', event comes from partition ' .. partition)
end
local last = tonumber(state[2] or '-1')
local owner = state[3]
local ttl = tonumber(state[4] or '0')
local expiry = tonumber(state[5] or '0')

local function run_key(run) return run_p .. run .. run_s end

local function forget_runs(members)
  for _, member in ipairs(members) do
    local run = redis.call('HGET', runs, member)
    if run then
      redis.call('ZREM', run_key(run), thread .. '\0' .. member)
      redis.call('HDEL', runs, member)
    end
  end
end

local function drop_thread()
  forget_runs(redis.call('HKEYS', runs))
  redis.call('DEL', unpack(data_keys))
  if owner then redis.call('ZREM', user_p .. owner .. user_s, thread) end
end

local function drop_checkpoints(a, n)
  local dropped_fields = {}
  local touched_ns = {}
  for j = a, a + n - 1 do
    local member = ARGV[j]
    if redis.call('HEXISTS', cps, member) == 1 then
      local flat = cjson.decode(redis.call('HGET', cpv, member) or '[]')
      for k = 2, #flat, 2 do dropped_fields[flat[k]] = true end
      forget_runs({member})
      redis.call('HDEL', cps, member)
      redis.call('HDEL', cpv, member)
      redis.call('ZREM', idx, member)
      local wfields = redis.call('ZRANGEBYLEX', wi, '[' .. member .. '\0', '(' .. member .. '\1')
      if #wfields > 0 then
        redis.call('HDEL', w, unpack(wfields))
        redis.call('ZREM', wi, unpack(wfields))
      end
      touched_ns[string.match(member, '^(.-)%z')] = true
    end
  end
  -- A blob is shared by every checkpoint whose channel kept that version.
  for _, flat in ipairs(redis.call('HVALS', cpv)) do
    local fields = cjson.decode(flat)
    for k = 2, #fields, 2 do dropped_fields[fields[k]] = nil end
  end
  for field in pairs(dropped_fields) do redis.call('HDEL', blobs, field) end
  for ns in pairs(touched_ns) do
    if #redis.call('ZRANGEBYLEX', idx, '[' .. ns .. '\0', '(' .. ns .. '\1', 'LIMIT', 0, 1) == 0 then
      redis.call('ZREM', nss, ns)
    end
  end
end

local apply_op

local function apply_multi(offset, a, n)
  local j = a
  while j < a + n do
    local op, m = ARGV[j], tonumber(ARGV[j + 1])
    apply_op(offset, op, j + 2, m)
    j = j + 2 + m
  end
end

apply_op = function(offset, op, a, n)
  if op == OP_PUT then
    local member = ARGV[a]
    redis.call('ZADD', idx, 0, member)
    redis.call('ZADD', nss, 'NX', offset, ARGV[a + 1])
    redis.call('HSET', cps, member, ARGV[a + 2])
    redis.call('HSET', cpv, member, ARGV[a + 3])
    local run = ARGV[a + 4]
    if run ~= '' then
      redis.call('HSET', runs, member, run)
      redis.call('ZADD', run_key(run), 0, thread .. '\0' .. member)
    end
    for j = a + 5, a + n - 1, 2 do
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
    drop_thread()
  elseif op == OP_DROP then
    drop_checkpoints(a, n)
  elseif op == OP_MULTI then
    apply_multi(offset, a, n)
  elseif op == OP_CHUNK then
    redis.call('HSET', chunks, ARGV[a], ARGV[a + 1])
  elseif op == OP_CHUNK_DONE then
    if n > 0 then redis.call('HDEL', chunks, unpack(ARGV, a, a + n - 1)) end
  end
end

local applied, skipped, refused = 0, 0, 0
local active = nil
local i = ARG_EVENTS
while i <= #ARGV do
  local offset, op, ms, user, event_ttl, n =
    tonumber(ARGV[i]), ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3], ARGV[i + 4],
    tonumber(ARGV[i + 5])
  local a = i + 6
  if offset <= last then
    skipped = skipped + 1
  elseif user ~= '' and owner and owner ~= user then
    refused = refused + 1
    last = offset
  else
    if expiry > 0 and ms >= expiry then drop_thread() end
    if user ~= '' and not owner then
      owner = user
      redis.call('HSET', meta, F_OWNER, owner)
    end
    if event_ttl ~= '' then
      ttl = tonumber(event_ttl)
      redis.call('HSET', meta, F_TTL, ttl)
    end
    apply_op(offset, op, a, n)
    if ttl > 0 then expiry = ms + ttl else expiry = 0 end
    if op ~= OP_DELETE and owner and redis.call('EXISTS', idx) == 1 then
      active = ms
    elseif op == OP_DELETE then
      active = nil
    end
    last = offset
    applied = applied + 1
  end
  i = a + n
end
if applied + refused > 0 then
  redis.call('HSET', meta, F_PARTITION, partition, F_OFFSET, last, F_EXPIRY, expiry)
end
if active and owner then
  redis.call('ZADD', user_p .. owner .. user_s, 'GT', active, thread)
end
if applied > 0 then
  for _, key in ipairs(data_keys) do
    if expiry > 0 then redis.call('PEXPIREAT', key, expiry) else redis.call('PERSIST', key) end
  end
end
return {applied, skipped, refused}
