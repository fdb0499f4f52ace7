-- Rebuild one scope's budget counter from the generation records (`RedisLimitStore.restore`): the window's
-- `spent` becomes the larger of its value and ARGV[1], with the expiry limits.lua gives it. Never lowers a
-- counter, so it is idempotent and safe when several processes restore at once.
--
-- KEYS[1] the window's spent counter (the key limits.lua names).
-- ARGV[1] spent micro-USD; ARGV[2] now, Unix seconds ('' reads the server's clock); ARGV[3], ARGV[4] the
-- window's start and end ('' = lifetime).
-- Reply: 1 when it raised the counter, 0 when not; 0 too when now lies outside the window (the period
-- just ended: the records summed were the old window's, and the caller tries again in the new one).

local DAY = 86400
local spent = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
if now == nil then
  local time = redis.call('TIME')
  now = tonumber(time[1]) + tonumber(time[2]) / 1000000
end
local start, ends = tonumber(ARGV[3]), tonumber(ARGV[4])
if start ~= nil and (now < start or now >= ends) then return 0 end
if spent <= (tonumber(redis.call('GET', KEYS[1])) or 0) then return 0 end
if start == nil then
  redis.call('SET', KEYS[1], string.format('%.0f', spent))
else
  redis.call('SET', KEYS[1], string.format('%.0f', spent), 'EX', math.max(1, math.ceil(ends - now + DAY)))
end
return 1
