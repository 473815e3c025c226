-- A Schedule: suspended is Suspended; paused after a failed run is Degraded (a person resumes
-- it); refused (invalid, or not granted) is Degraded; one with runs ahead is Healthy, and one
-- with none left (past its endTime) is Healthy too, its work done.
local hs = unobserved(obj)
if hs ~= nil then
  return hs
end
if obj.spec ~= nil and obj.spec.suspend == true then
  return { status = "Suspended", message = "spec.suspend is true" }
end
local paused = condition(obj, "Paused")
if paused ~= nil and paused.status == "True" then
  return { status = "Degraded", message = said(paused) }
end
local ready = condition(obj, "Ready")
if ready ~= nil and ready.status == "False" then
  if ready.reason == "NoMoreRuns" then
    return { status = "Healthy", message = said(ready) }
  end
  return { status = "Degraded", message = said(ready) }
end
return from_ready(obj, {})
