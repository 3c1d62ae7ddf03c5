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
local ARG_IDS_PREFIX = 11
local ARG_IDS_SUFFIX = 12
local ARG_VERDICTS_PREFIX = 13
local ARG_VERDICTS_SUFFIX = 14
local ARG_SLOT_MODE = 15
local ARG_POSITIONS = 16
local SESSION_ID = 0
local SESSION_PARTITION = 1
local SESSION_EVENT_COUNT = 2
local SESSION_HEADER = 3
local EVENT_OFFSET = 0
local EVENT_OP = 1
local EVENT_ARG = 2
local EVENT_MS = 3
local EVENT_USER = 4
local EVENT_KEY = 5
local EVENT_WIDTH = 6
local OP_APPEND = 'A'
local OP_APPEND_IF = 'G'
local OP_CLEAR = 'C'
local OP_DELETE_SESSION = 'D'
local OP_SET_TTL = 'T'
local OP_SHREDDED = 'N'
local NOTE_SKIPPED = 'S'
local NOTE_OWNER = 'O'
local NOTE_REJECTED = 'R'
local NOTE_PARTITION = 'P'
local NOTE_ERROR = 'E'
local NOTE_DUPLICATE = 'K'
local NOTE_CONFLICT = 'V'
local VERDICT_APPLIED = 'A'
local VERDICT_DUPLICATE = 'D'
local VERDICT_CONFLICT = 'V'
local VERDICT_SHREDDED = 'S'
local VERDICT_TTL_MS = 3600000
local EXPIRED_TOMBSTONE_MS = 604800000
local EXPIRED_GRACE_MS = 300000
local MAX_TTL_MS = 3153600000000
local KEY_GENERATION = 1
local KEY_SLOT_MARKER = 1
local SLOT_CHECK = 'C'
local SLOT_NEW = 'N'
local SLOT_WRITE = 'W'
local LOST_SLOT = 'slot'
local NOTE_LOST = 'L'
local NOTE_HOLE = 'H'
local NOTE_INDEX = 'X'
local INDEX_ADD = '+'
local INDEX_DROP = '-'
local F_PARTITION = 'partition'
local F_OFFSET = 'offset'
local F_COUNT = 'count'
local F_OWNER = 'owner'
local F_UPDATED = 'updated_at'
local F_DELETED = 'deleted'
local F_TTL = 'ttl_ms'
local F_CREATED = 'created_at'
local F_EXPIRY = 'expiry'
local F_EXPIRED = 'expired'

