if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["kaizen.studio/reject"] = "rejected in Argo CD"
return obj
