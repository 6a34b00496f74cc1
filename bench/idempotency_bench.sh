#!/usr/bin/env bash
# Idempotency benchmark: what an idempotent route costs. Floodgate (1 worker)
# with a real redis-server on loopback, POST /api/orders with a new
# Idempotency-Key on every request, on a route with `idempotency` against the
# same POST on a route without it; and the duplicates: the same POST with keys
# that were answered before (every request a replay from Redis, no shop).
#
#   bench/idempotency_bench.sh               defaults: ROUNDS=3 DUR=20 (about 4 min)
#   ROUNDS=5 DUR=30 bench/idempotency_bench.sh
#
# Environment:
#   ROUNDS    measured rounds per route (idempotent, plain, replay)     default 3
#   DUR       seconds per wrk run                                       default 20
#   CONNS     wrk connections (one wrk thread)                          default 50
#   WARMUP    seconds of unrecorded load per route first                default 2
#   BUILD     1 = run `ninja -C build` first, 0 = use the binaries as they are
#                                                                       default 1
#
# Starts the demo shop (1 thread), its own redis-server (own port and temp
# dir, no persistence) and two Floodgate instances (1 worker each, both with
# the same [redis] table; only one has `idempotency` on its orders route).
# Before every run the shop's counters are reset and Redis is flushed.
# Prints a markdown report, also written to bench/results/idempotency-<timestamp>.md;
# wrk outputs, configs and logs go to bench/results/idempotency-<timestamp>.logs/.
# Everything started here is stopped (by PID) on exit, also on Ctrl-C or failure.
# bench/README.md describes the method.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
BENCH_NAME=idempotency
# shellcheck source=bench/lib.sh
source "$repo_root/bench/lib.sh"

ROUNDS="${ROUNDS:-3}"
DUR="${DUR:-20}"
CONNS="${CONNS:-50}"
WARMUP="${WARMUP:-2}"
BUILD="${BUILD:-1}"
PATH_UNDER_TEST="/api/orders"
BODY='{"sku":"card-10"}'

require_whole_numbers ROUNDS DUR CONNS WARMUP
(( ROUNDS >= 1 && DUR >= 1 && CONNS >= 1 )) || die "ROUNDS, DUR and CONNS must be >= 1"

bench_prerequisites wrk python3 curl redis-server redis-cli
bench_binaries
bench_workspace

# ------------------------------------------------------------ processes

read -r shop_port redis_port fgi_port fgp_port <<<"$(free_ports 4)"

bench_start shop "$shop_bin" --listen "127.0.0.1:$shop_port" --threads 1
shop_pid=$started_pid
wait_http shop "$shop_pid" "http://127.0.0.1:$shop_port/api/products"

start_redis "$redis_port"

fg_conf() {  # fg_conf NAME PORT ROUTE_EXTRA
  {
    fg_conf_head "\"127.0.0.1:$2\"" 1
    cat <<EOF
[redis]
url = "redis://127.0.0.1:$redis_port/0"

[[routes]]
name = "orders"
match = { path = "/api/orders", methods = ["POST"] }
upstream = "shop"
$3

[[routes]]
name = "rest"
match = { prefix = "/" }
upstream = "shop"

EOF
  } >"$work/$1.toml"
  fg_conf_finish "$1"
}
fg_conf floodgate-idempotent "$fgi_port" 'idempotency = { key = "header:Idempotency-Key" }'
fg_conf floodgate-plain "$fgp_port" ""

declare -A fg_pids
for name in floodgate-idempotent floodgate-plain; do
  bench_start "$name-stdout" "$floodgate_bin" -c "$work/$name.toml"
  fg_pids[$name]=$started_pid
done
wait_http floodgate-idempotent "${fg_pids[floodgate-idempotent]}" "http://127.0.0.1:$fgi_port/api/products"
wait_http floodgate-plain "${fg_pids[floodgate-plain]}" "http://127.0.0.1:$fgp_port/api/products"

declare -A target_port=([idempotent]=$fgi_port [plain]=$fgp_port [replay]=$fgi_port)
declare -A target_pid=([idempotent]="${fg_pids[floodgate-idempotent]}" [plain]="${fg_pids[floodgate-plain]}"
                       [replay]="${fg_pids[floodgate-idempotent]}")
all_own_pids="$shop_pid $redis_pid ${fg_pids[*]}"

