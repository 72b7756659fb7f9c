obj.spec.override = {["mode"] = "FreezeScaleDown", ["reason"] = "frozen in Argo CD"}
return obj
