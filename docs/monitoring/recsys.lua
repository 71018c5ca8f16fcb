-- INFO recsys as a flat key/value array, for redis_exporter's --script
-- option: every field becomes redis_script_values{key="recsys_..."}.
--   redis_exporter --script docs/monitoring/recsys.lua
-- Tested by tests/operations.rs (EVAL against a real server).
local out = {}
local text = redis.call('INFO', 'recsys')
for k, v in string.gmatch(text, '(recsys_[%w_]+):(%-?[%d%.]+)') do
  out[#out + 1] = k
  out[#out + 1] = v
end
return out
