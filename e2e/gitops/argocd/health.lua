-- Argo CD health check for lockkeeper.dev/Release (Lua 5.1, as Argo CD runs).
-- Reads the kstatus conditions the operator writes (Ready, Reconciling,
-- Stalled, each with observedGeneration) and the phase:
--   Degraded     Stalled=True, or phase RolledBack / Failed
--   Suspended    waiting for a person: phase AwaitingApproval, or CuttingOver
--                waiting for a promote request
--   Healthy      Ready=True for the current generation
--   Progressing  anything else (Reconciling=True, not yet observed, ...)
local hs = {}

local function conditionMessage(condition, fallback)
  if condition ~= nil and condition.message ~= nil and condition.message ~= "" then
    return condition.message
  end
  return fallback
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe the Release"
  return hs
end

local status = obj.status
local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local conditions = {}
if status.conditions ~= nil then
  for _, condition in ipairs(status.conditions) do
    conditions[condition.type] = condition
  end
end
local ready = conditions["Ready"]
local reconciling = conditions["Reconciling"]
local stalled = conditions["Stalled"]
local phase = status.phase

if (stalled ~= nil and stalled.status == "True") or phase == "RolledBack" or phase == "Failed" then
  hs.status = "Degraded"
  hs.message = conditionMessage(stalled, "Release is " .. tostring(phase))
  return hs
end

if phase == "AwaitingApproval" or (reconciling ~= nil and reconciling.status == "True" and reconciling.reason == "AwaitingApproval") then
  hs.status = "Suspended"
  hs.message = conditionMessage(reconciling, "Waiting for approval")
  return hs
end

if phase == "CuttingOver" and reconciling ~= nil and reconciling.status == "True"
    and reconciling.reason == "CuttingOver" and reconciling.message ~= nil
    and string.find(reconciling.message, "promote", 1, true) ~= nil then
  hs.status = "Suspended"
  hs.message = reconciling.message
  return hs
end

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = conditionMessage(ready, "Ready")
  return hs
end

hs.status = "Progressing"
hs.message = conditionMessage(reconciling, "Release is " .. tostring(phase or "Pending"))
return hs
