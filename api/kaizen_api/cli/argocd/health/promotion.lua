-- Argo CD health of a Promotion from its phase. Lua 5.1 (gopher-lua).
-- WaitingForApproval is Suspended: a person has to act (see the approve action).
local hs = {}
local phase = obj.status ~= nil and obj.status.phase or nil
local message = obj.status ~= nil and obj.status.message or ""
if phase == nil or phase == "Pending" or phase == "Progressing" or phase == "Verifying" then
  hs.status = "Progressing"
  hs.message = (phase or "Pending") .. ": " .. (message or "")
elseif phase == "WaitingForApproval" then
  hs.status = "Suspended"
  hs.message = "Waiting for approval: " .. (message or "")
elseif phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = message or ""
else
  -- Failed, Rejected, Aborted, Errored: ended without the switch (or reverted)
  hs.status = "Degraded"
  hs.message = phase .. ": " .. (message or "")
end
return hs
