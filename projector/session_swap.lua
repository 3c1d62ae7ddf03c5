-- Puts a session rebuilt under a scratch namespace in place, atomically
-- (chatlog.projector.session_rebuild), unless the live projector applied
-- something newer meanwhile: then it returns 0 and the rebuild reads on.
-- Layout: chatlog.projector.protocol, SCRIPT_CONSTANTS["session_swap"].
local KEY_SCRATCH_MESSAGES = 1
local KEY_SCRATCH_META = 2
local KEY_LIVE_MESSAGES = 3
local KEY_LIVE_META = 4
local KEY_SCRATCH_IDS = 5
local KEY_LIVE_IDS = 6
local ARG_LAST_OFFSET = 1
local F_OFFSET = 'offset'

local live = redis.call('HGET', KEYS[KEY_LIVE_META], F_OFFSET)
if live and tonumber(live) > tonumber(ARGV[ARG_LAST_OFFSET]) then return 0 end
local moves = {
  {KEYS[KEY_SCRATCH_MESSAGES], KEYS[KEY_LIVE_MESSAGES]},
  {KEYS[KEY_SCRATCH_META], KEYS[KEY_LIVE_META]},
  -- [exactly] the message ids decide later duplicates: they move with the messages
  {KEYS[KEY_SCRATCH_IDS], KEYS[KEY_LIVE_IDS]},
}
for _, move in ipairs(moves) do
  if redis.call('EXISTS', move[1]) == 1 then
    redis.call('RENAME', move[1], move[2])
  else
    redis.call('DEL', move[2])
  end
end
return 1
