-- wrk script of the sale-day storm (bench/storm_bench.sh): paced order submissions with
-- resubmissions and payment callbacks, every answer recorded to a file per thread.
--
--   wrk -t T -c C -d SECS --timeout 60s -s bench/storm.lua URL -- \
--     OUT T0 DUR RATE THREADS RESUBMIT_SHARE CALLBACK_SHARE TAG
--
--   OUT             file prefix: thread i writes its answers to OUT-i.tsv; once it has
--                   sent everything, the requests still unanswered then to OUT-i.sent;
--                   once every answer is in, OUT-i.done
--   T0              wall-clock second (Unix time, fractions allowed) of the first order
--   DUR             seconds of new orders
--   RATE            new orders per second, over all threads
--   THREADS         wrk's -t (each thread paces RATE / THREADS)
--   RESUBMIT_SHARE  share of orders resubmitted 1-3 times with the same Idempotency-Key and
--                   body, 0.2-3 s after the previous submission
--   CALLBACK_SHARE  share of orders whose payment callback (POST /notify/pay, form
--                   out_trade_no=<order id>) is sent 0-15 s after the order and then repeated
--                   1-3 times, 1-5 s apart
--   TAG             makes the order ids of this run unique: TAG-<thread>-<n>
--
-- Pacing is open loop: every send has a scheduled time (new orders evenly spaced, the
-- extra sends at their random times), delay() hands the next scheduled send to the
-- connection that asks and waits until its time, so the offered rate does not depend on
-- how fast answers come back as long as enough connections are idle. A send that starts
-- late (every connection busy) is recorded with its lateness.
--
-- Every request carries X-Request-Id "<kind>:<order id>:<n>" (kind o = first submission,
-- r = resubmission, c = callback), which the gateway echoes on every answer; that is how
-- response() knows which request an answer belongs to. Record columns (tab-separated):
--   request id, status, scheduled time, send time, answer time, ticket id (202) or error
--   code, flags (R = Idempotent-Replayed, D = Ticket-Status: done)

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } fg_storm_timespec;
  int clock_gettime(int clk, fg_storm_timespec *ts);
]]
local ts = ffi.new("fg_storm_timespec")
local function now()
  ffi.C.clock_gettime(0, ts)  -- CLOCK_REALTIME: comparable with the monitor's time.time()
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local nthreads_setup = 0
function setup(thread)
  nthreads_setup = nthreads_setup + 1
  thread:set("tid", nthreads_setup)
end

local out, done_path, sent_path, t0, dur, rate_t, resubmit_share, callback_share, tag
local total_orders, next_k = 0, 0
local heap = {}        -- scheduled extra sends, a binary min-heap on .t
local ready = {}       -- sends handed out by delay(), in order; request() takes the oldest
local ready_head, ready_tail = 1, 0
local sent, answered = 0, 0
local sent_at = {}     -- request id -> {scheduled, sent}
local finished, last_flush = false, 0
local order_hdr = { ["Content-Type"] = "application/json" }
local notify_hdr = { ["Content-Type"] = "application/x-www-form-urlencoded" }

