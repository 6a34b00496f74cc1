#!/usr/bin/env bash
# Proxy comparison benchmark: Floodgate against nginx in front of the same
# demo shop, on one machine, with wrk as the load generator.
#
#   bench/proxy_bench.sh                 defaults: ROUNDS=3 DUR=10 (about 4 min)
#   ROUNDS=5 DUR=20 bench/proxy_bench.sh
#
# Environment:
#   ROUNDS      measured rounds per (target, connections)           default 3
#   DUR         seconds per wrk run                                 default 10
#   CONNS       wrk connection counts, space-separated              default "50 200"
#   WARMUP      seconds of unrecorded wrk load per target first     default 2
#   IDLE_CONNS  idle keep-alive connections for the RSS check       default 10000
#               (0 skips the check)
#   KEEPALIVE   idle upstream connections each proxy keeps          default 64
#   ACCESS_LOG  1 = both proxies write an access log to a file (Floodgate's
#               JSON lines, nginx `combined` with `buffer=64k`), 0 = both off
#                                                                   default 0
#   BUILD       1 = run `ninja -C build` first, 0 = use the binaries as they are
#                                                                   default 1
#
# Starts the demo shop (1 thread), Floodgate (1 worker) and nginx (1 worker
# process) on free loopback ports, runs wrk against the shop directly (the
# ceiling), Floodgate and nginx, interleaved round by round, and prints a
# markdown table of median req/s, p50 and p99 per target. The same report is
# written to bench/results/proxy-<timestamp>.md; the processes' logs, the
# generated configs and wrk's outputs go to bench/results/proxy-<timestamp>.logs/.
# Everything started here is stopped on exit, also on Ctrl-C or failure.
# bench/README.md describes the method.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
BENCH_NAME=proxy
# shellcheck source=bench/lib.sh
source "$repo_root/bench/lib.sh"

ROUNDS="${ROUNDS:-3}"
DUR="${DUR:-10}"
CONNS="${CONNS:-50 200}"
WARMUP="${WARMUP:-2}"
IDLE_CONNS="${IDLE_CONNS:-10000}"
BUILD="${BUILD:-1}"
KEEPALIVE="${KEEPALIVE:-64}"
ACCESS_LOG="${ACCESS_LOG:-0}"
PATH_UNDER_TEST="/api/products"

for v in ROUNDS DUR WARMUP IDLE_CONNS KEEPALIVE ACCESS_LOG; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || { echo "proxy_bench: $v must be a whole number, got '${!v}'" >&2; exit 2; }
done
(( ROUNDS >= 1 && DUR >= 1 )) || { echo "proxy_bench: ROUNDS and DUR must be >= 1" >&2; exit 2; }
read -r -a conn_counts <<<"$CONNS"
for c in "${conn_counts[@]}"; do
  [[ "$c" =~ ^[1-9][0-9]*$ ]] || { echo "proxy_bench: CONNS must be numbers, got '$CONNS'" >&2; exit 2; }
done

log() { printf 'proxy_bench: %s\n' "$*" >&2; }

# ------------------------------------------------------------ prerequisites

bench_prerequisites nginx wrk python3 curl ss
bench_binaries

# 10,000 idle connections need more than the usual 1024 open files, in this
# shell (inherited by the proxies) and in idle_conns.py.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
nofile="$(ulimit -n)"
if (( IDLE_CONNS > 0 )) && [[ "$nofile" != unlimited ]] && (( nofile < IDLE_CONNS + 100 )); then
  log "warning: open-files limit is $nofile, too low for IDLE_CONNS=$IDLE_CONNS; the idle check is skipped"
  IDLE_CONNS=0
fi

# ------------------------------------------------------------ processes

bench_workspace

read -r shop_port fg_port nginx_port <<<"$(free_ports 3)"

bench_start shop "$shop_bin" --listen "127.0.0.1:$shop_port" --threads 1
shop_pid=$started_pid
wait_http shop "$shop_pid" "http://127.0.0.1:$shop_port$PATH_UNDER_TEST"

