-- POST /queues/advising/entries for members FIRST..LAST (env), each once,
-- spread over wrk's threads; once a thread's members are used up it sends
-- GET /health instead (so size the range above what the run can join).
local first = tonumber(os.getenv("FIRST") or "1")
local last = tonumber(os.getenv("LAST") or "100000")
local threads = 0
local id, count, k = 0, 2, 0
setup = function(thread)
  thread:set("id", threads)
  threads = threads + 1
end
init = function()
  id = tonumber(wrk.thread:get("id")) or 0
  count = tonumber(os.getenv("THREADS") or "2")
end
request = function()
  local member = first + id + k * count
  k = k + 1
  if member > last then
    return wrk.format("GET", "/health")
  end
  local body = string.format('{"member_id":%d,"topic":"bench"}', member)
  return wrk.format("POST", "/queues/advising/entries", {["Content-Type"] = "application/json"}, body)
end