local function heap_push(e)
  heap[#heap + 1] = e
  local i = #heap
  while i > 1 do
    local p = math.floor(i / 2)
    if heap[p].t <= heap[i].t then break end
    heap[p], heap[i] = heap[i], heap[p]
    i = p
  end
end

local function heap_pop()
  local n = #heap
  local top = heap[1]
  heap[1] = heap[n]
  heap[n] = nil
  n = n - 1
  local i = 1
  while true do
    local l, r, m = 2 * i, 2 * i + 1, i
    if l <= n and heap[l].t < heap[m].t then m = l end
    if r <= n and heap[r].t < heap[m].t then m = r end
    if m == i then break end
    heap[m], heap[i] = heap[i], heap[m]
    i = m
  end
  return top
end

function init(args)
  local prefix = args[1]
  t0 = tonumber(args[2])
  dur = tonumber(args[3])
  local nthreads = tonumber(args[5])
  rate_t = tonumber(args[4]) / nthreads
  resubmit_share = tonumber(args[6])
  callback_share = tonumber(args[7])
  tag = args[8]
  total_orders = math.floor(rate_t * dur + 0.5)
  -- Threads interleave their slots instead of sending at the same instants.
  t0 = t0 + (tid - 1) / (nthreads * rate_t)
  out = assert(io.open(prefix .. "-" .. tid .. ".tsv", "w"))
  out:setvbuf("full", 1024 * 1024)
  done_path = prefix .. "-" .. tid .. ".done"
  sent_path = prefix .. "-" .. tid .. ".sent"
  math.randomseed(tid * 7919 + math.floor(now() * 1000) % 100000)
end

-- The next send in schedule order: the next new order or the earliest extra send.
local function take_next()
  local tn = next_k < total_orders and (t0 + next_k / rate_t) or math.huge
  local te = heap[1] and heap[1].t or math.huge
  if tn == math.huge and te == math.huge then return nil end
  if tn <= te then
    local oid = tag .. "-" .. tid .. "-" .. next_k
    next_k = next_k + 1
    if math.random() < resubmit_share then
      local t = tn
      for n = 1, math.random(1, 3) do
        t = t + 0.2 + math.random() * 2.8
        heap_push({ t = t, kind = "r", oid = oid, n = n })
      end
    end
    if math.random() < callback_share then
      local t = tn + math.random() * 15
      heap_push({ t = t, kind = "c", oid = oid, n = 0 })
      for n = 1, math.random(1, 3) do
        t = t + 1 + math.random() * 4
        heap_push({ t = t, kind = "c", oid = oid, n = n })
      end
    end
    return { t = tn, kind = "o", oid = oid, n = 0 }
  end
  return heap_pop()
end

local all_sent = false
local function check_finished()
  if finished or next_k < total_orders or heap[1] or ready_head <= ready_tail then return end
  if not all_sent then
    -- Everything is sent: list what is still unanswered (diagnostics if it never is).
    all_sent = true
    out:flush()
    local f = io.open(sent_path, "w")
    if f then
      for rid, s in pairs(sent_at) do f:write(rid, "\t", string.format("%.4f", s[2]), "\n") end
      f:close()
    end
  end
  if answered < sent then return end
  finished = true
  out:flush()
  local f = io.open(done_path, "w")
  if f then f:write(sent, " ", answered, "\n"); f:close() end
end

function delay()
  check_finished()
  local e = take_next()
  if not e then return 3600 * 1000 end
  ready_tail = ready_tail + 1
  ready[ready_tail] = e
  local d = (e.t - now()) * 1000
  if d < 1 then return 0 end
  return math.floor(d)
end

local verified = false
function request()
  -- wrk calls request() of its first thread once before the run to check the request
  -- (script_verify_request); that one is never sent, so it must not use up an order.
  if tid == 1 and not verified then
    verified = true
    return wrk.format("GET", "/_floodgate/tickets/none", { ["X-Request-Id"] = "x:verify" })
  end
  local e
  if ready_head <= ready_tail then
    e = ready[ready_head]
    ready[ready_head] = nil
    ready_head = ready_head + 1
  else
    -- A connection that reconnected skips delay(): give it the next send at once.
    e = take_next()
    if not e then
      -- Nothing left to send (wrk insists on a request): a harmless poll of no ticket.
      return wrk.format("GET", "/_floodgate/tickets/none", { ["X-Request-Id"] = "x:none:" .. sent })
    end
  end
  local rid = e.kind .. ":" .. e.oid .. ":" .. e.n
  sent = sent + 1
  sent_at[rid] = { e.t, now() }
  if e.kind == "c" then
    notify_hdr["X-Request-Id"] = rid
    return wrk.format("POST", "/notify/pay", notify_hdr,
      "out_trade_no=" .. e.oid .. "&trade_status=TRADE_SUCCESS&total_amount=10.00")
  end
  order_hdr["X-Request-Id"] = rid
  order_hdr["Idempotency-Key"] = "idem-" .. e.oid
  return wrk.format("POST", "/api/orders", order_hdr,
    '{"order_id":"' .. e.oid .. '","sku":"card-10","qty":1}')
end

function response(status, headers, body)
  local t = now()
  local rid = headers["X-Request-Id"] or headers["x-request-id"] or "?"
  local s = sent_at[rid]
  local sched, st = 0, 0
  if s then
    sched, st = s[1], s[2]
    sent_at[rid] = nil
  end
  answered = answered + 1
  local extra = ""
  if status == 202 then
    extra = string.match(body, '"ticket":"([%w_%-]+)"') or ""
  elseif status >= 400 then
    extra = string.match(body, '"error":"([%w_]+)"') or ""
  end
  local flags = ""
  if headers["Idempotent-Replayed"] then flags = flags .. "R" end
  if headers["Ticket-Status"] then flags = flags .. "D" end
  out:write(rid, "\t", status, "\t", string.format("%.4f\t%.4f\t%.4f", sched, st, t), "\t", extra, "\t", flags, "\n")
  if t - last_flush > 0.5 then
    out:flush()
    last_flush = t
  end
  check_finished()
end
