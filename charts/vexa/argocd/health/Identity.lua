-- An Identity is Healthy when its subject can act (linked in the identity provider, where one
-- is configured); Degraded while the link fails (its dispatches' tool calls are refused).
local hs = unobserved(obj)
if hs ~= nil then
  return hs
end
local ready = condition(obj, "Ready")
if ready ~= nil and ready.status == "False" then
  return { status = "Degraded", message = said(ready) }
end
return from_ready(obj, {})
