-- wrk script: every request is one agent's heartbeat (or, as the baseline, an authenticated
-- GET that writes nothing), agents taken in turn from a token file.
local tokens = {}
local n = 0
local body = '{"health":{"status":"Healthy"},"reported":{"baseline":"KB5000001"}}'

function setup(thread)
  thread:set("id", n)
  n = n + 1
end

function init(args)
  for line in io.lines(args[1]) do
    tokens[#tokens + 1] = line
  end
  mode = args[2] or "heartbeat"
  counter = id
end

function request()
  counter = counter + 1
  local token = tokens[(counter % #tokens) + 1]
  local headers = {["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json"}
  if mode == "whoami" then
    return wrk.format("GET", "/hotpatch/whoami", headers)
  end
  return wrk.format("POST", "/agent/heartbeat", headers, body)
end
