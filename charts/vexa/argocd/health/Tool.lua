-- A Tool is Healthy when its MCP server answers and the gateway can exchange tokens for its
-- audience; every other Ready=False reason is something a person must fix.
local hs = unobserved(obj)
if hs ~= nil then
  return hs
end
return ready_or_degraded(obj)