shop_reset() { curl -s -o /dev/null --max-time 5 -X POST "http://127.0.0.1:$shop_port/_shop/reset"; }
shop_orders() {
  curl -s --max-time 30 "http://127.0.0.1:$shop_port/_shop/stats" |
    python3 -c 'import json,sys; d = json.load(sys.stdin); print(d["orders"], len(d["keys"]))'
}
post_order() {  # post_order PORT KEY -> status and the order_id of the answer
  curl -s --max-time 5 -X POST -H 'Content-Type: application/json' -H "Idempotency-Key: $2" \
    --data "$BODY" -w ' %{http_code}' "http://127.0.0.1:$1$PATH_UNDER_TEST"
}

# Sanity check: the idempotent route answers a repeated key with the stored
# answer (the shop sees one order), the plain route forwards both.
shop_reset
a="$(post_order "$fgi_port" sanity-1)"; b="$(post_order "$fgi_port" sanity-1)"
[[ "$a" == *" 201" && "$a" == "$b" ]] || die "the idempotent route does not replay: first '$a', second '$b'"
read -r orders _ <<<"$(shop_orders)"
[[ "$orders" == 1 ]] || die "the shop saw $orders orders for one key sent twice to the idempotent route"
shop_reset
a="$(post_order "$fgp_port" sanity-2)"; b="$(post_order "$fgp_port" sanity-2)"
read -r orders _ <<<"$(shop_orders)"
[[ "$orders" == 2 ]] || die "the shop saw $orders orders for one key sent twice to the plain route (expected 2)"
log "sanity check: idempotent route replays a repeated key (shop saw 1 order), plain route forwards it (2)"

# wrk script: a new Idempotency-Key on every request, "<run>-<thread>-<n>".
cat >"$work/orders.lua" <<'EOF'
-- POST /api/orders with a unique Idempotency-Key per request.
local body = '{"sku":"card-10"}'
local headers = { ["Content-Type"] = "application/json" }
local counter = 0
local prefix = ""
local next_thread = 0

function setup(thread)
  thread:set("thread_id", next_thread)
  next_thread = next_thread + 1
end

function init(args)
  prefix = (args[1] or "run") .. "-" .. tostring(thread_id) .. "-"
end

function request()
  counter = counter + 1
  headers["Idempotency-Key"] = prefix .. counter
  return wrk.format("POST", "/api/orders", headers, body)
end
EOF
bench_keep+=("orders.lua")

# wrk script for the replay runs: every request repeats one of REPLAY_KEYS keys
# answered before the run (fill_replay_keys sends each of them first), so each is
# a duplicate answered from its stored record.
cat >"$work/replay.lua" <<'EOF'
-- POST /api/orders with an Idempotency-Key answered before: a replay.
local body = '{"sku":"card-10"}'
local headers = { ["Content-Type"] = "application/json" }
local counter = 0
local keys = 1000

function init(args)
  keys = tonumber(args[2] or "1000")
  counter = math.random(keys)
end

function request()
  counter = counter % keys + 1
  headers["Idempotency-Key"] = "replay-" .. counter
  return wrk.format("POST", "/api/orders", headers, body)
end
EOF
bench_keep+=("replay.lua")
REPLAY_KEYS=1000
# Answers the replay keys once each (the shop sees them here, never in a replay run).
fill_replay_keys() {
  local i stored
  for (( i = 1; i <= REPLAY_KEYS; i++ )); do
    printf 'replay-%d\n' "$i"
  done | xargs -P 8 -I{} curl -s -o /dev/null --max-time 5 -X POST -H 'Content-Type: application/json' \
    -H "Idempotency-Key: {}" --data "$BODY" "http://127.0.0.1:$fgi_port$PATH_UNDER_TEST"
  stored="$(rcli --scan --pattern '*idem:*replay-*' | wc -l)"
  (( stored == REPLAY_KEYS )) || die "only $stored of $REPLAY_KEYS replay keys were stored before the replay run"
}

# ------------------------------------------------------------ wrk runs

raw="$work/runs.tsv"
printf 'target\tround\tseconds\trps\tp50_ms\tp99_ms\trequests\tnon2xx\tsocket_errors\tfg_cpu_us_per_req\tredis_cpu_us_per_req\tshop_cpu_us_per_req\tother_cpu_cores\tredis_keys\tredis_used_mib\tredis_cmds_per_req\n' >"$raw"
notes="$work/notes.txt"
: >"$notes"

