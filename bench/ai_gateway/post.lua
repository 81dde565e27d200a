-- wrk script for bench/ai_gateway/run.sh: a POST with a JSON body and extra headers.
--   BENCH_BODY_FILE  file holding the request body
--   BENCH_HEADERS    extra headers, one "Name: value" per line
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

local path = os.getenv("BENCH_BODY_FILE")
if path then
  local f = assert(io.open(path, "rb"))
  wrk.body = f:read("*a")
  f:close()
end

for line in (os.getenv("BENCH_HEADERS") or ""):gmatch("[^\n]+") do
  local name, value = line:match("^%s*([^:]+):%s*(.-)%s*$")
  if name then wrk.headers[name] = value end
end