-- Loss detection (issue 14): a live projector passes the namespace's
-- generation key; without it the namespace lost its keys (a flush, a restart
-- without persistence), and applying would leave sessions without their past.
-- On Redis Cluster (an empty user key prefix) the generation key lives in
-- another slot: the call's first key is instead its slot's marker, which a
-- slot the namespace wrote to must still hold (a primary that lost its data
-- lost its slots' markers); ARG_SLOT_MODE says whether the caller knows the
-- slot was written to (chatlog.projector.cluster_projection).
local slot_mode = ARGV[ARG_SLOT_MODE]
local check_loss
if ARGV[ARG_USER_PREFIX] ~= '' then
  check_loss = #KEYS >= KEY_GENERATION
  if check_loss and redis.call('EXISTS', KEYS[KEY_GENERATION]) == 0 then
    return {0, 0, 0, NOTE_LOST, ''}
  end
else
  check_loss = slot_mode == SLOT_CHECK or slot_mode == SLOT_NEW
  if slot_mode == SLOT_CHECK then
    if redis.call('EXISTS', KEYS[KEY_SLOT_MARKER]) == 0 then
      return {0, 0, 0, NOTE_LOST, LOST_SLOT}
    end
  elseif slot_mode == SLOT_NEW or slot_mode == SLOT_WRITE then
    redis.call('SET', KEYS[KEY_SLOT_MARKER], '1', 'NX')
  end
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
local ids_p, ids_s = ARGV[ARG_IDS_PREFIX], ARGV[ARG_IDS_SUFFIX]
local verdicts_p, verdicts_s = ARGV[ARG_VERDICTS_PREFIX], ARGV[ARG_VERDICTS_SUFFIX]
local total_applied, total_skipped = 0, 0
local notes = {}

local function note(index, code, value)
  notes[#notes + 1] = index
  notes[#notes + 1] = code
  notes[#notes + 1] = value
end

-- The owner's session index. On Redis Cluster (an empty user key prefix) the
-- user's key lives in another slot, so the change goes to the session's own
-- index outbox (meta prefix .. session .. ARG_USER_SUFFIX, same slot) and the
-- caller moves it to the user index after every slot group of the batch.
local deferred = user_p == ''
local function index_drop(sid, user)
  if deferred then
    redis.call('RPUSH', meta_p .. sid .. user_s, INDEX_DROP .. user)
  else
    redis.call('ZREM', user_p .. user .. user_s, sid)
  end
end

local function index_add(sid, user, score)
  if deferred then
    redis.call('RPUSH', meta_p .. sid .. user_s, INDEX_ADD .. string.format('%d', score) .. ' ' .. user)
  else
    redis.call('ZADD', user_p .. user .. user_s, 'GT', score, sid)
  end
end

-- [exactly] The fields of a conditional append's argument, each '<length>:<bytes>'
-- (chatlog.projector.protocol.pack_fields): the expected version, then
-- (message id, stored message) pairs.
local function unpack_fields(packed)
  local out, pos = {}, 1
  while pos <= #packed do
    local colon = string.find(packed, ':', pos, true)
    local n = tonumber(string.sub(packed, pos, colon - 1))
    out[#out + 1] = string.sub(packed, colon + 1, colon + n)
    pos = colon + n + 1
  end
  return out
end

-- [exactly] An idle TTL as the script applies it: clamped to MAX_TTL_MS (the API
-- refuses longer ones; this keeps a foreign writer's from breaking PEXPIREAT).
local function bounded_ttl(ttl)
  local value = tonumber(ttl) or 0
  if value > MAX_TTL_MS then return MAX_TTL_MS end
  if value < 0 then return 0 end
  return math.floor(value)
end

local function apply_session(index, sid, partition, first, stop)
  local msgs, meta = msgs_p .. sid .. msgs_s, meta_p .. sid .. meta_s
  local state = redis.call('HMGET', meta, F_PARTITION, F_OFFSET, F_COUNT, F_OWNER,
    F_UPDATED, F_DELETED, F_TTL, F_CREATED, F_EXPIRY, F_EXPIRED)
  if state[1] and state[1] ~= partition then
    note(index, NOTE_PARTITION, state[1])
    return
  end
  -- Loss detection (issue 14): meta and list must agree (a deletion or an
  -- expiry tombstone has no list, or one about to expire); otherwise one of
  -- them was lost and the session is rebuilt first.
  if check_loss and not state[6] and not state[10] then
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
  -- [exactly] Message ids: those added in this call, and whether the stored set
  -- still counts (a clear, deletion or expiry in this call empties it).
  local ids, verdicts = ids_p .. sid .. ids_s, verdicts_p .. sid .. verdicts_s
  local seen, new_ids, ids_reset, decided = {}, {}, false, 0
  -- Shredded events (their subject was erased): they only move the offset.
  local shredded = 0
  local verdict_fields = {}
  local function known(id)
    if seen[id] then return true end
    if ids_reset or deleted then return false end
    return redis.call('SISMEMBER', ids, id) == 1
  end
  local function forget_ids()
    seen, new_ids, ids_reset = {}, {}, true
  end
  for i = first, stop, EVENT_WIDTH do
    local offset = tonumber(ARGV[i + EVENT_OFFSET])
    local user = ARGV[i + EVENT_USER]
    local ms = tonumber(ARGV[i + EVENT_MS])
    if ARGV[i + EVENT_OP] == OP_SHREDDED then
      -- Nothing of an erased subject is applied, whoever wrote it and whenever:
      -- no owner, activity, expiry or restart; only the tracking position moves.
      if offset > last then
        last = offset
        shredded = shredded + 1
        if ARGV[i + EVENT_ARG] == OP_APPEND_IF then
          -- A shredded conditional append: its writer waits for a verdict.
          verdict_fields[#verdict_fields + 1] = offset
          verdict_fields[#verdict_fields + 1] = VERDICT_SHREDDED
        end
      else
        skipped = skipped + 1
      end
    else
      if offset > last and last >= 0 then
        local idle = default_ttl
        if ttl ~= '' then idle = bounded_ttl(ttl) end
        if idle > 0 and active + idle <= ms then
          -- Idle-expired before this event, judged by event time as between
          -- batches: it starts afresh (and its new writer may claim it).
          if owner ~= '' then dropped[#dropped + 1] = owner end
          pending, clear, count = {}, true, 0
          former, owner, ttl = owner, '', ''
          deleted, restarted, first_ms, active = false, true, nil, 0
          forget_ids()
        end
      end
      -- [exactly] Verdicts: an append of an id the session holds, or a conditional
      -- append whose ids it all holds, is a duplicate; a conditional append at
      -- another version is refused. Either only moves the offset.
      local verdict, group = nil, nil
      if offset > last and not (owner ~= '' and user ~= owner) then
        local op = ARGV[i + EVENT_OP]
        if op == OP_APPEND then
          local id = ARGV[i + EVENT_KEY]
          if id ~= '' and known(id) then verdict = VERDICT_DUPLICATE end
        elseif op == OP_APPEND_IF then
          group = unpack_fields(ARGV[i + EVENT_ARG])
          local all_known = #group > 1
          for k = 2, #group, 2 do
            if group[k] == '' or not known(group[k]) then all_known = false end
          end
          if all_known then
            verdict = VERDICT_DUPLICATE
          elseif tonumber(group[1]) ~= count then
            verdict = VERDICT_CONFLICT .. count
          end
          verdict_fields[#verdict_fields + 1] = offset
          verdict_fields[#verdict_fields + 1] = verdict or VERDICT_APPLIED
        end
        if verdict then
          note(index, verdict == VERDICT_DUPLICATE and NOTE_DUPLICATE or NOTE_CONFLICT, offset)
          last = offset
          decided = decided + 1
        end
      end
      if verdict then
        -- decided above: neither applied nor skipped
      elseif offset <= last then
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
          forget_ids()
        else
          if deleted then
            deleted, restarted = false, true
          end
          if owner == '' and user ~= '' then owner = user end
          first_ms = first_ms or ms
          if op == OP_APPEND then
            pending[#pending + 1] = ARGV[i + EVENT_ARG]
            count = count + 1
            -- [exactly] remember the id
            local id = ARGV[i + EVENT_KEY]
            if id ~= '' then seen[id] = true; new_ids[#new_ids + 1] = id end
          elseif op == OP_APPEND_IF then
            -- [exactly] every message whose id the session does not hold yet
            for k = 2, #group, 2 do
              local id = group[k]
              if id == '' or not known(id) then
                pending[#pending + 1] = group[k + 1]
                count = count + 1
                if id ~= '' then seen[id] = true; new_ids[#new_ids + 1] = id end
              end
            end
          elseif op == OP_CLEAR then
            pending, clear, count = {}, true, 0
            forget_ids()
          elseif op == OP_SET_TTL then
            ttl = ARGV[i + EVENT_ARG]
          end
        end
        if ms > active then active = ms end
        last = offset
        applied = applied + 1
      end
    end
  end
  if shredded > 0 and applied + decided == 0 and not state[1] then
    -- Shredded events only, of a session this namespace never held: its
    -- tracking position is kept as a deleted session's (a tombstone holding
    -- nothing of anyone), not as an empty session readers would see.
    deleted = true
  end
  decided = decided + shredded
  local gone = deleted
  if applied + decided > 0 then
    -- [exactly] Expiries first, as integers PEXPIREAT takes, before any write:
    -- a bad value can never leave a half-applied session.
    local ttl_ms = default_ttl
    if ttl ~= '' then ttl_ms = bounded_ttl(ttl) end
    local expires = 0
    if ttl_ms > 0 then expires = active + ttl_ms end
    local expires_arg = string.format('%d', expires)
    local tombstone_until = string.format('%d', now + EXPIRED_TOMBSTONE_MS)
    local verdicts_until = string.format('%d', now + VERDICT_TTL_MS)
    local grace_until = string.format('%d', now + EXPIRED_GRACE_MS)
    if #verdict_fields > 0 then
      redis.call('HSET', verdicts, unpack(verdict_fields))
      redis.call('PEXPIREAT', verdicts, verdicts_until)
    end
    if clear then redis.call('DEL', msgs) end
    for i = 1, #pending, 1000 do
      redis.call('RPUSH', msgs, unpack(pending, i, math.min(i + 999, #pending)))
    end
    -- [exactly] the session's message ids follow its messages
    if ids_reset or deleted then redis.call('DEL', ids) end
    for k = 1, #new_ids, 1000 do
      redis.call('SADD', ids, unpack(new_ids, k, math.min(k + 999, #new_ids)))
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
      -- [exactly] a deletion then a write without a user in one batch: no owner left
      if owner == '' and state[4] then gone_fields[#gone_fields + 1] = F_OWNER end
      if was_deleted then gone_fields[#gone_fields + 1] = F_DELETED end
      -- [exactly] a later event inside the expired window continues the session
      if state[10] then gone_fields[#gone_fields + 1] = F_EXPIRED end
      redis.call('HSET', meta, unpack(fields))
      if #gone_fields > 0 then redis.call('HDEL', meta, unpack(gone_fields)) end
    end
    if ttl_ms > 0 then
      if expires <= now then
        -- Judged by event time: a replay of an idle-expired session must not revive it.
        -- [exactly] Marked expired (readers see no session) rather than deleted:
        -- the meta hash keeps the session's state for EXPIRED_TOMBSTONE_MS, so a
        -- redelivered record is skipped and a later record is judged by event
        -- time as the fold judges it (continuing the session when it falls
        -- inside the window, as at a replay's batch boundary); the messages and
        -- ids stay for EXPIRED_GRACE_MS for that, hidden from readers.
        redis.call('HSET', meta, F_EXPIRED, expires_arg)
        redis.call('PEXPIREAT', meta, tombstone_until)
        redis.call('PEXPIREAT', msgs, grace_until)
        redis.call('PEXPIREAT', ids, grace_until)
        if not deleted then former = owner end
        gone = true
      else
        redis.call('PEXPIREAT', msgs, expires_arg)
        redis.call('PEXPIREAT', meta, expires_arg)
        redis.call('PEXPIREAT', ids, expires_arg)
      end
    elseif deleted or state[9] ~= '0' then
      -- The keys may carry an expiry: a tombstone, a session that had a TTL,
      -- or one written before the expiry field existed.
      redis.call('PERSIST', msgs)
      redis.call('PERSIST', meta)
      redis.call('PERSIST', ids)
    end
    -- The owner's session index, kept after the verdicts: only the owner at
    -- the end of the batch lists the session.
    local final = owner
    if gone then
      final = ''
      if owner ~= '' then dropped[#dropped + 1] = owner end
    end
    for i = 1, #dropped do
      if dropped[i] ~= final then index_drop(sid, dropped[i]) end
    end
    -- [exactly] a batch of verdicts only is no activity: it lists nothing again
    if final ~= '' and applied > 0 then
      index_add(sid, final, active)
    end
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
local outboxes = {}
while i <= #ARGV do
  index = index + 1
  if deferred then outboxes[index] = ARGV[i + SESSION_ID] end
  local first = i + SESSION_HEADER
  local stop = first - 1 + EVENT_WIDTH * tonumber(ARGV[i + SESSION_EVENT_COUNT])
  local ok, err = pcall(apply_session, index, ARGV[i + SESSION_ID],
    ARGV[i + SESSION_PARTITION], first, stop)
  if not ok then
    note(index, NOTE_ERROR, type(err) == 'table' and (err.err or 'error') or tostring(err))
  end
  i = stop + 1
end
-- Every outbox entry of the call's sessions, this batch's and any a crash left
-- behind, in order: the caller applies them and trims what it read.
for k = 1, #outboxes do
  local entries = redis.call('LRANGE', meta_p .. outboxes[k] .. user_s, 0, -1)
  for e = 1, #entries do note(k, NOTE_INDEX, entries[e]) end
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