run_wrk() {  # run_wrk TARGET SECONDS OUTFILE TAG
  local url="http://127.0.0.1:${target_port[$1]}$PATH_UNDER_TEST" TIMEFORMAT='%3U %3S'
  local script=orders.lua
  [[ "$1" == replay ]] && script=replay.lua
  { time wrk -t1 -c"$CONNS" -d"${2}s" --latency -s "$work/$script" "$url" -- "$4" "$REPLAY_KEYS" >"$3" 2>&1 || true; } \
    2>"$3.time"
}
# prepare TARGET: a fresh shop and Redis; a replay run finds its keys answered.
prepare() {
  rcli flushall >/dev/null
  if [[ "$1" == replay ]]; then fill_replay_keys; fi
  shop_reset
  rcli config resetstat >/dev/null
}
# Redis commands per request during the run: "evalsha 2.00 set 1.00", from INFO commandstats.
redis_cmds_per_req() {
  rcli info commandstats 2>/dev/null | tr -d '\r' | awk -F'[_:,=]' -v r="$1" '
    /^cmdstat_/ && $2 != "info" && $2 !~ /^config/ && $2 != "dbsize" && $2 != "flushall" && $2 != "ping" && r > 0 {
      printf "%s%s %.2f", (n++ ? " " : ""), $2, $4 / r }
    END { if (!n) printf "-" }'
}

if (( WARMUP > 0 )); then
  log "warm-up: ${WARMUP}s per route (not recorded)"
  for t in idempotent plain replay; do prepare "$t"; run_wrk "$t" "$WARMUP" "$work/warmup-$t.txt" "warmup-$t"; done
fi

total_runs=$(( ROUNDS * 3 ))
n=0
for (( round = 1; round <= ROUNDS; round++ )); do
  case $(( round % 3 )) in
    1) order=(idempotent plain replay) ;;
    2) order=(plain replay idempotent) ;;
    *) order=(replay idempotent plain) ;;
  esac
  for t in "${order[@]}"; do
    n=$(( n + 1 ))
    out="$work/wrk-$t-r$round.txt"
    prepare "$t"
    # shellcheck disable=SC2086  # all_own_pids holds a list
    {
      fg_t0="$(proc_ticks ${target_pid[$t]})"
      redis_t0="$(proc_ticks "$redis_pid")"
      shop_t0="$(proc_ticks "$shop_pid")"
      own_t0="$(proc_ticks $all_own_pids)"
      busy_t0="$(machine_busy_ticks)"
      wall_t0="$(date +%s.%N)"
      run_wrk "$t" "$DUR" "$out" "r$round-$t"
      wall_t1="$(date +%s.%N)"
      busy_t1="$(machine_busy_ticks)"
      own_t1="$(proc_ticks $all_own_pids)"
      shop_t1="$(proc_ticks "$shop_pid")"
      redis_t1="$(proc_ticks "$redis_pid")"
      fg_t1="$(proc_ticks ${target_pid[$t]})"
    }
    read -r wrk_user wrk_sys <"$out.time" || { wrk_user=0; wrk_sys=0; }
    read -r rps p50 p99 reqs non2xx sockerr secs < <(parse_wrk "$out")
    other="$(other_load $(( busy_t1 - busy_t0 )) $(( own_t1 - own_t0 )) "$wrk_user" "$wrk_sys" \
      "$(awk -v a="$wall_t0" -v b="$wall_t1" 'BEGIN { print b - a }')")"
    per_req() { awk -v t="$1" -v r="$reqs" -v hz="$clk_tck" 'BEGIN { if (r > 0) printf "%.2f", t / hz * 1e6 / r; else print "NA" }'; }
    fg_us="$(per_req $(( fg_t1 - fg_t0 )))"
    redis_us="$(per_req $(( redis_t1 - redis_t0 )))"
    shop_us="$(per_req $(( shop_t1 - shop_t0 )))"
    redis_keys="$(rcli dbsize 2>/dev/null || echo NA)"
    redis_mib="$(rcli info memory 2>/dev/null | awk -F: '/^used_memory:/ { printf "%.1f", $2 / 1048576 }')"
    printf '%s\t' "$t" "$round" "$secs" "$rps" "$p50" "$p99" "$reqs" "$non2xx" "$sockerr" \
      "$fg_us" "$redis_us" "$shop_us" "$other" "$redis_keys" >>"$raw"
    redis_cmds="$(redis_cmds_per_req "$reqs")"
    printf '%s\t%s\n' "${redis_mib:-NA}" "$redis_cmds" >>"$raw"
    log "[$n/$total_runs] round $round $(printf '%-10s' "$t") ${rps} req/s  p50 ${p50} ms  p99 ${p99} ms  Floodgate CPU ${fg_us} us/req  redis ${redis_us} us/req  redis keys $redis_keys  redis commands/req: $redis_cmds  other load ${other} cores"
    if [[ "$rps" == NA ]]; then
      echo "round $round, $t: wrk gave no result: $(tr '\n' ' ' <"$out" | cut -c1-300)" >>"$notes"
    fi
    if (( non2xx > 0 || sockerr > 0 )); then
      echo "round $round, $t: $non2xx non-2xx responses, $sockerr socket errors ($(grep -E 'Socket errors|Non-2xx' "$out" | tr -s ' ' | tr '\n' ';'))" >>"$notes"
    fi
    if [[ "$t" == replay ]]; then
      read -r orders _ <<<"$(shop_orders)"
      if [[ "$orders" != 0 ]]; then
        echo "round $round, replay: the shop saw $orders orders (a replay run must not reach it)" >>"$notes"
      fi
    fi
    cp "$out" "$logs_dir/"
  done
