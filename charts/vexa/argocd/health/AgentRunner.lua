-- An AgentRunner is Healthy when dispatches can use it; Degraded when its model credential
-- cannot be brokered.
local hs = unobserved(obj)
if hs ~= nil then
  return hs
end
return from_ready(obj, {
  CredentialNotFound = true,
  CredentialKeyMissing = true,
})
