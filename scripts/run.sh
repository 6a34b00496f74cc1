#!/usr/bin/env bash
# The one run command: installs what is missing, builds a release build in
# build/, then starts a private redis-server, the demo shop and floodgate, and
# stays in the foreground until Ctrl-C (or SIGTERM), which stops all three.
#
#   scripts/run.sh                    everything, with conf/floodgate.toml
#   scripts/run.sh -c FILE            another config (env FG_CONFIG)
#   scripts/run.sh --no-redis         no redis-server (env FG_NO_REDIS=1)
#   scripts/run.sh --no-shop          no demo shop (env FG_NO_SHOP=1), e.g. when
#                                     the config points at a real shop
#   scripts/run.sh --redis-port P     redis port, default 6380 (env FG_REDIS_PORT)
#   scripts/run.sh --shop-listen A    demo shop address, default 127.0.0.1:8081
#                                     (env FG_SHOP_LISTEN)
#   scripts/run.sh --quiet            do not echo floodgate's log lines here
#
# Everything it writes stays under .run/ (git-ignored): logs in .run/logs/
# (the previous run's as *.log.1), redis data in .run/redis/. The system redis
# service, if any, is not touched. --redis-port and --shop-listen are applied
# to a copy of the config in .run/floodgate.toml, which floodgate then runs.
# shellcheck disable=SC2317  # functions below run from traps
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

config="${FG_CONFIG:-conf/floodgate.toml}"
no_redis="${FG_NO_REDIS:-0}"
no_shop="${FG_NO_SHOP:-0}"
redis_port="${FG_REDIS_PORT:-6380}"
shop_listen="${FG_SHOP_LISTEN:-127.0.0.1:8081}"
redis_port_given="${FG_REDIS_PORT:+1}"
shop_listen_given="${FG_SHOP_LISTEN:+1}"
follow=1
cores="$(nproc 2>/dev/null || echo 2)"
jobs="${FG_JOBS:-$(( cores > 4 ? 4 : cores ))}"

usage() {
  sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
}

need_arg() { [[ $2 -ge 2 ]] || { echo "run.sh: $1 needs a value" >&2; exit 2; }; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    -c|--config) need_arg "$1" $#; config="$2"; shift ;;
    --config=*) config="${1#--config=}" ;;
    --no-redis) no_redis=1 ;;
    --no-shop) no_shop=1 ;;
    --redis-port) need_arg "$1" $#; redis_port="$2"; redis_port_given=1; shift ;;
    --shop-listen) need_arg "$1" $#; shop_listen="$2"; shop_listen_given=1; shift ;;
    --quiet) follow=0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run.sh: unknown option: $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

if ! [[ "$redis_port" =~ ^[0-9]+$ ]] || (( redis_port < 1 || redis_port > 65535 )); then
  echo "run.sh: redis port must be 1..65535, got '$redis_port'" >&2
  exit 2
fi
[[ "$no_redis" == 1 || "$no_redis" == true ]] && no_redis=1 || no_redis=0
[[ "$no_shop" == 1 || "$no_shop" == true ]] && no_shop=1 || no_shop=0

run_dir="$repo_root/.run"
log_dir="$run_dir/logs"
redis_dir="$run_dir/redis"
floodgate_bin="build/src/floodgate"
shop_bin="build/tools/demo_shop/floodgate-demo-shop"

# ---------------------------------------------------------------- build

scripts/setup.sh

if [[ ! -f build/meson-private/coredata.dat ]]; then
  echo "run.sh: configuring a release build in build/"
  meson setup build -Dbuildtype=release
fi
mkdir -p "$log_dir" "$redis_dir"
echo "run.sh: building (ninja -C build -j$jobs; output in .run/logs/build.log)"
if ! ninja -C build -j "$jobs" >"$log_dir/build.log" 2>&1; then
  tail -n 60 "$log_dir/build.log" >&2
  echo "run.sh: the build failed (end of .run/logs/build.log above)" >&2
  exit 1
