-- A Tool is Healthy when its MCP server answers and the gateway can exchange tokens for its
-- audience; every other Ready=False reason is something a person must fix.
local hs = unobserved(obj)
if hs ~= nil then
  return hs
end
local ready = condition(obj, "Ready")
if ready ~= nil and ready.status == "False" then
  return { status = "Degraded", message = said(ready) }
end
return from_ready(obj, {})
