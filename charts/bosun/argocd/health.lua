-- Argo CD health check for every bosun.dev kind (Provider, ClusterProvider, Workspace,
-- ServiceScale, DomainBinding). Install it as resource.customizations.health.bosun.dev_<Kind>
-- in argocd-cm (see docs/gitops.md). It reads the same conditions kstatus does:
--   Stalled=True              -> Degraded (bosun needs a change from you; the message says what)
--   Synced reason Paused      -> Suspended (bosun.dev/paused is set)
--   status behind the spec    -> Progressing
--   Reconciling=True          -> Progressing
--   Ready=True                -> Healthy
--   anything else             -> Progressing
local hs = {}
local function condition(kind)
  if obj.status ~= nil and obj.status.conditions ~= nil then
    for _, c in ipairs(obj.status.conditions) do
      if c.type == kind then
        return c
      end
    end
  end
  return nil
end

if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for bosun to report status"
  return hs
end

local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = (stalled.reason or "Stalled") .. ": " .. (stalled.message or "")
  return hs
end

local synced = condition("Synced")
if synced ~= nil and synced.reason == "ReconcilePaused" then
  hs.status = "Suspended"
  hs.message = synced.message or "bosun.dev/paused is set"
  return hs
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for bosun to observe generation " .. generation
  return hs
end

local reconciling = condition("Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = (reconciling.reason or "Reconciling") .. ": " .. (reconciling.message or "")
  return hs
end

local ready = condition("Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or ""
  return hs
end

hs.status = "Progressing"
if ready ~= nil then
  hs.message = (ready.reason or "NotReady") .. ": " .. (ready.message or "")
else
  hs.message = "Waiting for the Ready condition"
end
return hs
