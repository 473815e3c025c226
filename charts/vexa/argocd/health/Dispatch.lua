-- A Dispatch: a finished run is Healthy when it succeeded and Degraded when it failed; a
-- refused one is Degraded with the refusal; queued, starting and running are Progressing.
local hs = unobserved(obj)
if hs ~= nil then
  return hs
end
local phase = obj.status.phase
if phase == "refused" then
  local why = condition(obj, "Authorized")
  if why == nil or why.status ~= "False" then
    why = condition(obj, "Valid")
  end
  return { status = "Degraded", message = "Refused: " .. said(why) }
end
local finished = condition(obj, "Finished")
if finished ~= nil and finished.status == "True" then
  if finished.reason == "Succeeded" then
    return { status = "Healthy", message = said(finished) }
  end
  return { status = "Degraded", message = said(finished) }
end
if phase == "queued" then
  return { status = "Progressing", message = "Queued: " .. said(condition(obj, "Queued")) }
end
local ready = condition(obj, "Ready")
if ready ~= nil then
  return { status = "Progressing", message = said(ready) }
end
return { status = "Progressing", message = "Phase " .. tostring(phase) }
