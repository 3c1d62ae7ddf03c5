-- The projection's apply step (chatlog.projector.redis_projection).
-- Layout and codes: chatlog.projector.protocol, whose SCRIPT_CONSTANTS
-- ["redis_projection"] must equal the constants declared here (a unit test checks).
-- Returns {applied, skipped, then a (session number in this call, note, value)
-- triple per thing the caller must know}.
local ARG_MESSAGES_PREFIX = 1
local ARG_MESSAGES_SUFFIX = 2
local ARG_META_PREFIX = 3
local ARG_META_SUFFIX = 4
local ARG_USER_PREFIX = 5
local ARG_USER_SUFFIX = 6
local ARG_DEFAULT_TTL = 7
local ARG_NOW = 8
local ARG_POSITIONS_KEY = 9
local ARG_POSITION_COUNT = 10
local ARG_POSITIONS = 11
local SESSION_ID = 0
local SESSION_PARTITION = 1
local SESSION_EVENT_COUNT = 2
local SESSION_HEADER = 3
local EVENT_OFFSET = 0
local EVENT_OP = 1
local EVENT_ARG = 2
local EVENT_MS = 3
local EVENT_USER = 4
local EVENT_WIDTH = 5
local OP_APPEND = 'A'
local OP_CLEAR = 'C'
local OP_DELETE_SESSION = 'D'
local OP_SET_TTL = 'T'
local NOTE_SKIPPED = 'S'
local NOTE_OWNER = 'O'
local NOTE_REJECTED = 'R'
local NOTE_PARTITION = 'P'
local NOTE_ERROR = 'E'
local KEY_GENERATION = 1
local NOTE_LOST = 'L'
local NOTE_HOLE = 'H'
local F_PARTITION = 'partition'
local F_OFFSET = 'offset'
local F_COUNT = 'count'
local F_OWNER = 'owner'
local F_UPDATED = 'updated_at'
local F_DELETED = 'deleted'
local F_TTL = 'ttl_ms'
local F_CREATED = 'created_at'
local F_EXPIRY = 'expiry'

-- Loss detection (issue 14): a live projector passes the namespace's
-- generation key; without it the namespace lost its keys (a flush, a restart
-- without persistence), and applying would leave sessions without their past.
if #KEYS >= KEY_GENERATION and redis.call('EXISTS', KEYS[KEY_GENERATION]) == 0 then
  return {0, 0, 0, NOTE_LOST, ''}
end

local msgs_p, msgs_s = ARGV[ARG_MESSAGES_PREFIX], ARGV[ARG_MESSAGES_SUFFIX]
local meta_p, meta_s = ARGV[ARG_META_PREFIX], ARGV[ARG_META_SUFFIX]
local user_p, user_s = ARGV[ARG_USER_PREFIX], ARGV[ARG_USER_SUFFIX]
local default_ttl = tonumber(ARGV[ARG_DEFAULT_TTL])
local now = tonumber(ARGV[ARG_NOW])
local positions = ARGV[ARG_POSITIONS_KEY]
local npos = tonumber(ARGV[ARG_POSITION_COUNT])
-- The user deletions' count, then their (user, event ms) pairs.
local users_count_at = ARG_POSITIONS + 2 * npos
local users_at = users_count_at + 1
local nusers = tonumber(ARGV[users_count_at])
local total_applied, total_skipped = 0, 0
local notes = {}

