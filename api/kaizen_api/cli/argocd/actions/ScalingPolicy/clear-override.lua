obj.spec.override = nil
return obj
