-- GET /students/{id} over ids 1..ROWS, spread so caches don't flatter us.
local rows = tonumber(os.getenv("ROWS") or "10000")
local counter = 0
request = function()
  counter = counter + 1
  local id = (counter * 7919) % rows + 1
  return wrk.format("GET", "/students/" .. id)
end
