#!/usr/bin/env bash
# Queue and ticket benchmark: how fast Floodgate parks requests as tickets
# (202 answers per second), how fast it answers ticket polls, and how exactly
# the dispatcher drains a queue at the route budget, with 1 and with 2 workers.
# Floodgate, the demo shop and a private redis-server all run on loopback.
# There is no nginx counterpart for tickets, so nothing is interleaved.
#
#   bench/queue_bench.sh                  defaults: DUR=10 DRAIN=60 (about 3.5 min)
#   DRAIN=120 bench/queue_bench.sh        a longer drain window
#   PHASES=drain BURST=0 bench/queue_bench.sh   only the drain runs, with burst 0
#
# Environment:
#   DUR            seconds of the enqueue run and of the poll run          default 10
#   CONNS          wrk connections for those two runs (one wrk thread)     default 50
#   WARMUP         seconds of unrecorded enqueue load before the enqueue run default 2
#   POLL_TICKETS   tickets created for the poll run (polled round robin)   default 1000
#   RATE           route budget of the drain runs, requests per second     default 500
#   BURST          burst of the drain route                                 default 5
#   DRAIN          seconds of the measured drain window                    default 60
#   DRAIN_TICKETS  tickets queued before each drain run                    default RATE * (DRAIN + 20)
#   DRAIN_WORKERS  Floodgate worker counts to drain with, one run each     default "1 2"
#   SAMPLE         seconds between samples of the drain rate               default 10
#   PHASES         which runs: any of "enqueue poll plain drain"           default all four
#                  (plain: GET /api/products proxied by the same instance, the poll target);
#                  commas may separate them: PHASES=enqueue,poll,plain
#   BUILD          1 = run `ninja -C build` first, 0 = use the binaries as they are
#                                                                          default 1
#
# Prints a markdown report, also written to bench/results/queue-<timestamp>.md;
# wrk outputs, configs, scripts and logs go to bench/results/queue-<timestamp>.logs/.
# Everything started here is stopped (by PID) on exit, also on Ctrl-C or failure.
# bench/README.md describes the method.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
BENCH_NAME=queue
# shellcheck source=bench/lib.sh
source "$repo_root/bench/lib.sh"

DUR="${DUR:-10}"
CONNS="${CONNS:-50}"
WARMUP="${WARMUP:-2}"
POLL_TICKETS="${POLL_TICKETS:-1000}"
RATE="${RATE:-500}"
BURST="${BURST:-5}"
DRAIN="${DRAIN:-60}"
DRAIN_TICKETS="${DRAIN_TICKETS:-}"
DRAIN_WORKERS="${DRAIN_WORKERS:-1 2}"
SAMPLE="${SAMPLE:-10}"
PHASES="${PHASES:-enqueue poll plain drain}"
PHASES="${PHASES//,/ }"   # commas too (compare.sh's BENCH_ENV splits on spaces)
BUILD="${BUILD:-1}"
PATH_UNDER_TEST="/api/orders"
BODY='{"sku":"card-10"}'
TICKETS_PATH="/_floodgate/tickets/"
PREFIX="fg:"
SETTLE=2   # seconds after the queue is filled before the drain window starts

require_whole_numbers RATE DRAIN
DRAIN_TICKETS="${DRAIN_TICKETS:-$(( RATE * (DRAIN + 20) ))}"
require_whole_numbers DUR CONNS WARMUP POLL_TICKETS BURST DRAIN_TICKETS SAMPLE
(( DUR >= 1 && CONNS >= 1 && POLL_TICKETS >= 1 && RATE >= 1 && DRAIN >= 1 && DRAIN_TICKETS >= 1 && SAMPLE >= 1 )) ||
  die "DUR, CONNS, POLL_TICKETS, RATE, DRAIN, DRAIN_TICKETS and SAMPLE must be >= 1"
for w in $DRAIN_WORKERS; do
  [[ "$w" =~ ^[0-9]+$ ]] && (( w >= 1 )) || die "DRAIN_WORKERS must list worker counts >= 1, got '$DRAIN_WORKERS'"
done
for ph in $PHASES; do
  [[ "$ph" =~ ^(enqueue|poll|plain|drain)$ ]] || die "PHASES may list enqueue, poll, plain and drain, got '$PHASES'"
done
phase() { [[ " $PHASES " == *" $1 "* ]]; }
(( DRAIN_TICKETS > RATE * (DRAIN + SETTLE) )) ||
  log "warning: DRAIN_TICKETS=$DRAIN_TICKETS is not more than RATE x (DRAIN + $SETTLE s): the queue will run dry inside the window"

bench_prerequisites wrk python3 curl redis-server redis-cli
bench_binaries
bench_workspace

# ------------------------------------------------------------ processes

read -r shop_port redis_port fg_port <<<"$(free_ports 3)"

bench_start shop "$shop_bin" --listen "127.0.0.1:$shop_port" --threads 1
shop_pid=$started_pid
wait_http shop "$shop_pid" "http://127.0.0.1:$shop_port/api/products"