local function note(index, code, value)
  notes[#notes + 1] = index
  notes[#notes + 1] = code
  notes[#notes + 1] = value
end

local function apply_session(index, sid, partition, first, stop)
  local msgs, meta = msgs_p .. sid .. msgs_s, meta_p .. sid .. meta_s
  local state = redis.call('HMGET', meta, F_PARTITION, F_OFFSET, F_COUNT, F_OWNER,
    F_UPDATED, F_DELETED, F_TTL, F_CREATED, F_EXPIRY)
  if state[1] and state[1] ~= partition then
    note(index, NOTE_PARTITION, state[1])
    return
  end
  -- Loss detection (issue 14): meta and list must agree (a tombstone has no
  -- list); otherwise one of them was lost and the session is rebuilt first.
  if #KEYS >= KEY_GENERATION and not state[6] then
    local held = redis.call('LLEN', msgs)
    if (state[1] and tonumber(state[3] or '0') ~= held) or (not state[1] and held > 0) then
      note(index, NOTE_HOLE, held)
      return
    end
  end
  local last = tonumber(state[2] or '-1')
  local count = tonumber(state[3] or '0')
  local owner = state[4] or ''
  local former = owner
  local active = tonumber(state[5] or '0')
  local deleted = state[6] and true or false
  local was_deleted = deleted
  local ttl = state[7] or ''
  local applied, skipped = 0, 0
  local rejected = {}
  local pending = {}
  -- Everyone who owned the session during the batch: their index entries go
  -- unless they still own it at the end.
  local dropped = {}
  local clear, restarted = false, false
  local first_ms = nil
  for i = first, stop, EVENT_WIDTH do
    local offset = tonumber(ARGV[i + EVENT_OFFSET])
    local user = ARGV[i + EVENT_USER]
    local ms = tonumber(ARGV[i + EVENT_MS])
    if offset > last and last >= 0 then
      local idle = default_ttl
      if ttl ~= '' then idle = tonumber(ttl) end
      if idle > 0 and active + idle <= ms then
        -- Idle-expired before this event, judged by event time as between
        -- batches: it starts afresh (and its new writer may claim it).
        if owner ~= '' then dropped[#dropped + 1] = owner end
        pending, clear, count = {}, true, 0
        former, owner, ttl = owner, '', ''
        deleted, restarted, first_ms, active = false, true, nil, 0
      end
    end
    if offset <= last then
      skipped = skipped + 1
    elseif owner ~= '' and user ~= owner then
      rejected[#rejected + 1] = offset
    else
      local op = ARGV[i + EVENT_OP]
      if op == OP_DELETE_SESSION then
        if owner ~= '' then dropped[#dropped + 1] = owner end
        pending, clear, count = {}, true, 0
        former, owner, ttl = owner, '', ''
        deleted, first_ms = true, nil
      else
        if deleted then
          deleted, restarted = false, true
        end
        if owner == '' and user ~= '' then owner = user end
        first_ms = first_ms or ms
        if op == OP_APPEND then
          pending[#pending + 1] = ARGV[i + EVENT_ARG]
          count = count + 1
        elseif op == OP_CLEAR then
          pending, clear, count = {}, true, 0
        elseif op == OP_SET_TTL then
          ttl = ARGV[i + EVENT_ARG]
        end
      end
      if ms > active then active = ms end
      last = offset
      applied = applied + 1
    end
  end
  local gone = deleted
  if applied > 0 then
    local ttl_ms = default_ttl
    if ttl ~= '' then ttl_ms = tonumber(ttl) end
    local expires = 0
    if ttl_ms > 0 then expires = active + ttl_ms end
    if clear then redis.call('DEL', msgs) end
    for i = 1, #pending, 1000 do
      redis.call('RPUSH', msgs, unpack(pending, i, math.min(i + 999, #pending)))
    end
    if deleted then
      -- The tombstone keeps only the tracking position: nothing of the user.
      redis.call('DEL', meta)
      redis.call('HSET', meta, F_PARTITION, partition, F_OFFSET, last, F_DELETED, active)
    else
      -- One HSET and at most one HDEL: each redis.call costs the script about
      -- a microsecond, the bulk of its time in the common one-append case.
      -- expiry: when the keys expire, 0 for never (then they need no PERSIST).
      local fields = {F_PARTITION, partition, F_OFFSET, last, F_COUNT, count,
        F_UPDATED, active, F_EXPIRY, expires}
      if first_ms and (restarted or not state[8]) then
        fields[#fields + 1] = F_CREATED
        fields[#fields + 1] = first_ms
      end
      if owner ~= '' then
        fields[#fields + 1] = F_OWNER
        fields[#fields + 1] = owner
      end
      local gone_fields = {}
      if ttl ~= '' then
        fields[#fields + 1] = F_TTL
        fields[#fields + 1] = ttl
      elseif state[7] then
        gone_fields[#gone_fields + 1] = F_TTL
      end
      if was_deleted then gone_fields[#gone_fields + 1] = F_DELETED end
      redis.call('HSET', meta, unpack(fields))
      if #gone_fields > 0 then redis.call('HDEL', meta, unpack(gone_fields)) end
    end
    if ttl_ms > 0 then
      if expires <= now then
        -- Judged by event time: a replay of an idle-expired session must not revive it.
        redis.call('DEL', msgs, meta)
        if not deleted then former = owner end
        gone = true
      else
        redis.call('PEXPIREAT', msgs, expires)
        redis.call('PEXPIREAT', meta, expires)
      end
    elseif deleted or state[9] ~= '0' then
      -- The keys may carry an expiry: a tombstone, a session that had a TTL,
      -- or one written before the expiry field existed.
      redis.call('PERSIST', msgs)
      redis.call('PERSIST', meta)
    end
    -- The owner's session index, kept after the verdicts: only the owner at
    -- the end of the batch lists the session.
    local final = owner
    if gone then
      final = ''
      if owner ~= '' then dropped[#dropped + 1] = owner end
    end
    for i = 1, #dropped do
      if dropped[i] ~= final then redis.call('ZREM', user_p .. dropped[i] .. user_s, sid) end
    end
    if final ~= '' then redis.call('ZADD', user_p .. final .. user_s, 'GT', active, sid) end
  end
  total_applied = total_applied + applied
  total_skipped = total_skipped + skipped
  if skipped > 0 then note(index, NOTE_SKIPPED, skipped) end
  if #rejected > 0 then
    note(index, NOTE_OWNER, gone and former or owner)
    for i = 1, #rejected do note(index, NOTE_REJECTED, rejected[i]) end
  end
end

local i = users_at + 2 * nusers
local index = 0
while i <= #ARGV do
  index = index + 1
  local first = i + SESSION_HEADER
  local stop = first - 1 + EVENT_WIDTH * tonumber(ARGV[i + SESSION_EVENT_COUNT])
  local ok, err = pcall(apply_session, index, ARGV[i + SESSION_ID],
    ARGV[i + SESSION_PARTITION], first, stop)
  if not ok then
    note(index, NOTE_ERROR, type(err) == 'table' and (err.err or 'error') or tostring(err))
  end
  i = stop + 1
end
-- After every session of the batch: a deleted user's entries not newer than
-- the deletion (a redelivered UserDeleted must not hide later sessions).
for k = users_at, users_at + 2 * nusers - 1, 2 do
  redis.call('ZREMRANGEBYSCORE', user_p .. ARGV[k] .. user_s, '-inf', ARGV[k + 1])
end
-- Last: the applied positions, which only ever move forward.
for k = ARG_POSITIONS, ARG_POSITIONS + 2 * npos - 1, 2 do
  local current = tonumber(redis.call('HGET', positions, ARGV[k]) or '-1')
  if tonumber(ARGV[k + 1]) > current then
    redis.call('HSET', positions, ARGV[k], ARGV[k + 1])
  end
end
local reply = {total_applied, total_skipped}
for k = 1, #notes do reply[#reply + 1] = notes[k] end
return reply
