-- Join + leave pairs: each join of a member of FIRST..LAST (env) is followed
-- by a DELETE of the entry it created; members are reused cyclically, each
-- long after it left. Every non-2xx answer is an error.
local first = tonumber(os.getenv("FIRST") or "100001")
local last = tonumber(os.getenv("LAST") or "110000")
local threads = 0
local id, count, k = 0, 2, 0
local pending = {}
setup = function(thread)
  thread:set("id", threads)
  threads = threads + 1
end
init = function()
  id = tonumber(wrk.thread:get("id")) or 0
  count = tonumber(os.getenv("THREADS") or "2")
end
request = function()
  local entry = table.remove(pending)
  if entry then
    return wrk.format("DELETE", "/queues/advising/entries/" .. entry)
  end
  local span = math.floor((last - first + 1) / count)
  local member = first + id * span + (k % span)
  k = k + 1
  local body = string.format('{"member_id":%d,"topic":"pair"}', member)
  return wrk.format("POST", "/queues/advising/entries", {["Content-Type"] = "application/json"}, body)
end
response = function(status, headers, body)
  if status == 201 then
    local entry = body:match('"id":"([^"]+)"')
    if entry then
      table.insert(pending, entry)
    end
  end
end