fi

if [[ ! -f "$config" ]]; then
  echo "run.sh: config file '$config' not found (set -c FILE or FG_CONFIG)" >&2
  exit 1
fi

# --redis-port / --shop-listen: floodgate must talk to the redis and the shop that
# this script starts, so the addresses are written into a copy of the config
# (.run/floodgate.toml): redis.url's port when it points at this machine, and
# every upstream server that names the demo shop's default address.
user_config="$config"
if [[ -n "$redis_port_given" || -n "$shop_listen_given" ]]; then
  effective="$run_dir/floodgate.toml"
  mkdir -p "$run_dir"
  if ! changes="$(python3 - "$config" "$effective" "${redis_port_given:+$redis_port}" \
                    "${shop_listen_given:+$shop_listen}" <<'EOF'
import re, sys
src, dst, redis_port, shop = sys.argv[1:5]
text = open(src, encoding="utf-8").read()
said = []
if redis_port:
    pat = re.compile(r'^(\s*url\s*=\s*"(?:redis://(?:[^@"/]*@)?(?:127\.0\.0\.1|localhost|\[::1\])))(?::\d+)?', re.M)
    text, n = pat.subn(lambda m: f"{m.group(1)}:{redis_port}", text)
    said.append(f"redis.url port -> {redis_port}" if n else
                "note: redis.url does not point at this machine; --redis-port changed nothing in it")
if shop:
    n = text.count('"127.0.0.1:8081"')
    text = text.replace('"127.0.0.1:8081"', f'"{shop}"')
    said.append(f"{n} upstream server(s) 127.0.0.1:8081 -> {shop}" if n else
                "note: no upstream server names 127.0.0.1:8081; --shop-listen changed nothing in them")
open(dst, "w", encoding="utf-8").write(text)
print("; ".join(said))
EOF
)"; then
    echo "run.sh: could not write $effective from $config" >&2
    exit 1
  fi
  echo "run.sh: running a copy of $config with your addresses: $changes"
  echo "run.sh: edit $config and restart run.sh to change the config (reloads read $effective)"
  config="$effective"
fi

if ! check_out="$("$floodgate_bin" --check -c "$config" 2>&1)"; then
  echo "$check_out" >&2
  echo "run.sh: '$config' is not valid (floodgate --check); nothing was started" >&2
  exit 1
fi

# ------------------------------------------------------- config facts
# What run.sh needs from the config: the first server.listen address (to wait
# for it and to print examples), every listen address (to check they are free)
# and log.file. Read with Python's TOML parser; defaults if that fails.

read_config() {
  python3 - "$config" <<'EOF'
import sys
try:
    import tomllib
    with open(sys.argv[1], "rb") as fh:
        doc = tomllib.load(fh)
except Exception:
    doc = {}
server = doc.get("server", {}) if isinstance(doc.get("server"), dict) else {}
listen = server.get("listen", "0.0.0.0:8080")
if isinstance(listen, str):
    listen = [listen]
log = doc.get("log", {}) if isinstance(doc.get("log"), dict) else {}
admin = doc.get("admin", {}) if isinstance(doc.get("admin"), dict) else {}
redis = doc.get("redis", {}) if isinstance(doc.get("redis"), dict) else {}
print("listen", " ".join(str(a) for a in listen))
print("log_file", log.get("file", ""))
print("admin", admin.get("listen", "127.0.0.1:9090"))
print("redis_url", redis.get("url", ""))
EOF
}

listen_addrs=()
log_file=""
admin_listen="127.0.0.1:9090"
redis_url=""
while read -r key value; do
  case "$key" in
    listen) read -r -a listen_addrs <<<"$value" ;;
    log_file) log_file="$value" ;;
    admin) admin_listen="$value" ;;
    redis_url) redis_url="$value" ;;
  esac
