-- Manual control of the autoscaler. These edit spec.override: add
-- /spec/override to the Application's ignoreDifferences, or the next sync from Git
-- puts Git's override back.
local actions = {}
local active = obj.spec.override ~= nil
actions["pin-current"] = {["disabled"] = false}
actions["freeze-scale-down"] = {["disabled"] = false}
actions["clear-override"] = {["disabled"] = not active}
return actions
