-- Limit counters in Redis: one script, three operations (admit, settle, status), each one round trip.
-- Mirrors llmgw/domain/limits.py (gcra, check, reserve, settle_state) and memory.py (_read, _write)
-- line by line, in the same units: seconds as doubles, money as integer micro-USD (exact below 2^53).
--
-- KEYS, five per scope: requests tat, tokens tat, in flight, budget spent, budget reserved (the budget
-- keys of the window that ARGV names).
-- ARGV[1] operation: 'admit' | 'settle' | 'status'
-- ARGV[2] now, Unix seconds; '' reads the server's clock (TIME)
-- ARGV[3] in-flight counter ttl, ms
-- ARGV[4], ARGV[5] demand tokens, micros; ARGV[6], ARGV[7] actual tokens, micros (settle)
-- then seven per scope: rpm, tpm, max_parallel, budget micros ('' = none), tracks budget ('1' | ''),
-- window start, window end ('' = lifetime).
--
-- Replies (strings only: Redis truncates Lua numbers to integers):
-- {'period', now}  now lies outside a scope's budget window: the caller names the window again.
-- {'ok', now, state...} or {'refused', now, scope index, reason, retry after, left, exceeds, state...};
-- state is five strings per scope: requests tat, tokens tat ('' = absent), in flight, spent, reserved.

local WINDOW = 60.0
local SLACK = 0.001
local DAY = 86400
local HEAD = 7

local function num(text)
  if text == '' then return nil end
  return tonumber(text)
end

local function float(x) return string.format('%.17g', x) end
local function int(x) return string.format('%.0f', x) end

local now = num(ARGV[2])
if now == nil then
  local time = redis.call('TIME')
  now = tonumber(time[1]) + tonumber(time[2]) / 1000000
end
local op = ARGV[1]
local in_flight_ttl = ARGV[3]
local demand = {tokens = tonumber(ARGV[4]), micros = tonumber(ARGV[5])}
local actual = {tokens = num(ARGV[6]), micros = num(ARGV[7])}
local count = #KEYS / 5

-- A tat in the past acts as absent (GCRA takes max(tat, now)).
local function live(tat)
  if tat ~= nil and tat > now then return tat end
  return nil
end

local function read(i)
  local k, a = (i - 1) * 5, HEAD + (i - 1) * 7
  local values = redis.call('MGET', KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], KEYS[k + 5])
  return {
    keys = {KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], KEYS[k + 5]},
    rpm = num(ARGV[a + 1]), tpm = num(ARGV[a + 2]), max_parallel = num(ARGV[a + 3]),
    budget = num(ARGV[a + 4]), tracks = ARGV[a + 5] == '1',
    start = num(ARGV[a + 6]), ends = num(ARGV[a + 7]) or math.huge,
    requests_tat = live(tonumber(values[1])), tokens_tat = live(tonumber(values[2])),
    in_flight = tonumber(values[3]) or 0, spent = tonumber(values[4]) or 0, reserved = tonumber(values[5]) or 0,
  }
end

local function gcra(tat, cost)
  local t = now
  if tat ~= nil then t = math.max(tat, now) end
  local over = t + cost - now - WINDOW
  if over <= SLACK then return true, t + cost, 0.0 end
  return false, t, math.max(0.0, over - SLACK)
end

local function token_cost(tokens, tpm) return tokens * WINDOW / tpm end

local function budget_left(s) return math.max(0, s.budget - s.spent - s.reserved) end

-- The refusal: reason, retry after, what is left (budget), whether the request alone is over tpm.
local function check(s)
  if s.rpm ~= nil then
    local admitted, _, retry = gcra(s.requests_tat, WINDOW / s.rpm)
    if not admitted then return 'requests', retry, '', '' end
  end
  if s.tpm ~= nil then
    if demand.tokens > s.tpm then return 'tokens', WINDOW, '', '1' end
    local admitted, _, retry = gcra(s.tokens_tat, token_cost(demand.tokens, s.tpm))
    if not admitted then return 'tokens', retry, '', '' end
  end
  if s.max_parallel ~= nil and s.in_flight >= s.max_parallel then return 'parallel', 1.0, '', '' end
  if s.budget ~= nil and demand.micros > 0 then
    local left = budget_left(s)
    if demand.micros > left then return 'budget', s.ends - now, int(left), '' end
  end
  return nil
