#!/usr/bin/env bash
# Sentinel failover benchmark: how long orders are refused when the Redis primary dies.
# Per round: a primary, two replicas and three sentinels (`redis-server --sentinel`),
# INSTANCES Floodgate instances x 1 worker that know only the sentinels, CLIENTS client
# threads storing callbacks (store_and_forward; the ack only after WAIT 1), and a
# SIGKILL of the primary after WARM seconds. Reports per round and as medians: the
# sentinels' detection and promotion time, the gateway's switch (announcement -> every
# worker connection up on the new master; target <= 2 s), the failover gap (first
# refused -> first acknowledged request), and acks lost / delivered twice (target 0).
#
#   bench/sentinel_failover.sh                defaults: ROUNDS=3 INSTANCES=3 CLIENTS=8
#
# Environment:
#   ROUNDS      failovers, each on a fresh deployment                default 3
#   INSTANCES   Floodgate instances (1 worker each)                  default 3
#   CLIENTS     client threads (sequential requests, unique keys)    default 8
#   WARM        seconds of load before the SIGKILL                   default 3
#   AFTER       seconds of load after the first ack on the new master default 3
#   DOWN_AFTER  sentinel down-after-milliseconds                     default 1000
#   BUILD       1 = run `ninja -C build` first                       default 1
#
# Prints a markdown report, also written to bench/results/sentinel-<timestamp>.md.
# Everything started is stopped (by PID) on exit.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
BENCH_NAME=sentinel
# shellcheck source=bench/lib.sh
source "$repo_root/bench/lib.sh"

ROUNDS="${ROUNDS:-3}"
export INSTANCES="${INSTANCES:-3}" CLIENTS="${CLIENTS:-8}" WARM="${WARM:-3}" AFTER="${AFTER:-3}"
export DOWN_AFTER="${DOWN_AFTER:-1000}"
require_whole_numbers ROUNDS INSTANCES CLIENTS WARM AFTER DOWN_AFTER

bench_prerequisites python3 redis-server redis-cli
bench_binaries
bench_workspace

read -r shop_port <<<"$(free_ports 1)"
bench_start shop "$shop_bin" --listen "127.0.0.1:$shop_port" --threads 1
wait_http shop "$started_pid" "http://127.0.0.1:$shop_port/api/products/1"

: >"$work/runs.tsv"
for r in $(seq "$ROUNDS"); do
  log "round $r of $ROUNDS"
  python3 "$repo_root/bench/sentinel_failover.py" "$floodgate_bin" "$shop_port" "$work" "$r" | tee -a "$work/runs.tsv" >&2
done

bench_versions
{
  echo "# Sentinel failover: SIGKILL of the primary, $INSTANCES instances x 1 worker, $CLIENTS clients"
  echo
  echo "$R_FG_VERSION, git $R_GIT, $R_BUILDTYPE; $R_MACHINE; $R_DATE; load $R_LOAD_START -> $R_LOAD_END"
  echo "down-after-milliseconds $DOWN_AFTER, wait_replicas = 1, wait_timeout 300ms, timeout 1s"
  echo
  echo "| round | sentinels: kill -> new master | gateway: announcement -> every worker on it | gap: first refused -> first ack | refused attempts | acks/s before | acks/s after | lost | delivered twice |"
  echo "|---|---|---|---|---|---|---|---|---|"
  awk -F'\t' '{ printf "| %d | %.2f s | %d ms | %.2f s | %d | %d | %d | %d | %d |\n", NR, $1, $2, $3, $4, $5, $6, $7, $8 }' "$work/runs.tsv"
  python3 - "$work/runs.tsv" <<'PY'
import statistics, sys
rows = [list(map(float, l.split("\t"))) for l in open(sys.argv[1]) if l.strip()]
med = lambda i: statistics.median(r[i] for r in rows)
worst_switch = max(r[1] for r in rows)
lost = sum(r[6] for r in rows)
print(f"| median | {med(0):.2f} s | {med(1):.0f} ms | {med(2):.2f} s | {med(3):.0f} | {med(4):.0f} | {med(5):.0f} | "
      f"{med(6):.0f} | {med(7):.0f} |")
print(f"| total | | | | {sum(r[3] for r in rows):.0f} | | | {lost:.0f} | {sum(r[7] for r in rows):.0f} |")
print()
print(f"every worker on the new master within 2 s of the announcement: "
      f"{'met' if worst_switch <= 2000 else 'missed'} (worst {worst_switch:.0f} ms); "
      f"acks lost: {'met' if lost == 0 else 'missed'} ({lost:.0f})")
PY
} | tee "$report"
