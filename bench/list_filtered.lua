-- GET /students?major_id=M&is_undergraduate=true&limit=20 over 20 majors.
local counter = 0
request = function()
  counter = counter + 1
  local major = counter % 20 + 1
  return wrk.format("GET", "/students?major_id=" .. major .. "&is_undergraduate=true&limit=20")
end