start_redis "$redis_port"

# fg_conf NAME WORKERS ROUTE RATE BURST: one queued route on POST /api/orders
# and a catch-all route (health check). Every instance listens on $fg_port;
# only one runs at a time, so no other instance's dispatcher adds requests to
# the shop's counter.
fg_conf() {
  {
    fg_conf_head "\"127.0.0.1:$fg_port\"" "$2"
    cat <<EOF
[redis]
url = "redis://127.0.0.1:$redis_port/0"
prefix = "$PREFIX"

[[routes]]
name = "$3"
match = { path = "$PATH_UNDER_TEST", methods = ["POST"] }
upstream = "shop"
rate = $4
burst = $5
overflow = "queue"
queue = { max_depth = 10000000 }

[[routes]]
name = "rest"
match = { prefix = "/" }
upstream = "shop"

EOF
  } >"$work/$1.toml"
  fg_conf_finish "$1"
}

fg_pid=""
fg_run() {  # fg_run NAME: starts the instance configured in NAME.toml
  bench_start "$1-stdout" "$floodgate_bin" -c "$work/$1.toml"
  fg_pid=$started_pid
  wait_http "$1" "$fg_pid" "http://127.0.0.1:$fg_port/api/products"
}
fg_stop() {  # stops the running instance (its queued tickets stay in Redis)
  local pid="$fg_pid" p keep=()
  [[ -n "$pid" ]] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for p in "${bench_pids[@]}"; do [[ "$p" == "$pid" ]] || keep+=("$p"); done
  bench_pids=("${keep[@]}")
  fg_pid=""
}

shop_reset() { curl -s -o /dev/null --max-time 5 -X POST "http://127.0.0.1:$shop_port/_shop/reset"; }
shop_requests() {
  curl -s --max-time 30 "http://127.0.0.1:$shop_port/_shop/stats" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])'
}
counter() { local v; v="$(rcli get "$1" 2>/dev/null || true)"; echo "${v:-0}"; }
enq_count() { counter "${PREFIX}q:{$1}:enq"; }
taken_count() { counter "${PREFIX}q:{$1}:taken"; }
redis_mem() { rcli info memory 2>/dev/null | tr -d '\r' | awk -F: '/^used_memory:/ { print $2 }'; }
now() { date +%s.%N; }
# Redis's command counters (INFO commandstats: commands run inside scripts count too),
# as "command calls usec" lines; cmd_delta BEFORE AFTER ITEMS prints, per item, the
# calls of scripts (EVAL/EVALSHA), the calls of every other command, the microseconds
# Redis spent in scripts, and the other commands per item (those of 0.005 or more).
cmd_stats() { rcli info commandstats 2>/dev/null | tr -d '\r' |
  sed -n 's/^cmdstat_\([^:]*\):calls=\([0-9]*\),usec=\([0-9]*\),.*/\1 \2 \3/p'; }
cmd_delta() {
  awk -v n="$3" 'FNR == NR { c[$1] = $2; u[$1] = $3; next }
    { dc = $2 - c[$1]; du = $3 - u[$1]
      if ($1 ~ /^eval/) { sc += dc; su += du } else { oc += dc; if (dc / n >= 0.005) list = list sprintf("%s%s:%.2f", (list == "" ? "" : ","), $1, dc / n) } }
    END { if (n <= 0) { print "NA NA NA -"; exit }
          printf "%.3f %.3f %.2f %s\n", sc / n, oc / n, su / n, (list == "" ? "-" : list) }' "$1" "$2"
}
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
per() {  # per TICKS COUNT -> microseconds of CPU per item
  awk -v t="$1" -v n="$2" -v hz="$clk_tck" 'BEGIN { if (n > 0) printf "%.2f", t / hz * 1e6 / n; else print "NA" }'
}

# ------------------------------------------------------------ wrk scripts

cat >"$work/enqueue.lua" <<EOF
-- POST $PATH_UNDER_TEST with a small JSON body, no Idempotency-Key: every
-- request over the route budget becomes a new ticket. The request is built in
-- init(): at load time wrk.format() does not know the Host header yet.
local req
function init(args)
  req = wrk.format("POST", "$PATH_UNDER_TEST", { ["Content-Type"] = "application/json" }, '$BODY')
end
function request() return req end
EOF
cat >"$work/fill.lua" <<EOF
-- Like enqueue.lua, but the thread stops after args[1] answers (run it with -t1),
-- so that a known number of tickets is queued.
local req
local limit, got = 0, 0
function init(args)
  req = wrk.format("POST", "$PATH_UNDER_TEST", { ["Content-Type"] = "application/json" }, '$BODY')
  limit = tonumber(args[1]) or 0
end
function request() return req end
function response(status, headers, body)
  got = got + 1
  if limit > 0 and got >= limit then wrk.thread:stop() end