done < <(read_config)
[[ ${#listen_addrs[@]} -gt 0 ]] || listen_addrs=("0.0.0.0:8080")

# split_addr "HOST:PORT" | "[V6]:PORT" -> "HOST PORT"; wildcard hosts become
# the loopback address of the same family, which is where we probe.
split_addr() {
  local a="$1" host port
  if [[ "$a" == \[*\]:* ]]; then
    host="${a%%]:*}"; host="${host#[}"; port="${a##*]:}"
  else
    host="${a%:*}"; port="${a##*:}"
  fi
  case "$host" in
    0.0.0.0|"") host=127.0.0.1 ;;
    ::) host=::1 ;;
  esac
  printf '%s %s\n' "$host" "$port"
}

# port_in_use HOST PORT: true if something is listening there (or, for a
# wildcard listen address, on that port at all).
port_in_use() {
  python3 - "$1" "$2" <<'EOF'
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
try:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
except OSError:
    sys.exit(0)   # taken (or not bindable at all)
finally:
    s.close()
sys.exit(1)
EOF
}

# port_answers HOST PORT: a TCP connect succeeds.
port_answers() {
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

taken=()
check_free() {
  local what="$1" addr="$2" host port bind_host
  read -r host port < <(split_addr "$addr")
  bind_host="$host"
  case "$addr" in 0.0.0.0:*) bind_host=0.0.0.0 ;; "[::]:"*) bind_host=:: ;; esac
  if port_in_use "$bind_host" "$port"; then
    taken+=("  $addr ($what) is already in use")
  fi
}

