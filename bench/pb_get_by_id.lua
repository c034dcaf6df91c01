-- PocketBase's GET by id over the same ids as get_by_id.lua (bench/pocketbase.py: s + 14 digits).
local rows = tonumber(os.getenv("ROWS") or "10000")
local counter = 0
request = function()
  counter = counter + 1
  local id = (counter * 7919) % rows + 1
  return wrk.format("GET", string.format("/api/collections/students/records/s%014d", id))
end
