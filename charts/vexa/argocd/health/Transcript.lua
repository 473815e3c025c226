-- A Transcript is Progressing while its meeting is live and Healthy once it completed;
-- Degraded when its stream is not read (not allowed, or claimed by another Transcript).
local hs = unobserved(obj)
if hs ~= nil then
  return hs
end
local valid = condition(obj, "Valid")
if valid ~= nil and valid.status == "False" then
  return { status = "Degraded", message = said(valid) }
end
if obj.status.phase == "completed" then
  return { status = "Healthy", message = said(condition(obj, "Ready")) }
end
local ready = condition(obj, "Ready")
if ready == nil then
  return { status = "Progressing", message = "Waiting for the transcript's stream" }
end
return { status = "Progressing", message = said(ready) }
