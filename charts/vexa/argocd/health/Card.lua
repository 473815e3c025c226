-- A Card: pending is Suspended (it waits for a person's decision); approved is Progressing
-- while it is applied; applied and rejected are Healthy (the decision was carried out); a card
-- that could not be applied is Degraded.
local hs = unobserved(obj)
if hs ~= nil then
  return hs
end
local phase = obj.status.phase
local applied = condition(obj, "Applied")
if phase == "pending" then
  local owner = ""
  if obj.spec ~= nil and obj.spec.owner ~= nil then
    owner = " by " .. obj.spec.owner
  end
  return { status = "Suspended", message = "Awaiting a decision" .. owner }
end
if phase == "applied" then
  return { status = "Healthy", message = said(applied) }
end
if phase == "rejected" then
  return { status = "Healthy", message = "Rejected" }
end
if phase == "failed" then
  return { status = "Degraded", message = said(applied) }
end
local ready = condition(obj, "Ready")
if ready ~= nil and ready.status == "True" then
  -- Approved, with nothing to apply (a draft, a suggestion).
  return { status = "Healthy", message = said(ready) }
end
if applied ~= nil then
  return { status = "Progressing", message = said(applied) }
end
return { status = "Progressing", message = "Approved; being applied" }