end
EOF
cat >"$work/poll.lua" <<'EOF'
-- GET <tickets_path><id>, cycling through the ticket ids in the file args[1]
-- (one per line); args[2] is the tickets path.
local reqs, i = {}, 0
function init(args)
  for id in io.lines(args[1]) do reqs[#reqs + 1] = wrk.format("GET", args[2] .. id) end
  i = math.random(#reqs) - 1   -- connections do not all start on the same ticket
end
function request()
  i = i + 1
  if i > #reqs then i = 1 end
  return reqs[i]
end
EOF
bench_keep+=("*.lua" "*.txt" "*.json")

raw="$work/runs.tsv"
printf 'phase\tkey\tvalue\n' >"$raw"
rec() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$raw"; }
notes="$work/notes.txt"
: >"$notes"
note() { echo "$*" >>"$notes"; log "problem: $*"; }

run_wrk() {  # run_wrk SECONDS OUTFILE SCRIPT [ARGS...]  (wrk's CPU "user sys" go to OUTFILE.time)
  local secs="$1" out="$2" script="$3" TIMEFORMAT='%3U %3S' extra=(); shift 3
  (( $# > 0 )) && extra=(-- "$@")
  { time wrk -t1 -c"$CONNS" -d"${secs}s" --latency -s "$script" "http://127.0.0.1:$fg_port$PATH_UNDER_TEST" \
      "${extra[@]}" >"$out" 2>&1 || true; } 2>"$out.time"
}

# measure_start / measure_end: CPU ticks of Floodgate, Redis, all of
# the benchmark's processes and the machine, and the wall clock.
measure_start() {
  m_fg0="$(proc_ticks "$fg_pid")"; m_redis0="$(proc_ticks "$redis_pid")"
  m_own0="$(proc_ticks "$fg_pid" "$redis_pid" "$shop_pid")"; m_busy0="$(machine_busy_ticks)"; m_wall0="$(now)"
}
measure_end() {  # measure_end WRK_USER WRK_SYS
  m_wall1="$(now)"; m_busy1="$(machine_busy_ticks)"; m_own1="$(proc_ticks "$fg_pid" "$redis_pid" "$shop_pid")"
  m_redis1="$(proc_ticks "$redis_pid")"; m_fg1="$(proc_ticks "$fg_pid")"
  m_other="$(other_load $(( m_busy1 - m_busy0 )) $(( m_own1 - m_own0 )) "${1:-0}" "${2:-0}" "$(elapsed "$m_wall0" "$m_wall1")")"
}

# ------------------------------------------------------------ 1. enqueue

# rate = 1, burst 0: about one request per second is forwarded live (or one
# ticket dispatched); everything else is parked. The poll run uses the same
# instance and route.
if phase enqueue || phase poll || phase plain; then
fg_conf floodgate-enqueue 1 tickets 1 0
fg_run floodgate-enqueue

# What a parked request looks like (the first may still be forwarded live).
python3 - "$fg_port" "$PATH_UNDER_TEST" "$BODY" >"$work/ticket-202.txt" <<'PY'
import http.client, json, sys
port, path, body = int(sys.argv[1]), sys.argv[2], sys.argv[3]
c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
for _ in range(3):
    c.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    if r.status == 202:
        break
print(f"HTTP/1.1 {r.status} {r.reason}")
for k, v in r.getheaders():
    print(f"{k}: {v}")
print()
print(data.decode("utf-8", "replace"))
PY
head202="$(head -n1 "$work/ticket-202.txt")"
[[ "$head202" == "HTTP/1.1 202"* ]] || die "the queued route does not answer 202 (got '$head202'); see $logs_dir/ticket-202.txt"
grep -q '"ticket":"' "$work/ticket-202.txt" || die "the 202 answer has no ticket; see $logs_dir/ticket-202.txt"
log "queued route answers: $head202, $(tail -n1 "$work/ticket-202.txt")"

fi

if phase enqueue; then
if (( WARMUP > 0 )); then
  log "warm-up: ${WARMUP}s of enqueue load (not recorded)"
  run_wrk "$WARMUP" "$work/warmup-enqueue.txt" "$work/enqueue.lua"
fi

log "enqueue run: ${DUR}s, $CONNS connections"
enq0="$(enq_count tickets)"; taken0="$(taken_count tickets)"; shop0="$(shop_requests)"; mem0="$(redis_mem)"
cmd_stats >"$work/cmdstats-enqueue-0.txt"
measure_start
run_wrk "$DUR" "$work/wrk-enqueue.txt" "$work/enqueue.lua"
read -r wrk_user wrk_sys <"$work/wrk-enqueue.txt.time" || { wrk_user=0; wrk_sys=0; }
measure_end "$wrk_user" "$wrk_sys"
sleep 0.2
enq1="$(enq_count tickets)"; taken1="$(taken_count tickets)"; shop1="$(shop_requests)"; mem1="$(redis_mem)"
cmd_stats >"$work/cmdstats-enqueue-1.txt"
read -r rps p50 p99 reqs non2xx sockerr secs < <(parse_wrk "$work/wrk-enqueue.txt")
tickets=$(( enq1 - enq0 ))
[[ "$secs" == NA ]] && secs="$DUR"
tps="$(awk -v n="$tickets" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')"
xlen="$(rcli xlen "${PREFIX}q:tickets:s")"
for kv in "seconds $secs" "tickets $tickets" "tickets_per_s $tps" "wrk_rps $rps" "p50_ms $p50" "p99_ms $p99" \
  "requests $reqs" "non2xx $non2xx" "socket_errors $sockerr" "drained $(( taken1 - taken0 ))" \
  "shop_requests $(( shop1 - shop0 ))" "xlen $xlen" "enq_total $enq1" \
  "fg_us $(per $(( m_fg1 - m_fg0 )) "$tickets")" "redis_us $(per $(( m_redis1 - m_redis0 )) "$tickets")" \
  "redis_bytes_per_ticket $(awk -v a="$mem0" -v b="$mem1" -v n="$tickets" 'BEGIN { if (n > 0) printf "%.0f", (b - a) / n; else print "NA" }')" \
  "redis_mib $(awk -v b="$mem1" 'BEGIN { printf "%.1f", b / 1048576 }')" "other $m_other"; do
  rec enqueue "${kv%% *}" "${kv#* }"
done
read -r e_scripts e_cmds e_rus e_list < <(cmd_delta "$work/cmdstats-enqueue-0.txt" "$work/cmdstats-enqueue-1.txt" "$tickets")
for kv in "redis_scripts $e_scripts" "redis_cmds $e_cmds" "redis_script_us $e_rus" "redis_cmd_list $e_list"; do
  rec enqueue "${kv%% *}" "${kv#* }"
done
log "enqueue: $tickets tickets in ${secs}s = $tps tickets/s (wrk: $rps req/s, $reqs requests, non-2xx $non2xx, socket errors $sockerr); dispatched during the run: $(( taken1 - taken0 )); p99 ${p99} ms; Floodgate $(per $(( m_fg1 - m_fg0 )) "$tickets") us/ticket, redis $(per $(( m_redis1 - m_redis0 )) "$tickets") us/ticket; other load $m_other cores"
other_2xx=$(( reqs - non2xx - tickets ))
(( non2xx > 0 || sockerr > 0 )) && note "enqueue run: $non2xx non-2xx answers, $sockerr socket errors ($(grep -E 'Socket errors|Non-2xx' "$work/wrk-enqueue.txt" | tr -s ' ' | tr '\n' ';'))"
(( other_2xx > DUR + 2 + CONNS )) && note "enqueue run: $other_2xx of wrk's 2xx answers were not tickets (forwarded live?)"
[[ "$rps" == NA ]] && note "enqueue run: wrk gave no result: $(tr '\n' ' ' <"$work/wrk-enqueue.txt" | cut -c1-300)"
cp "$work/wrk-enqueue.txt" "$logs_dir/"
fi

# ------------------------------------------------------------ 2. poll

if phase poll; then
log "poll run: creating $POLL_TICKETS tickets"
python3 - "$fg_port" "$PATH_UNDER_TEST" "$BODY" "$POLL_TICKETS" "$work/ticket-ids.txt" <<'PY'
import http.client, json, sys
port, path, body, n, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
ids, other = [], {}
while len(ids) < n:
    c.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    if r.status == 202:
        ids.append(json.loads(data)["ticket"])
    else:
        other[r.status] = other.get(r.status, 0) + 1
        if sum(other.values()) > n // 10 + 10:
            sys.exit(f"too many answers other than 202: {other}")
with open(out, "w") as fh:
    fh.write("\n".join(ids) + "\n")
print(len(set(ids)), other, file=sys.stderr)
PY
first_id="$(head -n1 "$work/ticket-ids.txt")"
curl -s -i --max-time 5 "http://127.0.0.1:$fg_port$TICKETS_PATH$first_id" | tr -d '\r' >"$work/ticket-poll.txt" || true
log "a poll answers: $(head -n1 "$work/ticket-poll.txt"), $(tail -n1 "$work/ticket-poll.txt")"

log "poll run: ${DUR}s, $CONNS connections, $POLL_TICKETS tickets round robin"
cmd_stats >"$work/cmdstats-poll-0.txt"
measure_start
run_wrk "$DUR" "$work/wrk-poll.txt" "$work/poll.lua" "$work/ticket-ids.txt" "$TICKETS_PATH"
read -r wrk_user wrk_sys <"$work/wrk-poll.txt.time" || { wrk_user=0; wrk_sys=0; }
measure_end "$wrk_user" "$wrk_sys"
read -r rps p50 p99 reqs non2xx sockerr secs < <(parse_wrk "$work/wrk-poll.txt")
cmd_stats >"$work/cmdstats-poll-1.txt"
read -r p_scripts p_cmds p_rus p_list < <(cmd_delta "$work/cmdstats-poll-0.txt" "$work/cmdstats-poll-1.txt" "$reqs")
# After the run every ticket must still be known: 202 while queued or
# processing, the shop's own answer (201 here) replayed once done.
poll_codes="$(python3 - "$fg_port" "$TICKETS_PATH" "$work/ticket-ids.txt" <<'PY'
import http.client, sys
port, tp, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
codes = {}
for line in open(path):
    c.request("GET", tp + line.strip())
    r = c.getresponse(); r.read()
    codes[r.status] = codes.get(r.status, 0) + 1
print(" ".join(f"{k}:{v}" for k, v in sorted(codes.items())))
PY
)"
for kv in "seconds $secs" "polls_per_s $rps" "p50_ms $p50" "p99_ms $p99" "requests $reqs" "non2xx $non2xx" \
  "socket_errors $sockerr" "tickets $(sort -u "$work/ticket-ids.txt" | wc -l)" "after_codes $poll_codes" \
  "fg_us $(per $(( m_fg1 - m_fg0 )) "$reqs")" "redis_us $(per $(( m_redis1 - m_redis0 )) "$reqs")" "other $m_other" \
  "answer $(head -n1 "$work/ticket-poll.txt") $(tail -n1 "$work/ticket-poll.txt")" \
  "redis_scripts $p_scripts" "redis_cmds $p_cmds" "redis_script_us $p_rus" "redis_cmd_list $p_list"; do
  rec poll "${kv%% *}" "${kv#* }"
done
log "poll: $rps polls/s ($reqs in ${secs}s), p99 ${p99} ms, non-2xx $non2xx, socket errors $sockerr; afterwards the tickets answer $poll_codes; Floodgate $(per $(( m_fg1 - m_fg0 )) "$reqs") us/poll, redis $(per $(( m_redis1 - m_redis0 )) "$reqs") us/poll; other load $m_other cores"
(( non2xx > 0 || sockerr > 0 )) && note "poll run: $non2xx non-2xx answers (404/5xx), $sockerr socket errors ($(grep -E 'Socket errors|Non-2xx' "$work/wrk-poll.txt" | tr -s ' ' | tr '\n' ';'))"
[[ "$poll_codes" =~ ^(2[0-9][0-9]:[0-9]+\ ?)+$ ]] || note "poll run: after the run the tickets answered $poll_codes (expected only 2xx: 202, or the shop's 201 once done)"
[[ "$rps" == NA ]] && note "poll run: wrk gave no result: $(tr '\n' ' ' <"$work/wrk-poll.txt" | cut -c1-300)"
cp "$work/wrk-poll.txt" "$logs_dir/"
fi

# ------------------------------------------------------------ 2b. plain proxy

# The same instance, load and connections, GET /api/products proxied to the shop
# (route "rest", no Redis): the req/s a poll is measured against.
if phase plain; then
log "plain proxy run: ${DUR}s, $CONNS connections, GET /api/products"
cat >"$work/plain.lua" <<'LUA'
local req
function init(args) req = wrk.format("GET", "/api/products") end
function request() return req end
LUA
measure_start
run_wrk "$DUR" "$work/wrk-plain.txt" "$work/plain.lua"
read -r wrk_user wrk_sys <"$work/wrk-plain.txt.time" || { wrk_user=0; wrk_sys=0; }
measure_end "$wrk_user" "$wrk_sys"
read -r rps p50 p99 reqs non2xx sockerr secs < <(parse_wrk "$work/wrk-plain.txt")
for kv in "seconds $secs" "rps $rps" "p50_ms $p50" "p99_ms $p99" "requests $reqs" "non2xx $non2xx" \
  "socket_errors $sockerr" "fg_us $(per $(( m_fg1 - m_fg0 )) "$reqs")" "other $m_other"; do
  rec plain "${kv%% *}" "${kv#* }"
done
log "plain proxy: $rps req/s, p99 ${p99} ms, non-2xx $non2xx; Floodgate $(per $(( m_fg1 - m_fg0 )) "$reqs") us/request"
(( non2xx > 0 || sockerr > 0 )) && note "plain run: $non2xx non-2xx answers, $sockerr socket errors"
cp "$work/wrk-plain.txt" "$logs_dir/"
fi
fg_stop

# ------------------------------------------------------------ 3. drain

phase drain || DRAIN_WORKERS=""
for w in $DRAIN_WORKERS; do
  route="drain$w"
  phase="drain-$w"
  fg_conf "floodgate-$phase" "$w" "$route" "$RATE" "$BURST"
  fg_run "floodgate-$phase"
  shop_reset
  log "drain, $w worker(s): queueing $DRAIN_TICKETS tickets (rate $RATE/s, burst $BURST)"
  # wrk's thread stops after DRAIN_TICKETS answers, but wrk itself only exits
  # at -d or on SIGINT: send it that once the tickets are in Redis.
  fill_cap=$(( DRAIN_TICKETS / 1000 + 60 ))
  fill_t0="$(now)"
  bench_start "fill-$w" wrk -t1 -c"$CONNS" -d"${fill_cap}s" -s "$work/fill.lua" \
    "http://127.0.0.1:$fg_port$PATH_UNDER_TEST" -- "$DRAIN_TICKETS"
  wrk_pid=$started_pid
  while kill -0 "$wrk_pid" 2>/dev/null; do
    (( $(enq_count "$route") >= DRAIN_TICKETS )) && { sleep 0.1; kill -INT "$wrk_pid" 2>/dev/null || true; break; }
    sleep 0.05
  done
  wait "$wrk_pid" 2>/dev/null || true
  keep=(); for p in "${bench_pids[@]}"; do [[ "$p" == "$wrk_pid" ]] || keep+=("$p"); done; bench_pids=("${keep[@]}")
  fill_t1="$(now)"
  read -r frps _ _ freqs fnon2xx fsockerr _ < <(parse_wrk "$work/fill-$w.log")
  queued="$(enq_count "$route")"
  log "drain, $w worker(s): $queued tickets queued in $(elapsed "$fill_t0" "$fill_t1")s (wrk: $freqs answers, non-2xx $fnon2xx, socket errors $fsockerr)"
  (( fnon2xx > 0 || fsockerr > 0 )) && note "drain $w worker(s), filling: $fnon2xx non-2xx answers, $fsockerr socket errors"

  # The window starts SETTLE seconds after the queue is filled.
  sleep "$SETTLE"
  samples="$work/samples-$w.txt"
  : >"$samples"
  measure_start
  t0="$m_wall0"; s0="$(shop_requests)"; k0="$(taken_count "$route")"
  echo "0 $s0 $k0" >>"$samples"
  for (( t = SAMPLE; t < DRAIN + SAMPLE; t += SAMPLE )); do
    (( t > DRAIN )) && t=$DRAIN
    sleep "$(awk -v t0="$t0" -v t="$t" -v n="$(now)" 'BEGIN { d = t0 + t - n; printf "%.3f", (d > 0 ? d : 0) }')"
    ts="$(now)"; s="$(shop_requests)"; k="$(taken_count "$route")"
    echo "$(elapsed "$t0" "$ts") $s $k" >>"$samples"
  done
  measure_end 0 0
  read -r win s1 k1 < <(tail -n1 "$samples")
  left=$(( $(enq_count "$route") - $(taken_count "$route") ))
  shop_rate="$(awk -v a="$s0" -v b="$s1" -v s="$win" 'BEGIN { printf "%.2f", (b - a) / s }')"
  taken_rate="$(awk -v a="$k0" -v b="$k1" -v s="$win" 'BEGIN { printf "%.2f", (b - a) / s }')"
  read -r smin smax < <(awk 'NR > 1 { r = ($2 - ps) / ($1 - pt); if (min == "" || r < min) min = r; if (r > max) max = r }
    { pt = $1; ps = $2 } END { printf "%.1f %.1f\n", min, max }' "$samples")
  consumers="$(rcli xinfo consumers "${PREFIX}q:$route:s" fg 2>/dev/null | grep -c '^name$' || true)"
  shop_orders="$(curl -s --max-time 30 "http://127.0.0.1:$shop_port/_shop/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["orders"])')"
  for kv in "workers $w" "queued $queued" "fill_seconds $(elapsed "$fill_t0" "$fill_t1")" "fill_rps $frps" \
    "window $win" "shop_rate $shop_rate" "taken_rate $taken_rate" "shop_delta $(( s1 - s0 ))" "taken_delta $(( k1 - k0 ))" \
    "sample_min $smin" "sample_max $smax" "left $left" "shop_orders $shop_orders" "consumers $consumers" \
    "fg_us $(per $(( m_fg1 - m_fg0 )) $(( s1 - s0 )))" "redis_us $(per $(( m_redis1 - m_redis0 )) $(( s1 - s0 )))" \
    "fg_cores $(awk -v t=$(( m_fg1 - m_fg0 )) -v s="$win" -v hz="$clk_tck" 'BEGIN { printf "%.3f", t / hz / s }')" \
    "other $m_other" "samples $(awk 'NR == 1 { b = $2 } { printf "%s%.0f s: %d", (NR > 1 ? "; " : ""), $1, $2 - b }' "$samples")"; do
    rec "$phase" "${kv%% *}" "${kv#* }"
  done
  dev="$(awk -v r="$shop_rate" -v b="$RATE" 'BEGIN { printf "%+.2f", (r / b - 1) * 100 }')"
  log "drain, $w worker(s): shop received $shop_rate/s over ${win}s ($dev% of $RATE; ${SAMPLE}s samples $smin-$smax/s), tickets taken $taken_rate/s, $left still queued; other load $m_other cores"
  (( left <= 0 )) && note "drain $w worker(s): the queue ran dry inside the window (raise DRAIN_TICKETS)"
  awk -v d="$dev" 'BEGIN { exit !(d > 1 || d < -1) }' && note "drain $w worker(s): drain rate $shop_rate/s is $dev% off the budget of $RATE/s"
  cp "$work/fill-$w.log" "$logs_dir/" 2>/dev/null || true
  fg_stop
done

kill -0 "$redis_pid" 2>/dev/null || die "redis-server is no longer running after the runs"
kill -0 "$shop_pid" 2>/dev/null || die "the shop is no longer running after the runs"
grep -hiE 'error|warn' "$work"/floodgate-*.log 2>/dev/null | grep -v -i 'redis.*connected' | head -n 20 >"$work/fg-log-problems.txt" || true
[[ -s "$work/fg-log-problems.txt" ]] && note "Floodgate logged warnings/errors (first: $(head -n1 "$work/fg-log-problems.txt" | cut -c1-200)); see fg-log-problems.txt"

# ------------------------------------------------------------ report

bench_versions
export R_REDIS_VERSION R_SETTINGS R_RATE R_BURST R_DUR R_CONNS R_DRAIN R_SAMPLE R_202 R_SETTLE
R_REDIS_VERSION="$(redis-server --version 2>/dev/null | awk '{ print $3 }' | sed 's/^v=//')"
R_SETTINGS="DUR=${DUR}s CONNS=$CONNS WARMUP=${WARMUP}s POLL_TICKETS=$POLL_TICKETS RATE=$RATE BURST=$BURST DRAIN=${DRAIN}s DRAIN_TICKETS=$DRAIN_TICKETS DRAIN_WORKERS=\"$DRAIN_WORKERS\" SAMPLE=${SAMPLE}s"
R_RATE="$RATE" R_BURST="$BURST" R_DUR="$DUR" R_CONNS="$CONNS" R_DRAIN="$DRAIN" R_SAMPLE="$SAMPLE" R_SETTLE="$SETTLE"
R_202="not recorded (no enqueue or poll run)"
if [[ -s "$work/ticket-202.txt" ]]; then
  R_202="$(head -n1 "$work/ticket-202.txt"); $(grep -iE '^(location|retry-after|content-type):' "$work/ticket-202.txt" | paste -sd';' | sed 's/;/; /g'); $(tail -n1 "$work/ticket-202.txt")"
fi

python3 - "$raw" "$notes" >"$report" <<'EOF'
import os, sys

E = os.environ
d = {}
with open(sys.argv[1]) as fh:
    fh.readline()
    for line in fh:
        p, k, v = line.rstrip("\n").split("\t", 2)
        d.setdefault(p, {})[k] = v

def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None

def f(v, dec=0):
    v = num(v) if isinstance(v, str) else v
    return "n/a" if v is None else f"{v:,.{dec}f}"

rate = float(E["R_RATE"])
out = []
w = out.append
w("# Queue and ticket benchmark")
w("")
w(f"- date: {E['R_DATE']}")
w(f"- machine: {E['R_MACHINE']}; wrk, Floodgate, redis-server and the shop share the cores")
w(f"- floodgate: {E['R_FG_VERSION'] or '?'}, git {E['R_GIT']}, build type {E['R_BUILDTYPE']}")
w(f"- redis-server {E['R_REDIS_VERSION']} on loopback, `--save \"\" --appendonly no` (no persistence); wrk: {E['R_WRK_VERSION']}")
w(f"- settings: {E['R_SETTINGS']}; 1 shop thread, access log off; no nginx counterpart, nothing interleaved")
w(f"- load average (1/5/15 min) before the start: {E['R_LOAD_START']}; at the end: {E['R_LOAD_END']}")
w(f"- a parked request is answered: {E['R_202']}")
w("")
e, p = d.get("enqueue", {}), d.get("poll", {})
if e or p:
  w(f"## Enqueue and poll (1 worker, route rate = 1, {E['R_CONNS']} connections, {E['R_DUR']} s)")
  w("")
  w("tickets/s = tickets written to Redis during the run (`INCR`ed `fg:q:{tickets}:enq` counter) per second of "
    "wrk's run, i.e. 202 answers/s; polls/s = wrk's req/s. CPU per item = user+system time of the process "
    "divided by the tickets (or polls). other load = CPU taken by processes outside the benchmark, in cores.")
  w("")
  w("| run | per second | target | met? | p50 ms | p99 ms | non-2xx | socket errors | Floodgate CPU us | redis CPU us | other load |")
  w("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
  pl = d.get("plain", {})
  tps, pps, plr = num(e.get("tickets_per_s")), num(p.get("polls_per_s")), num(pl.get("rps"))
  if e:
    w(f"| enqueue (tickets) | {f(tps)} | 50,000 | {'n/a' if tps is None else ('yes' if tps >= 50000 else 'no')} | "
      f"{f(e.get('p50_ms'), 2)} | {f(e.get('p99_ms'), 2)} | {e.get('non2xx', 'n/a')} | {e.get('socket_errors', 'n/a')} | "
      f"{f(e.get('fg_us'), 2)} | {f(e.get('redis_us'), 2)} | {f(e.get('other'), 2)} |")
  if p:
    w(f"| poll | {f(pps)} | plain: {f(plr)} | {'n/a' if pps is None or plr is None else ('yes' if pps >= plr else 'no')} | "
      f"{f(p.get('p50_ms'), 2)} | {f(p.get('p99_ms'), 2)} | {p.get('non2xx', 'n/a')} | {p.get('socket_errors', 'n/a')} | "
      f"{f(p.get('fg_us'), 2)} | {f(p.get('redis_us'), 2)} | {f(p.get('other'), 2)} |")
  if pl:
    w(f"| plain proxy (GET /api/products) | {f(plr)} | | | "
      f"{f(pl.get('p50_ms'), 2)} | {f(pl.get('p99_ms'), 2)} | {pl.get('non2xx', 'n/a')} | {pl.get('socket_errors', 'n/a')} | "
      f"{f(pl.get('fg_us'), 2)} | | {f(pl.get('other'), 2)} |")
  w("")
  for name, r in (("enqueue, per ticket", e), ("poll, per poll", p)):
    if r.get("redis_scripts"):
      w(f"- Redis work {name} (INFO commandstats): {r.get('redis_scripts')} scripts (EVALSHA) taking "
        f"{r.get('redis_script_us')} us, and {r.get('redis_cmds')} other commands ({r.get('redis_cmd_list')}; "
        "commands run inside a script count here too)")
  w("")
  if e:
      w(f"- enqueue: {f(e.get('tickets'))} tickets in {e.get('seconds')} s; wrk answers {f(e.get('requests'))} "
      f"({f(e.get('wrk_rps'))}/s); dispatched during the run (`:taken` counter): {e.get('drained')}; "
      f"shop requests during the run: {e.get('shop_requests')}; Redis grew by {f(e.get('redis_bytes_per_ticket'))} "
      f"bytes per ticket ({f(e.get('redis_mib'), 1)} MiB used after the run, XLEN {f(e.get('xlen'))} for "
      f"{f(e.get('enq_total'))} tickets enqueued in all)")
  if p:
      w(f"- poll: {f(p.get('requests'))} polls in {p.get('seconds')} s over {p.get('tickets')} tickets"
      f"{' queued behind the enqueue run' + chr(39) + 's' if e else ''}; one poll answers `{p.get('answer')}`; after the run the tickets answered (status:count) {p.get('after_codes')}")
  w("")
drains = sorted((k for k in d if k.startswith("drain-")), key=lambda k: int(k.split("-")[1]))
if drains:
  w(f"## Drain at the route budget (rate {rate:,.0f}/s, burst {E['R_BURST']})")
  w("")
  w(f"The queue is filled first (wrk, {E['R_CONNS']} connections); the window starts {E['R_SETTLE']} s after the last "
    f"ticket and lasts {E['R_DRAIN']} s. shop/s = requests the shop counted (`/_shop/stats`) per second of the window; "
    f"taken/s = tickets the dispatcher took out of the queue (`:taken` counter). min-max = over the {E['R_SAMPLE']} s "
    "samples. Floodgate cores = its CPU time during the window per second; per ticket at this low rate it is mostly "
    "event-loop wake-ups, not comparable with the enqueue figure. Target: shop/s within +-1% of the budget.")
  w("")
  w("| workers | tickets queued | fill s | window s | shop/s | vs budget | taken/s | min-max shop/s | still queued at the end | consumers | Floodgate cores | Floodgate CPU us/ticket | redis CPU us/ticket | other load | within +-1%? |")
  w("|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|")
  for ph in drains:
    r = d[ph]
    sr = num(r.get("shop_rate"))
    devp = None if sr is None else (sr / rate - 1) * 100
    ok = "n/a" if devp is None else ("yes" if abs(devp) <= 1 else "no")
    if num(r.get("left")) is not None and num(r.get("left")) <= 0:
      ok += " (queue ran dry: invalid)"
    w(f"| {r.get('workers')} | {f(r.get('queued'))} | {f(r.get('fill_seconds'), 1)} | {f(r.get('window'), 1)} | "
      f"{f(sr, 1)} | {'n/a' if devp is None else f'{devp:+.2f}%'} | {f(r.get('taken_rate'), 1)} | "
      f"{r.get('sample_min')}-{r.get('sample_max')} | {f(r.get('left'))} | {r.get('consumers')} | {f(r.get('fg_cores'), 3)} | "
      f"{f(r.get('fg_us'), 1)} | {f(r.get('redis_us'), 1)} | {f(r.get('other'), 2)} | {ok} |")
  w("")
  for ph in drains:
    r = d[ph]
    w(f"- {r.get('workers')} worker(s): shop requests counted from the window start: {r.get('samples')}; "
      f"orders the shop created since the queue was filled: {r.get('shop_orders')}")
  w("")
w("## Problems")
w("")
with open(sys.argv[2]) as fh:
    notes = [l.rstrip("\n") for l in fh if l.strip()]
for l in notes:
    w(f"- {l}")
if not notes:
    w("- none: no non-2xx answers, no socket errors" + (", the drain queues never ran dry" if drains else ""))
busy = [(k, d[k]["other"]) for k in d if (num(d[k].get("other")) or 0) > 0.2]
if busy:
    w("- run(s) that shared the machine with other work (other load > 0.2 cores): "
      + ", ".join(f"{k} ({v})" for k, v in busy))
print("\n".join(out))
EOF

bench_show_report "wrk outputs and logs"
