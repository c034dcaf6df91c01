-- POST /queues/advising/next?major_id=1: each call claims the head of the line.
request = function()
  return wrk.format("POST", "/queues/advising/next?major_id=1")
end