# Floodgate: one worker, one route, access log as nginx's below. The access logs
# go to files that are not copied to the results (they grow by ~100 MB a run).
if [[ "$ACCESS_LOG" == 1 ]]; then
  fg_log_file="$work/floodgate-access.jsonl"
  fg_access=true
  ngx_access="access_log $work/nginx-access.txt combined buffer=64k;"
else
  fg_log_file="$work/floodgate.log"
  fg_access=false
  ngx_access="access_log off;"
fi
{
  fg_conf_head "\"127.0.0.1:$fg_port\"" 1 "$KEEPALIVE"
  cat <<EOF
[[routes]]
name = "all"
match = { prefix = "/" }
upstream = "shop"

EOF
} >"$work/floodgate.toml"
fg_conf_finish floodgate "$fg_log_file" "$fg_access"
bench_start floodgate "$floodgate_bin" -c "$work/floodgate.toml"
fg_pid=$started_pid
wait_http floodgate "$fg_pid" "http://127.0.0.1:$fg_port$PATH_UNDER_TEST"

# nginx: one worker process, its own prefix, upstream keep-alive pool of
# KEEPALIVE (64),
# access log as Floodgate's. keepalive_requests is raised on both sides because nginx
# otherwise closes every client and upstream connection after 1000 requests
# (Floodgate has no such limit), which would cost nginx reconnects that have
# nothing to do with proxying speed.
{
  nginx_conf_head 1 "$KEEPALIVE" "$ngx_access"
  cat <<EOF
    server {
        listen 127.0.0.1:$nginx_port;
        location / {
            proxy_pass http://shop;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
} >"$work/nginx.conf"
start_nginx nginx-stdout "http://127.0.0.1:$nginx_port$PATH_UNDER_TEST"

# The three must serve the same document, or the comparison is meaningless.
for t in "shop:$shop_port" "floodgate:$fg_port" "nginx:$nginx_port"; do
  body_len="$(curl -s --max-time 5 "http://127.0.0.1:${t#*:}$PATH_UNDER_TEST" | wc -c)"
  log "${t%%:*} on 127.0.0.1:${t#*:} answers $PATH_UNDER_TEST with a ${body_len}-byte body"
done

declare -A target_port=([shop-direct]=$shop_port [floodgate]=$fg_port [nginx]=$nginx_port)
targets=(shop-direct floodgate nginx)

# ------------------------------------------------------------ wrk runs

declare -A target_pids=([shop-direct]="" [floodgate]="$fg_pid" [nginx]="$nginx_pid ${ngx_workers[*]}")

raw="$work/runs.tsv"
printf 'target\tconns\tround\trps\tp50_ms\tp99_ms\trequests\tnon2xx\tsocket_errors\tproxy_cpu_us_per_req\tshop_cpu_us_per_req\tother_cpu_cores\tupstream_connects\ttw_total\n' >"$raw"
notes="$work/notes.txt"    # problems, in order
: >"$notes"

# TCP connections this network namespace opened (connect()s), from
# /proc/net/snmp: over a proxy run, those beyond wrk's own are the proxy's
# upstream connects, i.e. upstream connection churn.
tcp_active_opens() {
  awk '$1 == "Tcp:" { if (!h) { for (i = 2; i <= NF; i++) if ($i == "ActiveOpens") col = i; h = 1 } else { print $col; exit } }' /proc/net/snmp
}
time_wait_total() { ss -Htan state time-wait | wc -l; }

run_wrk() {  # run_wrk TARGET CONNS SECONDS OUTFILE  (wrk's CPU seconds "user sys" go to OUTFILE.time)
  local url="http://127.0.0.1:${target_port[$1]}$PATH_UNDER_TEST" TIMEFORMAT='%3U %3S'
  { time wrk -t1 -c"$2" -d"${3}s" --latency "$url" >"$4" 2>&1 || true; } 2>"$4.time"
}

if (( WARMUP > 0 )); then
  log "warm-up: ${WARMUP}s per target at ${conn_counts[0]} connections (not recorded)"
  for t in "${targets[@]}"; do run_wrk "$t" "${conn_counts[0]}" "$WARMUP" "$work/warmup-$t.txt"; done
fi

total_runs=$(( ROUNDS * ${#conn_counts[@]} * ${#targets[@]} ))
n=0
for (( round = 1; round <= ROUNDS; round++ )); do
  for c in "${conn_counts[@]}"; do
    for t in "${targets[@]}"; do
      n=$(( n + 1 ))
      out="$work/wrk-$t-c$c-r$round.txt"
      # shellcheck disable=SC2086  # target_pids holds a list of pids
      {
        opens_t0="$(tcp_active_opens)"
        proxy_t0="$(proc_ticks ${target_pids[$t]})"
        shop_t0="$(proc_ticks "$shop_pid")"
        busy_t0="$(machine_busy_ticks)"
        wall_t0="$(date +%s.%N)"
        run_wrk "$t" "$c" "$DUR" "$out"
        wall_t1="$(date +%s.%N)"
        busy_t1="$(machine_busy_ticks)"
        shop_t1="$(proc_ticks "$shop_pid")"
        proxy_t1="$(proc_ticks ${target_pids[$t]})"
        opens_t1="$(tcp_active_opens)"
      }
      read -r wrk_user wrk_sys <"$out.time" || { wrk_user=0; wrk_sys=0; }
      read -r rps p50 p99 reqs non2xx sockerr _ < <(parse_wrk "$out")
      read -r proxy_us shop_us other_cores < <(awk -v pt=$(( proxy_t1 - proxy_t0 )) -v st=$(( shop_t1 - shop_t0 )) \
        -v bt=$(( busy_t1 - busy_t0 )) -v wu="$wrk_user" -v ws="$wrk_sys" -v hz="$clk_tck" \
        -v w0="$wall_t0" -v w1="$wall_t1" -v r="$reqs" -v direct="$([[ $t == shop-direct ]] && echo 1 || echo 0)" '
        BEGIN {
          other = (bt - pt - st) / hz - wu - ws
          if (other < 0) other = 0
          printf "%s %.1f %.2f\n", (direct || r == 0) ? "NA" : sprintf("%.1f", pt / hz * 1e6 / r),
            (r == 0 ? 0 : st / hz * 1e6 / r), other / (w1 - w0)
        }')
      # wrk opens one connection per -c (more only after errors)
      upstream_connects=$(( opens_t1 - opens_t0 - c ))
      (( upstream_connects >= 0 )) || upstream_connects=0
      [[ "$t" == shop-direct ]] && upstream_connects="NA"
      tw_total="NA" extra=""
      if [[ "$t" != shop-direct ]] && (( c == 200 )); then
        tw_total="$(time_wait_total)"
        extra="  TIME_WAIT $tw_total"
      fi
      [[ "$t" == shop-direct ]] || extra="  upstream connects $upstream_connects$extra"
      printf '%s\t' "$t" "$c" "$round" "$rps" "$p50" "$p99" "$reqs" "$non2xx" "$sockerr" \
        "$proxy_us" "$shop_us" "$other_cores" "$upstream_connects" >>"$raw"
      printf '%s\n' "$tw_total" >>"$raw"
      log "[$n/$total_runs] round $round c=$c $(printf '%-11s' "$t") ${rps} req/s  p50 ${p50} ms  p99 ${p99} ms  proxy CPU ${proxy_us} us/req  other load ${other_cores} cores${extra}"
      if [[ "$rps" == NA ]]; then
        echo "PROBLEM: round $round, $t, $c connections: wrk gave no result: $(tr '\n' ' ' <"$out" | cut -c1-300)" >>"$notes"
        log "  wrk gave no result; its output: $(tr '\n' ' ' <"$out" | cut -c1-300)"
      fi
      if (( non2xx > 0 || sockerr > 0 )); then
        echo "PROBLEM: round $round, $t, $c connections: $non2xx non-2xx/3xx responses, $sockerr socket errors ($(grep -E 'Socket errors|Non-2xx' "$out" | tr -s ' ' | tr '\n' ';'))" >>"$notes"
        log "  $non2xx non-2xx/3xx responses, $sockerr socket errors"
      fi
      cp "$out" "$logs_dir/"
    done
  done
done

kill -0 "$fg_pid" 2>/dev/null || die "Floodgate is no longer running after the load runs; see $logs_dir/floodgate.log"
kill -0 "$nginx_pid" 2>/dev/null || die "nginx is no longer running after the load runs"

status_kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || true; }
sum_kib() { local s=0 p v; for p in "$@"; do v="$(status_kib "$p" "$FIELD")"; s=$(( s + ${v:-0} )); done; echo "$s"; }
fg_rss_after="$(FIELD=VmRSS sum_kib "$fg_pid")"
fg_hwm_after="$(FIELD=VmHWM sum_kib "$fg_pid")"
ngx_rss_after="$(FIELD=VmRSS sum_kib "$nginx_pid" "${ngx_workers[@]}")"
log "after the load runs: Floodgate VmRSS $(( fg_rss_after / 1024 )) MiB (VmHWM $(( fg_hwm_after / 1024 )) MiB); nginx master+worker VmRSS $(( ngx_rss_after / 1024 )) MiB"

# ------------------------------------------------------------ idle connections

idle_fg="" idle_ngx=""
if (( IDLE_CONNS > 0 )); then
  log "idle check: $IDLE_CONNS keep-alive connections to Floodgate"
  idle_fg="$(python3 bench/idle_conns.py --label floodgate --target "127.0.0.1:$fg_port" \
    --pid "$fg_pid" --conns "$IDLE_CONNS" --path "$PATH_UNDER_TEST" 2>&1)" || true
  printf '%s\n' "$idle_fg" >&2
  # The same for nginx, for comparison (master + worker processes).
  sleep 1
  ngx_pid_args=(--pid "$nginx_pid")
  for p in "${ngx_workers[@]}"; do ngx_pid_args+=(--pid "$p"); done
  log "idle check: $IDLE_CONNS keep-alive connections to nginx"
  idle_ngx="$(python3 bench/idle_conns.py --label nginx --target "127.0.0.1:$nginx_port" \
    "${ngx_pid_args[@]}" --conns "$IDLE_CONNS" --path "$PATH_UNDER_TEST" 2>&1)" || true
  printf '%s\n' "$idle_ngx" >&2
fi
kill -0 "$fg_pid" 2>/dev/null || echo "PROBLEM: Floodgate exited during the idle-connection check" >>"$notes"

# ------------------------------------------------------------ report

export R_FG_VERSION R_NGINX_VERSION R_WRK_VERSION R_GIT R_CPU R_LOAD_START R_LOAD_END R_IDLE_FG R_IDLE_NGX \
  R_SETTINGS R_DATE R_MACHINE R_BUILDTYPE R_FG_RSS R_FG_HWM R_NGX_RSS R_ROUNDS R_CONNS
R_FG_VERSION="$("$floodgate_bin" --version 2>&1 | head -n1 || true)"
R_NGINX_VERSION="$(nginx -v 2>&1 | sed 's/^nginx version: //' || true)"
R_WRK_VERSION="$(wrk -v 2>&1 | head -n1 | awk '{print $2}' || true)"
R_GIT="$(git -C "$repo_root" rev-parse --short HEAD 2>/dev/null || echo '?')"
git -C "$repo_root" diff --quiet HEAD 2>/dev/null || R_GIT="$R_GIT (with uncommitted changes)"
R_CPU="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)"
R_LOAD_START="$load_start"
R_LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg)"
R_IDLE_FG="$idle_fg"
R_IDLE_NGX="$idle_ngx"
R_SETTINGS="ROUNDS=$ROUNDS DUR=${DUR}s CONNS=\"$CONNS\" WARMUP=${WARMUP}s KEEPALIVE=$KEEPALIVE ACCESS_LOG=$ACCESS_LOG"
R_DATE="$(date '+%Y-%m-%d %H:%M:%S %Z')"
R_MACHINE="$(nproc) cores${R_CPU:+ ($R_CPU)}, $(uname -sr)"
R_BUILDTYPE="$buildtype"
R_FG_RSS="$fg_rss_after" R_FG_HWM="$fg_hwm_after" R_NGX_RSS="$ngx_rss_after"
R_ROUNDS="$ROUNDS" R_CONNS="$CONNS"

python3 - "$raw" "$notes" >"$report" <<'EOF'
import os, statistics, sys

E = os.environ
raw_path, notes_path = sys.argv[1], sys.argv[2]
rows = []
with open(raw_path) as fh:
    header = fh.readline().rstrip("\n").split("\t")
    for line in fh:
        rows.append(dict(zip(header, line.rstrip("\n").split("\t"))))
conns = [int(c) for c in E["R_CONNS"].split()]
targets = ["shop-direct", "floodgate", "nginx"]

def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None

def sel(t, c):
    return [r for r in rows if r["target"] == t and int(r["conns"]) == c]

def med(t, c, key):
    vals = [num(r[key]) for r in sel(t, c)]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None

def total(t, c, key):
    return sum(int(r[key]) for r in sel(t, c))

def f(v, digits=0):
    return "n/a" if v is None else f"{v:,.{digits}f}"

def mib(kib):
    return f"{int(kib) / 1024:.1f} MiB"

out = []
w = out.append
w("# Proxy benchmark: Floodgate vs nginx")
w("")
w(f"- date: {E['R_DATE']}")
w(f"- machine: {E['R_MACHINE']}; wrk, the proxy and the shop share the cores")
w(f"- floodgate: {E['R_FG_VERSION'] or '?'}, git {E['R_GIT']}, build type {E['R_BUILDTYPE']}")
w(f"- nginx: {E['R_NGINX_VERSION']}; wrk: {E['R_WRK_VERSION']}")
w(f"- settings: {E['R_SETTINGS']}; wrk -t1 --latency GET /api/products; "
  "1 proxy worker, 1 shop thread, access logs " + ("on, to files" if E['R_SETTINGS'].endswith("ACCESS_LOG=1") else "off"))
w(f"- load average (1/5/15 min) before the start: {E['R_LOAD_START']}; at the end: {E['R_LOAD_END']} "
  "(the benchmark itself adds about 2)")
w("")
w(f"Medians over {E['R_ROUNDS']} round(s); latency in ms. proxy CPU = user+system CPU time of the "
  "proxy process(es) per request; other load = CPU taken by processes outside the benchmark, "
  "in cores (should be ~0).")
w("")
w("| conns | target | req/s | p50 ms | p99 ms | proxy CPU us/req | other load | non-2xx | socket errors |")
w("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
for c in conns:
    for t in targets:
        w(f"| {c} | {t} | {f(med(t, c, 'rps'))} | {f(med(t, c, 'p50_ms'), 2)} | "
          f"{f(med(t, c, 'p99_ms'), 2)} | {f(med(t, c, 'proxy_cpu_us_per_req'), 1)} | "
          f"{f(med(t, c, 'other_cpu_cores'), 2)} | "
          f"{total(t, c, 'non2xx')} | {total(t, c, 'socket_errors')} |")
w("")
w("| conns | Floodgate/nginx req/s | Floodgate/nginx p99 | Floodgate/nginx CPU per req | Floodgate/shop-direct req/s | req/s >= 1.0x nginx | p99 <= nginx |")
w("|---:|---:|---:|---:|---:|---|---|")
def ratio(a, b):
    return a / b if a is not None and b else None
for c in conns:
    rr = ratio(med("floodgate", c, "rps"), med("nginx", c, "rps"))
    pr = ratio(med("floodgate", c, "p99_ms"), med("nginx", c, "p99_ms"))
    cr = ratio(med("floodgate", c, "proxy_cpu_us_per_req"), med("nginx", c, "proxy_cpu_us_per_req"))
    ds = ratio(med("floodgate", c, "rps"), med("shop-direct", c, "rps"))
    w(f"| {c} | {f(rr, 2)}x | {f(pr, 2)}x | {f(cr, 2)}x | {f(ds, 2)}x | "
      f"{'n/a' if rr is None else ('yes' if rr >= 1.0 else 'no')} | "
      f"{'n/a' if pr is None else ('yes' if pr <= 1.0 else 'no')} |")
w("")
w("## Memory")
w("")
w(f"- after the load runs: Floodgate VmRSS {mib(E['R_FG_RSS'])} (VmHWM {mib(E['R_FG_HWM'])}); "
  f"nginx master+worker VmRSS {mib(E['R_NGX_RSS'])}")
idle = (E.get("R_IDLE_FG", "") + "\n" + E.get("R_IDLE_NGX", "")).splitlines()
if not any(l.strip() for l in idle):
    w("- idle-connection check skipped (IDLE_CONNS=0 or open-files limit too low)")
for line in idle:
    if line.strip() and not line.startswith("idle_conns "):
        w(f"- {line.strip()}")
for line in idle:
    if line.startswith("idle_conns "):
        kv = dict(p.split("=", 1) for p in line.split()[1:])
        if kv.get("label") == "floodgate":
            m = int(kv["rss_after_kib"]) / 1024
            ok = m <= 64 and kv["alive"] == kv["conns"] and kv["conns"] == "10000"
            w(f"- Floodgate with {kv['alive']} of {kv['conns']} idle keep-alive connections open: "
              f"VmRSS {m:.1f} MiB (target: 10,000 connections <= 64 MiB: {'met' if ok else 'NOT met'})")
w("")
w("## Upstream connections and TIME_WAIT")
w("")
w("upstream connects = TCP connections opened during the run (`ActiveOpens` in /proc/net/snmp) "
  "beyond wrk's own, i.e. how often the proxy had to open a new connection to the shop. "
  "TIME_WAIT = all TIME_WAIT sockets on the machine right after the run "
  "(`ss -tan state time-wait`, measured after the 200-connection runs; they live 60 s, so a count "
  "includes the runs just before it).")
w("")
w("| conns | target | round | requests | upstream connects | TIME_WAIT after |")
w("|---:|---|---:|---:|---:|---:|")
for c in conns:
    for r in rows:
        if r["target"] != "shop-direct" and int(r["conns"]) == c:
            w(f"| {c} | {r['target']} | {r['round']} | {r['requests']} | {r['upstream_connects']} | "
              f"{'-' if r['tw_total'] == 'NA' else r['tw_total']} |")
w("")
w("## Problems")
w("")
with open(notes_path) as fh:
    notes = [l.rstrip("\n") for l in fh if l.strip()]
for l in notes:
    w(f"- {l}")
if not notes:
    w("- none: no non-2xx responses, no socket errors, no failed runs")
busy = [r for r in rows if (num(r["other_cpu_cores"]) or 0) > 0.2]
if busy:
    w(f"- {len(busy)} run(s) shared the machine with other work (other load > 0.2 cores); "
      "their figures are less reliable")
w("")
w("## All runs")
w("")
w("| target | conns | round | req/s | p50 ms | p99 ms | requests | proxy CPU us/req | shop CPU us/req | other load | non-2xx | socket errors |")
w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    w(f"| {r['target']} | {r['conns']} | {r['round']} | {f(num(r['rps']))} | {f(num(r['p50_ms']), 2)} | "
      f"{f(num(r['p99_ms']), 2)} | {r['requests']} | {f(num(r['proxy_cpu_us_per_req']), 1)} | "
      f"{f(num(r['shop_cpu_us_per_req']), 1)} | {f(num(r['other_cpu_cores']), 2)} | "
      f"{r['non2xx']} | {r['socket_errors']} |")
print("\n".join(out))
EOF

bench_show_report "wrk outputs and logs"
