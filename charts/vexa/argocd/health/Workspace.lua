-- A Workspace is Healthy when it can be mounted; Degraded when a person must fix something
-- (overlapping storage, a missing claim or seed, a failed preparation).
local hs = unobserved(obj)
if hs ~= nil then
  return hs
end
return from_ready(obj, {
  StorageOverlaps = true,
  ClaimNotFound = true,
  SeedNotFound = true,
  PrepareFailed = true,
})
