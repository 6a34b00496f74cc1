# shellcheck shell=bash
# shellcheck disable=SC2317,SC2034,SC2154  # cleanup runs from a trap; variables are shared with the sourcing script
# Shared helpers for the benchmark scripts in bench/ (sourced, not run).
#
# The sourcing script sets BENCH_NAME (used in messages and result file names)
# and `repo_root`, then calls, in this order:
#   bench_prerequisites TOOL...   setup.sh --bench, checks the tools
#   bench_binaries                builds (BUILD=1), sets floodgate_bin, shop_bin, buildtype
#   bench_workspace               sets stamp, report, logs_dir, work; installs the cleanup trap
# and then bench_start NAME CMD... to start every process it needs, so that
# each one is stopped (by its PID) when the script ends, also on Ctrl-C or error.

log() { printf '%s: %s\n' "${BENCH_NAME:-bench}" "$*" >&2; }
die() { log "$*"; exit 1; }
# require_whole_numbers VAR...: every named variable holds a whole number (digits only).
require_whole_numbers() {
  local v
  for v in "$@"; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a whole number, got '${!v}'"
  done
}

bench_prerequisites() {
  if [[ -x scripts/setup.sh ]]; then
    scripts/setup.sh --bench >&2 || die "scripts/setup.sh --bench failed (nginx-light and wrk are needed)"
  fi
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' is not installed (scripts/setup.sh --bench installs nginx and wrk)"
  done
}

bench_binaries() {
  floodgate_bin="${FG_BIN:-$repo_root/build/src/floodgate}"
  shop_bin="${FG_SHOP_BIN:-$repo_root/build/tools/demo_shop/floodgate-demo-shop}"
  if [[ "${BUILD:-1}" == 1 ]]; then
    if [[ ! -f build/meson-private/coredata.dat ]]; then
      log "configuring a release build in build/"
      meson setup build -Dbuildtype=release >&2
    fi
    ninja -C build >&2 || die "the build failed"
  fi
  [[ -x "$floodgate_bin" && -x "$shop_bin" ]] || die "build/src/floodgate and build/tools/demo_shop/floodgate-demo-shop are needed (ninja -C build)"
  # Others may rebuild while the benchmark runs: the report names the binary that was started.
  fg_built="$(date -r "$floodgate_bin" '+%Y-%m-%d %H:%M:%S')"
  buildtype="$(meson introspect build --buildoptions 2>/dev/null |
    python3 -c 'import json,sys; print(next((o["value"] for o in json.load(sys.stdin) if o["name"]=="buildtype"), "?"))' 2>/dev/null || echo "?")"
  [[ "$buildtype" == release ]] || log "warning: build/ is a '$buildtype' build, not release; the figures will not be representative"
  # Other work on the machine (a compiler, a test suite) skews every figure.
  load_start="$(cut -d' ' -f1-3 /proc/loadavg)"
  if awk -v l="${load_start%% *}" 'BEGIN { exit !(l > 0.5) }'; then
    log "warning: load average is $load_start before starting; other processes will skew the results"
  fi
}

# Processes started through bench_start, stopped by bench_cleanup.
bench_pids=()
# Files of $work that bench_cleanup copies to $logs_dir (globs allowed).
bench_keep=("*.log" "*.toml" "*.conf" "runs.tsv")

bench_cleanup() {
  local rc=$? pid f
  trap - EXIT INT TERM
  for pid in "${bench_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${bench_pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [[ -n "${work:-}" && -d "$work" ]]; then
    for f in "${bench_keep[@]}"; do
      # shellcheck disable=SC2086  # the patterns are globs on purpose
      cp -f "$work"/$f "$logs_dir"/ 2>/dev/null || true
    done
    rm -rf "$work"
  fi
  exit "$rc"
}