end

local function reserve(s)
  if s.rpm ~= nil then
    local _, tat = gcra(s.requests_tat, WINDOW / s.rpm)
    s.requests_tat = tat
  end
  if s.tpm ~= nil then
    local _, tat = gcra(s.tokens_tat, token_cost(demand.tokens, s.tpm))
    s.tokens_tat = tat
  end
  if s.max_parallel ~= nil then s.in_flight = s.in_flight + 1 end
  if s.tracks then s.reserved = s.reserved + demand.micros end
end

local function settle(s)
  if s.tpm ~= nil then
    local base = now
    if s.tokens_tat ~= nil then base = math.max(s.tokens_tat, now) end
    s.tokens_tat = base + token_cost(actual.tokens - demand.tokens, s.tpm)
  end
  if s.max_parallel ~= nil then s.in_flight = math.max(0, s.in_flight - 1) end
  if s.tracks then
    s.reserved = math.max(0, s.reserved - demand.micros)
    s.spent = s.spent + actual.micros
  end
end

-- A tat lives until 60 s past itself; a budget until a day past its window's end (a lifetime one for
-- ever); the in-flight counter for its ttl after its last change, so a crashed replica's slots go.
local function write_tat(key, tat)
  tat = live(tat)
  if tat == nil then
    redis.call('DEL', key)
  else
    redis.call('SET', key, float(tat), 'PX', math.max(1, math.ceil((tat - now + WINDOW) * 1000)))
  end
end

local function write(s)
  if s.rpm ~= nil then write_tat(s.keys[1], s.requests_tat) end
  if s.tpm ~= nil then write_tat(s.keys[2], s.tokens_tat) end
  if s.max_parallel ~= nil then
    if s.in_flight > 0 then
      redis.call('SET', s.keys[3], int(s.in_flight), 'PX', in_flight_ttl)
    else
      redis.call('DEL', s.keys[3])
    end
  end
  if s.tracks then
    if s.start == nil then
      redis.call('SET', s.keys[4], int(s.spent))
      redis.call('SET', s.keys[5], int(s.reserved))
    else
      local ttl = math.max(1, math.ceil(s.ends - now + DAY))
      redis.call('SET', s.keys[4], int(s.spent), 'EX', ttl)
      redis.call('SET', s.keys[5], int(s.reserved), 'EX', ttl)
    end
  end
end

local function state(reply, s)
  local requests_tat, tokens_tat = '', ''
  if s.requests_tat ~= nil then requests_tat = float(s.requests_tat) end
  if s.tokens_tat ~= nil then tokens_tat = float(s.tokens_tat) end
  for _, value in ipairs({requests_tat, tokens_tat, int(s.in_flight), int(s.spent), int(s.reserved)}) do
    reply[#reply + 1] = value
  end
end

local scopes = {}
for i = 1, count do
  local s = read(i)
  if s.tracks and s.start ~= nil and (now < s.start or now >= s.ends) then return {'period', float(now)} end
  scopes[i] = s
end

if op == 'settle' then
  for i = 1, count do
    settle(scopes[i])
    write(scopes[i])
  end
  return {'ok', float(now)}
end

local reply = {'ok', float(now)}
if op == 'admit' then
  for i = 1, count do
    local reason, retry, left, exceeds = check(scopes[i])
    if reason ~= nil then
      reply = {'refused', float(now), tostring(i), reason, float(retry), left, exceeds}
      for j = 1, count do state(reply, scopes[j]) end
      return reply
    end
  end
  for i = 1, count do
    reserve(scopes[i])
    write(scopes[i])
  end
end
for i = 1, count do state(reply, scopes[i]) end
return reply
