-- Shared by every Vexa health check: argocd-cm.yaml holds this file followed by the kind's.
-- Argo CD runs each check with the live object in `obj` (Lua 5.1, as gopher-lua).

-- The condition `type` of `obj`, or nil.
local function condition(obj, type)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

-- "Reason: message" of a condition, for a person reading Argo CD.
local function said(c)
  if c == nil then
    return ""
  end
  local reason = c.reason or ""
  if c.message == nil or c.message == "" then
    return reason
  end
  return reason .. ": " .. c.message
end

-- Progressing while the operator has not written a status for the current spec.
local function unobserved(obj)
  if obj.status == nil then
    return { status = "Progressing", message = "Waiting for the Vexa operator" }
  end
  local generation = obj.metadata.generation
  local observed = obj.status.observedGeneration
  if generation ~= nil and (observed == nil or observed < generation) then
    return {
      status = "Progressing",
      message = "Waiting for the Vexa operator to observe generation " .. tostring(generation),
    }
  end
  return nil
end

-- Health from the Ready condition: True is Healthy; False is Degraded when its reason is in
-- `broken` (a person must act), Progressing otherwise (the operator is still at work).
local function from_ready(obj, broken)
  local ready = condition(obj, "Ready")
  if ready == nil then
    return { status = "Progressing", message = "Waiting for the Ready condition" }
  end
  if ready.status == "True" then
    return { status = "Healthy", message = said(ready) }
  end
  if ready.status == "False" and broken[ready.reason] then
    return { status = "Degraded", message = said(ready) }
  end
  return { status = "Progressing", message = said(ready) }
end

-- Health from the Ready condition, for kinds where every Ready=False needs a person.
local function ready_or_degraded(obj)
  local ready = condition(obj, "Ready")
  if ready ~= nil and ready.status == "False" then
    return { status = "Degraded", message = said(ready) }
  end
  return from_ready(obj, {})
end