bench_workspace() {
  stamp="$(date +%Y%m%d-%H%M%S)"
  results_dir="$repo_root/bench/results"
  report="$results_dir/$BENCH_NAME-$stamp.md"
  logs_dir="$results_dir/$BENCH_NAME-$stamp.logs"
  mkdir -p "$results_dir" "$logs_dir"
  work="$(mktemp -d "${TMPDIR:-/tmp}/floodgate-bench.XXXXXX")"
  chmod 755 "$work"   # nginx workers may run as another user
  trap bench_cleanup EXIT
  trap 'log "failed at line $LINENO: $BASH_COMMAND"' ERR
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# bench_start LOGNAME CMD...: runs CMD in the background with its output in
# $work/LOGNAME.log, records its PID for the cleanup and sets `started_pid`.
bench_start() {
  local name="$1"; shift
  "$@" >>"$work/$name.log" 2>&1 &
  started_pid=$!
  bench_pids+=("$started_pid")
}

# Free loopback ports below the ephemeral range (so no client connection of
# the benchmark can take them), tried at random and checked by binding. A
# small race is possible but harmless: a taken port makes the start fail.
free_ports() {
  python3 - "$1" <<'EOF'
import random, socket, sys
lo = 20000
try:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
        hi = int(fh.read().split()[0]) - 1
except (OSError, ValueError, IndexError):
    hi = 32767
if hi - lo < 100:
    lo, hi = 1025, max(hi, 2048)
ports = []
while len(ports) < int(sys.argv[1]):
    p = random.randint(lo, hi)
    if p in ports:
        continue
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
        ports.append(p)
    except OSError:
        pass
    finally:
        s.close()
print(" ".join(map(str, ports)))
EOF
}

# wait_http NAME PID URL [CURL ARGS...]: until URL answers 200, or fail if PID died.
wait_http() {
  local name="$1" pid="$2" url="$3" code=""; shift 3
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || die "$name exited at start; see $logs_dir/$name.log"
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@" "$url" || true)"
    [[ "$code" == 200 ]] && return 0
    sleep 0.1
  done
  die "$name did not answer 200 on $url (last status '$code'); see $logs_dir/$name.log"
}

# fg_conf_head LISTEN WORKERS [KEEPALIVE]: prints the first tables of a
# generated Floodgate config: [server] (LISTEN is the TOML value of `listen`,
# a quoted address or an inline table; WORKERS workers, 20000 connections,
# idle timeout 120 s, drain 2 s) and [upstreams.shop] (the demo shop on
# $shop_port, KEEPALIVE idle connections kept, default 64, at most 1024),
# followed by a blank line. Sets nothing.
fg_conf_head() {
  cat <<EOF
[server]
listen = $1
workers = $2
max_connections = 20000
idle_timeout = "120s"
drain_timeout = "2s"

[upstreams.shop]
servers = ["127.0.0.1:$shop_port"]
keepalive = ${3:-64}
max_connections = 1024

EOF
}

# fg_conf_finish NAME [LOG_FILE [ACCESS]]: appends the [log] table to
# $work/NAME.toml (file LOG_FILE, default $work/NAME.log; `access = ACCESS`,
# default false) and checks the config with `floodgate --check`; dies if it
# is rejected. Sets nothing.
fg_conf_finish() {
  cat >>"$work/$1.toml" <<EOF
[log]
file = "${2:-$work/$1.log}"
access = ${3:-false}
EOF
  "$floodgate_bin" --check -c "$work/$1.toml" >&2 || die "the generated config $1.toml is rejected"
}

# start_redis PORT: a private redis-server on 127.0.0.1:PORT (no persistence,
# its files in $work/redis, output in $work/redis.log), started through
# bench_start, and waits until it answers PING. Sets `redis_pid` and
# `rcli_port` (PORT) and defines rcli ARGS... (redis-cli on that server).
start_redis() {
  local port="$1"
  mkdir -p "$work/redis"
  bench_start redis redis-server --bind 127.0.0.1 --port "$port" --dir "$work/redis" \
    --save "" --appendonly no --daemonize no --logfile ""
  redis_pid=$started_pid
  rcli_port="$port"
  rcli() { redis-cli -h 127.0.0.1 -p "$rcli_port" "$@"; }
  for _ in $(seq 100); do
    kill -0 "$redis_pid" 2>/dev/null || die "redis-server exited at start; see $logs_dir/redis.log"
    [[ "$(rcli ping 2>/dev/null || true)" == PONG ]] && break
    sleep 0.1
  done
  [[ "$(rcli ping 2>/dev/null || true)" == PONG ]] || die "redis-server does not answer PING on port $port"
}

# nginx_conf_head WORKER_PROCESSES KEEPALIVE [ACCESS_LOG_DIRECTIVE]: prints
# the start of a generated nginx.conf, up to and within an open `http {`
# block: `user root` when the script runs as root; pid file, error log (warn)
# and temp paths in $work; keep-alive requests raised on both sides (nginx
# otherwise closes a client or upstream connection after 1000 requests); the
# `upstream shop` block (the demo shop on $shop_port, KEEPALIVE idle
# connections kept). The access log line defaults to `access_log off;`. The
# caller prints the rest of the http block and closes it. Sets nothing.
nginx_conf_head() {
  local user=""
  [[ "$(id -u)" == 0 ]] && user="user root;"
  cat <<EOF
$user
worker_processes $1;
pid $work/nginx.pid;
error_log $work/nginx.log warn;
events {
    worker_connections 20000;
}
http {
    ${3:-access_log off;}
    client_body_temp_path $work/nginx-body;
    proxy_temp_path $work/nginx-proxy;
    fastcgi_temp_path $work/nginx-fastcgi;
    uwsgi_temp_path $work/nginx-uwsgi;
    scgi_temp_path $work/nginx-scgi;
    keepalive_timeout 120s;
    keepalive_requests 1000000;
    upstream shop {
        server 127.0.0.1:$shop_port;
        keepalive $2;
        keepalive_requests 1000000;
    }
EOF
}

# start_nginx LOGNAME URL [CURL ARGS...]: checks $work/nginx.conf with
# `nginx -t`, starts nginx on it in the foreground through bench_start (its
# output in $work/LOGNAME.log; prefixed by the command in the array
# `nginx_prefix`, e.g. a taskset, when the script sets one), waits until URL
# answers 200 and until all the worker processes the config asks for have
# been forked. Sets `nginx_pid` (the master) and the array `ngx_workers`.
nginx_prefix=()
start_nginx() {
  local name="$1" url="$2" want; shift 2
  nginx -t -q -p "$work" -e "$work/nginx.log" -c "$work/nginx.conf" >&2 || die "nginx rejects the generated config"
  bench_start "$name" "${nginx_prefix[@]}" nginx -p "$work" -e "$work/nginx.log" -c "$work/nginx.conf" -g 'daemon off;'
  nginx_pid=$started_pid
  wait_http nginx "$nginx_pid" "$url" "$@"
  want="$(awk '$1 == "worker_processes" { sub(/;$/, "", $2); print $2 + 0; exit }' "$work/nginx.conf")"
  ngx_workers=()
  for _ in $(seq 50); do
    read -r -a ngx_workers <<<"$(pgrep -P "$nginx_pid" 2>/dev/null | tr '\n' ' ')"
    (( ${#ngx_workers[@]} >= ${want:-1} )) && break
    sleep 0.1
  done
  (( ${#ngx_workers[@]} > 0 )) || die "cannot find nginx's worker processes (pgrep -P $nginx_pid)"
}

# parse_wrk FILE -> "rps p50_ms p99_ms requests non2xx socket_errors seconds"
parse_wrk() {
  awk '
    function ms(v,   n, u) {
      n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
      if (u == "us") return n / 1000
      if (u == "ms") return n
      if (u == "s")  return n * 1000
      if (u == "m")  return n * 60000
      if (u == "h")  return n * 3600000
      return -1
    }
    /^ +50%/ { p50 = ms($2) }
    /^ +99%/ { p99 = ms($2) }
    /requests in/ { reqs = $1; secs = $4; sub(/,$/, "", secs); secs = ms(secs) / 1000 }
    /^Requests\/sec:/ { rps = $2 }
    /Non-2xx or 3xx responses:/ { non2xx = $NF }
    /Socket errors:/ {
      line = $0; sub(/.*Socket errors: */, "", line)
      n = split(line, parts, /, */); se = 0
      for (i = 1; i <= n; i++) { split(parts[i], kv, / +/); se += kv[2] }
    }
    END {
      printf "%s %s %s %s %d %d %s\n", (rps == "" ? "NA" : rps), (p50 == "" ? "NA" : p50),
        (p99 == "" ? "NA" : p99), (reqs == "" ? 0 : reqs), non2xx, se, (secs == "" ? "NA" : secs)
    }' "$1"
}

# CPU time (user + system, in clock ticks) of the given processes, and of the
# whole machine; the difference over a run, less wrk's own and the benchmark's
# processes', is what other processes took from the cores during it.
clk_tck="$(getconf CLK_TCK 2>/dev/null || echo 100)"
proc_ticks() {
  local s=0 p v
  for p in "$@"; do
    v="$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 }')"
    s=$(( s + ${v:-0} ))
  done
  echo "$s"
}
machine_busy_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }

# other_load BUSY_TICKS OWN_TICKS WRK_USER_S WRK_SYS_S WALL_S -> cores used by
# anything but wrk and the benchmark's own processes during a run.
other_load() {
  awk -v bt="$1" -v ot="$2" -v wu="$3" -v ws="$4" -v wall="$5" -v hz="$clk_tck" '
    BEGIN { o = (bt - ot) / hz - wu - ws; if (o < 0) o = 0; printf "%.2f\n", (wall > 0 ? o / wall : 0) }'
}

bench_versions() {
  R_FG_VERSION="$("$floodgate_bin" --version 2>&1 | head -n1 || true) (binary built $fg_built)"
  R_WRK_VERSION="$(wrk -v 2>&1 | head -n1 | awk '{print $2}' || true)"
  R_GIT="$(git -C "$repo_root" rev-parse --short HEAD 2>/dev/null || echo '?')"
  git -C "$repo_root" diff --quiet HEAD 2>/dev/null || R_GIT="$R_GIT (with uncommitted changes)"
  local cpu
  cpu="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)"
  R_MACHINE="$(nproc) cores${cpu:+ ($cpu)}, $(uname -sr)"
  R_DATE="$(date '+%Y-%m-%d %H:%M:%S %Z')"
  R_LOAD_START="$load_start"
  R_LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg)"
  R_BUILDTYPE="$buildtype"
  export R_FG_VERSION R_WRK_VERSION R_GIT R_MACHINE R_DATE R_LOAD_START R_LOAD_END R_BUILDTYPE
}

# bench_show_report WHAT: prints the finished report ($report) on stdout
# between blank lines and says where it was written and that WHAT (e.g. "wrk
# outputs and logs") is in $logs_dir. Sets nothing.
bench_show_report() {
  echo
  cat "$report"
  echo
  log "report written to ${report#"$repo_root"/}; $1 in ${logs_dir#"$repo_root"/}/"
}
