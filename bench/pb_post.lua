-- PocketBase's post.lua: a student with a unique email and a major (relation checked).
local counter = 0
local prefix = ""
setup = function(thread)
  -- RUN tells repeated runs on one database apart (bench/compare.py sets it).
  thread:set("prefix", (os.getenv("RUN") or "") .. tostring(math.random(1, 1000000000)))
end
init = function()
  prefix = tostring(wrk.thread:get("prefix") or math.random(1, 1000000000))
end
request = function()
  counter = counter + 1
  local body = string.format('{"name":"Load %d","email":"load-%s-%d@bench.example.edu","major_id":"m%014d"}', counter, prefix, counter, counter % 20 + 1)
  return wrk.format("POST", "/api/collections/students/records", {["Content-Type"] = "application/json"}, body)
end