done

for name in floodgate-idempotent floodgate-plain; do
  kill -0 "${fg_pids[$name]}" 2>/dev/null || die "$name is no longer running after the load runs; see $logs_dir/"
done
kill -0 "$redis_pid" 2>/dev/null || die "redis-server is no longer running after the load runs"

# ------------------------------------------------------------ report

bench_versions
export R_REDIS_VERSION R_SETTINGS R_ROUNDS
R_REDIS_VERSION="$(redis-server --version 2>/dev/null | awk '{ print $3 }' | sed 's/^v=//')"
R_SETTINGS="ROUNDS=$ROUNDS DUR=${DUR}s CONNS=$CONNS WARMUP=${WARMUP}s"
R_ROUNDS="$ROUNDS"

python3 - "$raw" "$notes" >"$report" <<'EOF'
import os, statistics, sys

E = os.environ
rows = []
with open(sys.argv[1]) as fh:
    header = fh.readline().rstrip("\n").split("\t")
    for line in fh:
        rows.append(dict(zip(header, line.rstrip("\n").split("\t"))))

def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None

def med(t, key):
    vals = [num(r[key]) for r in rows if r["target"] == t]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None

def f(v, d=0):
    return "n/a" if v is None else f"{v:,.{d}f}"

def ratio(a, b):
    return a / b if a is not None and b else None

out = []
w = out.append
w("# Idempotency benchmark: idempotent route vs plain route")
w("")
w(f"- date: {E['R_DATE']}")
w(f"- machine: {E['R_MACHINE']}; wrk, Floodgate, redis-server and the shop share the cores")
w(f"- floodgate: {E['R_FG_VERSION'] or '?'}, git {E['R_GIT']}, build type {E['R_BUILDTYPE']}")
w(f"- redis-server {E['R_REDIS_VERSION']} on loopback (no persistence); wrk: {E['R_WRK_VERSION']}")
w(f"- settings: {E['R_SETTINGS']}; wrk -t1 --latency, POST /api/orders, body {{\"sku\":\"card-10\"}}, "
  "a new Idempotency-Key on every request; 1 Floodgate worker, 1 shop thread, access log off")
w(f"- load average (1/5/15 min) before the start: {E['R_LOAD_START']}; at the end: {E['R_LOAD_END']}")
w("")
w(f"Medians over {E['R_ROUNDS']} round(s); latency in ms; CPU per request = user+system CPU time of the "
  "process divided by the requests wrk completed; redis keys = DBSIZE right after the run (Redis is "
  "flushed before each run); other load = CPU taken by processes outside the benchmark, in cores.")
w("")
w("| route | req/s | p50 ms | p99 ms | Floodgate CPU us/req | redis CPU us/req | shop CPU us/req | redis keys | redis MiB | other load |")
w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for t in ("idempotent", "plain", "replay"):
    w(f"| {t} | {f(med(t, 'rps'))} | {f(med(t, 'p50_ms'), 2)} | {f(med(t, 'p99_ms'), 2)} | "
      f"{f(med(t, 'fg_cpu_us_per_req'), 2)} | {f(med(t, 'redis_cpu_us_per_req'), 2)} | "
      f"{f(med(t, 'shop_cpu_us_per_req'), 2)} | {f(med(t, 'redis_keys'))} | {f(med(t, 'redis_used_mib'), 1)} | "
      f"{f(med(t, 'other_cpu_cores'), 2)} |")