for a in "${listen_addrs[@]}"; do check_free "floodgate, server.listen in $user_config" "$a"; done
check_free "floodgate's admin listener, admin.listen in $user_config" "$admin_listen"
[[ $no_shop == 1 ]] || check_free "demo shop; change with --shop-listen" "$shop_listen"
[[ $no_redis == 1 ]] || check_free "redis-server; change with --redis-port" "127.0.0.1:$redis_port"
if [[ ${#taken[@]} -gt 0 ]]; then
  echo "run.sh: cannot start, these ports are taken:" >&2
  printf '%s\n' "${taken[@]}" >&2
  echo "run.sh: is an earlier scripts/run.sh still running? 'ss -ltnp' shows who listens." >&2
  exit 1
fi

if [[ $no_redis == 1 && -n "$redis_url" ]]; then
  echo "run.sh: warning: --no-redis, but $user_config has a [redis] table ($redis_url)." >&2
  echo "run.sh: unless a redis-server answers there, routes that need Redis (idempotency keys," >&2
  echo "run.sh: queues, callbacks) answer 503 redis_unavailable (redis.on_failure = \"closed\")." >&2
fi

# ------------------------------------------------------------- start

redis_log="$log_dir/redis.log"
shop_log="$log_dir/demo-shop.log"
floodgate_log="$log_dir/floodgate.log"
# Each run starts fresh logs; the previous run's stay beside them as *.log.1.
for f in "$redis_log" "$shop_log" "$floodgate_log"; do
  if [[ -s "$f" ]]; then mv -f "$f" "$f.1"; fi
done

# Children run in their own session (setsid), so a Ctrl-C in this terminal
# reaches only this script, which then stops them in order. Without that the
# demo shop and redis would get the SIGINT too and quit while floodgate is
# still draining requests towards them.
names=()   # parallel arrays: what we started and is still running, in start order
pids=()
stopping=0
force=0
floodgate_pid=""
tail_pid=""

# stop_one NAME PID: SIGTERM, then up to 30 s (floodgate's drain) before
# SIGKILL; a further Ctrl-C meanwhile escalates at once.
stop_one() {
  local name="$1" pid="$2" i
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  echo "run.sh: stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for (( i = 0; i < 300 && force == 0; i++ )); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "run.sh: $name (pid $pid) still running, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

# stop_all: floodgate first (it drains in-flight requests), then the shop it
# forwards to, then redis.
stop_all() {
  local i
  for (( i = ${#pids[@]} - 1; i >= 0; i-- )); do
    stop_one "${names[$i]}" "${pids[$i]}"
  done
  pids=(); names=()
}

on_signal() {
  if [[ -z "$floodgate_pid" ]]; then
    echo
    echo "run.sh: interrupted during start-up"
    exit 130   # the EXIT trap stops what was already started
  fi
  echo
  if [[ $stopping == 1 ]]; then
    # floodgate treats a second SIGTERM/SIGINT as "exit now".
    echo "run.sh: second signal, forcing floodgate to exit"
  else
    stopping=1
    echo "run.sh: stopping; floodgate drains in-flight requests first (Ctrl-C again to force)"
  fi
  kill -TERM "$floodgate_pid" 2>/dev/null || true
  return 0
}

cleanup() {
  trap 'force=1' INT TERM
  trap - EXIT
  if [[ -n "$tail_pid" ]]; then
    sleep 0.2   # let the last log lines (drain, stop) reach the terminal
    kill "$tail_pid" 2>/dev/null || true
    wait "$tail_pid" 2>/dev/null || true
  fi
  stop_all
}
trap on_signal INT TERM
trap cleanup EXIT

# wait_ready NAME PID HOST PORT LOG: up to 10 s for the port to answer; if
# the process dies first, show the end of its log.
wait_ready() {
  local name="$1" pid="$2" host="$3" port="$4" log="$5" i
  for (( i = 0; i < 100; i++ )); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "run.sh: $name exited during start-up; last lines of $log:" >&2
      tail -n 20 "$log" >&2 || true
      exit 1
    fi
    port_answers "$host" "$port" && return 0
    sleep 0.1
  done
  echo "run.sh: $name (pid $pid) does not answer on $host:$port after 10 s; see $log" >&2
  exit 1
}

if [[ $no_redis == 0 ]]; then
  setsid redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$redis_dir" \
    --daemonize no --save "" --appendonly yes --logfile "" >>"$redis_log" 2>&1 </dev/null &
  redis_pid=$!
  names+=("redis-server"); pids+=("$redis_pid")
  wait_ready "redis-server" "$redis_pid" 127.0.0.1 "$redis_port" "$redis_log"
fi

if [[ $no_shop == 0 ]]; then
  setsid "$shop_bin" --listen "$shop_listen" >>"$shop_log" 2>&1 </dev/null &
  shop_pid=$!
  names+=("demo shop"); pids+=("$shop_pid")
  read -r shop_host shop_port < <(split_addr "$shop_listen")
  wait_ready "demo shop" "$shop_pid" "$shop_host" "$shop_port" "$shop_log"
fi

setsid "$floodgate_bin" -c "$config" >>"$floodgate_log" 2>&1 </dev/null &
fg_started=$!
names+=("floodgate"); pids+=("$fg_started")
read -r fg_host fg_port < <(split_addr "${listen_addrs[0]}")
wait_ready "floodgate" "$fg_started" "$fg_host" "$fg_port" "$floodgate_log"
floodgate_pid=$fg_started

base="http://$fg_host:$fg_port"
[[ "$fg_host" == *:* ]] && base="http://[$fg_host]:$fg_port"
read -r admin_host admin_port < <(split_addr "$admin_listen")

cat <<EOF

Floodgate is up (pid $floodgate_pid, config $config).
  floodgate     ${listen_addrs[*]}
  admin         $admin_listen   (/metrics /status /healthz /readyz /reload)
EOF
[[ $no_shop == 1 ]] || echo "  demo shop     $shop_listen (pid $shop_pid)"
if [[ $no_redis == 0 ]]; then
  echo "  redis-server  127.0.0.1:$redis_port (pid $redis_pid, data in .run/redis/: idempotency keys and tickets)"
  if [[ -n "$redis_url" && "$redis_url" != *":$redis_port"* ]]; then
    echo "  note: $config has redis.url = $redis_url, which is not this redis (port $redis_port)"
  fi
fi
cat <<EOF

Open $base/ in a browser: the demo shop's order form. To watch Floodgate's
waiting page, set rate = 0.2 on the "checkout" route in $config, reload
(kill -HUP $floodgate_pid), and press "Buy now" in three or four tabs.

Try this (in another terminal):
  curl -i $base/api/products
  curl -i -X POST $base/api/orders -H 'Idempotency-Key: k1' -d '{"sku":"card-10"}'
  curl -i -X POST $base/api/orders -H 'Idempotency-Key: k1' -d '{"sku":"card-10"}'   # replayed
  curl -i -X POST $base/notify/pay -d 'out_trade_no=T1&amount=10'   # acked, delivered once
  curl -i $base/api/orders -H 'Content-Length: 5' -H 'Transfer-Encoding: chunked' -d hello   # 400, refused
EOF
if port_answers "$admin_host" "$admin_port"; then
  echo "  curl -s http://$admin_listen/metrics"
else
  echo "  (admin listener $admin_listen not answering)"
fi
echo "  More in the README's five-minute tour."
cat <<EOF

Logs:
  floodgate     ${log_file:-.run/logs/floodgate.log}
EOF
[[ $no_shop == 1 ]] || echo "  demo shop     .run/logs/demo-shop.log"
[[ $no_redis == 1 ]] || echo "  redis-server  .run/logs/redis.log"
echo
echo "Ctrl-C stops everything this script started."
echo

if [[ $follow == 1 ]]; then
  # Only new lines: the startup events are in the file for whoever wants them.
  setsid tail -n 0 -F "${log_file:-$floodgate_log}" 2>/dev/null </dev/null &
  tail_pid=$!
fi

# Stay in the foreground until a signal arrives or floodgate exits. When the
# demo shop or redis-server stops (someone stopped it to see what Floodgate
# does then), floodgate keeps running: that is a scene of the tour, not a
# crash. When floodgate itself ends, the rest is stopped.
status=0
while :; do
  exited=""
  if wait -n -p exited "${pids[@]}"; then status=0; else status=$?; fi
  exited="${exited:-}"
  if [[ -z "$exited" ]]; then
    # Interrupted by a signal: on_signal has already told floodgate to drain.
    continue
  fi
  for i in "${!pids[@]}"; do
    if [[ "${pids[$i]}" == "$exited" ]]; then
      if [[ "$exited" != "$floodgate_pid" && $stopping == 0 ]]; then
        echo "run.sh: ${names[$i]} (pid $exited) stopped (status $status); floodgate keeps running without it." >&2
        echo "run.sh: Ctrl-C stops the rest." >&2
      fi
      unset 'pids[i]' 'names[i]'
    fi
  done
  pids=("${pids[@]}"); names=("${names[@]}")
  if [[ "$exited" == "$floodgate_pid" || ${#pids[@]} -eq 0 ]]; then
    break
  fi
done

# cleanup (EXIT trap) stops whatever is still running, in reverse start order.
if [[ "$exited" == "$floodgate_pid" && ( $stopping == 1 || $status == 0 ) ]]; then
  # Our Ctrl-C, or a graceful stop by someone else (SIGTERM, SIGINT): a drain
  # that ended well is not a failure.
  [[ $stopping == 1 ]] || echo "run.sh: floodgate stopped (status 0); stopping the rest"
  exit "$status"
fi
if [[ "$exited" == "$floodgate_pid" ]]; then
  echo "run.sh: floodgate (pid $exited) exited with status $status; stopping the rest" >&2
  echo "run.sh: last lines of ${log_file:-.run/logs/floodgate.log}:" >&2
  tail -n 20 "${log_file:-$floodgate_log}" >&2 || true
fi
exit 1
