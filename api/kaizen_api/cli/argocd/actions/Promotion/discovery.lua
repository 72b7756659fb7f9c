-- Approve and reject are offered while the Promotion waits for approval. The
-- operator's admission webhook records the user Argo CD acts as (its own
-- ServiceAccount, or the impersonated user when Argo CD impersonation is on):
-- that identity must be in spec.approval.approvers.
local actions = {}
local waiting = obj.status ~= nil and obj.status.phase == "WaitingForApproval"
actions["approve"] = {["disabled"] = not waiting}
actions["reject"] = {["disabled"] = not waiting}
return actions
