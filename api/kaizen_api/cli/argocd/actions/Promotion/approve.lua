if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["kaizen.studio/approve"] = "approved in Argo CD"
return obj