w("")
rr = ratio(med("idempotent", "rps"), med("plain", "rps"))
p_i, p_p = med("idempotent", "p99_ms"), med("plain", "p99_ms")
added = None if p_i is None or p_p is None else p_i - p_p
cr = ratio(med("idempotent", "fg_cpu_us_per_req"), med("plain", "fg_cpu_us_per_req"))
ri = med("idempotent", "redis_cpu_us_per_req")
yes = lambda v, ok: "n/a" if v is None else ("yes" if ok(v) else "no")
w("| idempotent/plain req/s | added p99 ms | idempotent/plain Floodgate CPU per request | Redis CPU us/req | "
  "req/s >= 0.75x | added p99 <= 1 ms | CPU <= 1.15x | Redis <= 6 us |")
w("|---:|---:|---:|---:|---|---|---|---|")
w(f"| {f(rr, 2)}x | {'n/a' if added is None else f'{added:+.2f}'} | {f(cr, 2)}x | {f(ri, 2)} | "
  f"{yes(rr, lambda v: v >= 0.75)} | {yes(added, lambda v: v <= 1.0)} | {yes(cr, lambda v: v <= 1.15)} | "
  f"{yes(ri, lambda v: v <= 6.0)} |")
w("")
rp = ratio(med("replay", "rps"), med("plain", "rps"))
rc = ratio(med("replay", "fg_cpu_us_per_req"), med("plain", "fg_cpu_us_per_req"))
w("| replay/plain req/s | replay/plain Floodgate CPU per request | req/s >= 1.0x |")
w("|---:|---:|---|")
w(f"| {f(rp, 2)}x | {f(rc, 2)}x | {'n/a' if rp is None else ('yes' if rp >= 1.0 else 'no')} |")
w("")
w("Per round (the runs of a round are back to back, so they share the machine's conditions best; "
  "other load is the largest of the round's runs'):")
w("")
w("| round | idempotent/plain req/s | added p99 ms | replay/plain req/s | other load |")
w("|---:|---:|---:|---:|---:|")
for rnd in sorted({r["round"] for r in rows}, key=int):
    run = {r["target"]: r for r in rows if r["round"] == rnd}
    if "idempotent" in run and "plain" in run:
        i, p = run["idempotent"], run["plain"]
        d = (num(i["p99_ms"]) - num(p["p99_ms"])) if num(i["p99_ms"]) is not None and num(p["p99_ms"]) is not None else None
        rr_round = ratio(num(run["replay"]["rps"]), num(p["rps"])) if "replay" in run else None
        w(f"| {rnd} | {f(ratio(num(i['rps']), num(p['rps'])), 2)}x | {'n/a' if d is None else f'{d:+.2f}'} | "
          f"{f(rr_round, 2)}x | {f(max(num(r['other_cpu_cores']) or 0 for r in run.values()), 2)} |")
w("")
w("## Problems")
w("")
with open(sys.argv[2]) as fh:
    notes = [l.rstrip("\n") for l in fh if l.strip()]
for l in notes:
    w(f"- {l}")
if not notes:
    w("- none: no non-2xx responses, no socket errors, no failed runs")
for r in rows:
    if r["target"] == "idempotent" and num(r["redis_keys"]) is not None and num(r["requests"]):
        if num(r["redis_keys"]) < num(r["requests"]):
            w(f"- round {r['round']}: Redis holds {r['redis_keys']} keys after {r['requests']} requests "
              "(fewer than requests: some answers were not stored)")
busy = [r for r in rows if (num(r["other_cpu_cores"]) or 0) > 0.2]
if busy:
    w(f"- {len(busy)} run(s) shared the machine with other work (other load > 0.2 cores): "
      + ", ".join(f"round {r['round']} {r['target']} ({r['other_cpu_cores']})" for r in busy))
w("")
w("## All runs")
w("")
w("| route | round | seconds | req/s | p50 ms | p99 ms | requests | non-2xx | socket errors | Floodgate CPU us/req | redis CPU us/req | shop CPU us/req | redis keys | redis MiB | redis commands per request (EVALSHA and the calls inside its scripts) | other load |")
w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
for r in rows:
    w(f"| {r['target']} | {r['round']} | {r['seconds']} | {f(num(r['rps']))} | {f(num(r['p50_ms']), 2)} | "
      f"{f(num(r['p99_ms']), 2)} | {r['requests']} | {r['non2xx']} | {r['socket_errors']} | "
      f"{r['fg_cpu_us_per_req']} | {r['redis_cpu_us_per_req']} | {r['shop_cpu_us_per_req']} | "
      f"{r['redis_keys']} | {r['redis_used_mib']} | {r['redis_cmds_per_req']} | {r['other_cpu_cores']} |")
print("\n".join(out))
EOF

bench_show_report "wrk outputs and logs"
