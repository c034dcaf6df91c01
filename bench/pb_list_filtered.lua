-- PocketBase's list_filtered.lua: one major's undergraduates, 20 per page, in insertion order, no total.
local counter = 0
request = function()
  counter = counter + 1
  local major = counter % 20 + 1
  local filter = string.format("%%28major_id%%3D%%27m%014d%%27%%20%%26%%26%%20is_undergraduate%%3Dtrue%%29", major)
  return wrk.format("GET", "/api/collections/students/records?filter=" .. filter .. "&perPage=20&skipTotal=1&sort=%40rowid")
end
