-- wrk script of bench/storm_bench.sh: polls every ticket once through the gateway.
--
--   wrk -t T -c C -d SECS -s bench/storm_poll.lua URL -- IDS OUT TICKETS_PATH
--
-- Thread i polls the ticket ids listed in IDS-i.txt (one per line) with
-- GET <TICKETS_PATH><id> and X-Request-Id "p:<id>", which the gateway echoes, and writes
-- "<id> TAB status TAB Ticket-Status TAB status field of a JSON answer" to OUT-i.tsv; once
-- every id is answered it writes OUT-i.done and stops.

local ids, i, answered = {}, 0, 0
local out, done_path, tickets_path
local stopped = false

function setup(thread)
  local n = (setup_n or 0) + 1
  setup_n = n
  thread:set("tid", n)
end

function init(args)
  for id in io.lines(args[1] .. "-" .. tid .. ".txt") do
    if id ~= "" then ids[#ids + 1] = id end
  end
  out = assert(io.open(args[2] .. "-" .. tid .. ".tsv", "w"))
  out:setvbuf("full", 1024 * 1024)
  done_path = args[2] .. "-" .. tid .. ".done"
  tickets_path = args[3]
  if #ids == 0 then
    local f = io.open(done_path, "w"); f:write("0\n"); f:close()
  end
end

local verified = false
function request()
  -- wrk calls request() of its first thread once before the run to check the request
  -- (script_verify_request); that one is never sent.
  if tid == 1 and not verified then
    verified = true
    return wrk.format("GET", tickets_path .. "none", { ["X-Request-Id"] = "x:verify" })
  end
  i = i + 1
  if i > #ids then
    -- Everything is sent; wrk wants a request anyway: a poll whose answer is ignored.
    return wrk.format("GET", tickets_path .. "none", { ["X-Request-Id"] = "x:none" })
  end
  return wrk.format("GET", tickets_path .. ids[i], { ["X-Request-Id"] = "p:" .. ids[i] })
end

-- Once everything is sent, connections idle instead of polling "none" flat out.
function delay()
  if i >= #ids then return 200 end
  return 0
end

function response(status, headers, body)
  local rid = headers["X-Request-Id"] or ""
  if rid:sub(1, 2) ~= "p:" then
    if answered >= #ids and not stopped then stopped = true; wrk.thread:stop() end
    return
  end
  answered = answered + 1
  local st = string.match(body, '"status":"(%a+)"') or ""
  out:write(rid:sub(3), "\t", status, "\t", headers["Ticket-Status"] or "", "\t", st, "\n")
  if answered >= #ids and not stopped then
    stopped = true
    out:flush()
    local f = io.open(done_path, "w"); f:write(answered, "\n"); f:close()
    wrk.thread:stop()
  end
end
