-- An Identity is Healthy when its subject can act (linked in the identity provider, where one
-- is configured); Degraded while the link fails (its dispatches' tool calls are refused).
local hs = unobserved(obj)
if hs ~= nil then
  return hs
end
return ready_or_degraded(obj)
