-- Pin the gateway at its current replica count (or minReplicas when unknown).
local replicas = obj.spec.minReplicas
if obj.status ~= nil and obj.status.currentReplicas ~= nil then
  replicas = obj.status.currentReplicas
end
obj.spec.override = {["mode"] = "Pin", ["replicas"] = replicas, ["reason"] = "pinned in Argo CD"}
return obj
