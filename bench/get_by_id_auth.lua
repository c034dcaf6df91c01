-- GET /students/{id} with a bearer token (TOKEN env), ids spread over 1..ROWS.
local rows = tonumber(os.getenv("ROWS") or "10000")
local token = os.getenv("TOKEN")
local counter = 0
request = function()
  counter = counter + 1
  local id = (counter * 7919) % rows + 1
  return wrk.format("GET", "/students/" .. id, {["Authorization"] = "Bearer " .. token})
end
