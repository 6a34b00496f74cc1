#!/usr/bin/env bash
# A/B comparison of two revisions of Floodgate with one of the benchmarks, in one
# run on one machine, interleaved, so that a change can show it did not regress.
#
#   bench/compare.sh REV_A REV_B [BENCH]      BENCH: proxy (default), idempotency,
#                                             ratelimit or queue
#   bench/compare.sh main HEAD idempotency
#   bench/compare.sh main WORKTREE proxy      WORKTREE = the working tree as it is
#
# Environment:
#   ROUNDS   A/B pairs, alternating the order A B / B A         default 3
#   BENCH_ENV  extra settings for every benchmark run, e.g. "DUR=5 CONNS=50"
#
# Builds each revision (release) in its own directory under bench/.ab/ (a
# detached git worktree, reused while the revision is the same), then runs the
# chosen benchmark script of the CURRENT tree once per revision and round with
# FG_BIN pointing at that revision's floodgate (the demo shop and the other
# targets, nginx included, are the same for both), and prints, per load point,
# the median of each revision's figures and the ratio B/A. The table is also
# written to bench/results/compare-<bench>-<timestamp>.md; every run's own report
# stays in bench/results/.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }
[[ "${1:-}" == -h || "${1:-}" == --help ]] && { usage; exit 0; }
[[ $# -ge 2 && $# -le 3 ]] || { usage >&2; exit 2; }
rev_a="$1"; rev_b="$2"; bench="${3:-proxy}"
ROUNDS="${ROUNDS:-3}"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "compare: ROUNDS must be a positive number" >&2; exit 2; }
script="bench/${bench}_bench.sh"
[[ -x "$script" ]] || { echo "compare: no benchmark '$bench' ($script)" >&2; exit 2; }

BENCH_NAME=compare
# shellcheck source=bench/lib.sh
source "$repo_root/bench/lib.sh"   # log, die

ab_dir="$repo_root/bench/.ab"
mkdir -p "$ab_dir"

# build_rev REV -> prints the path of that revision's floodgate binary.
build_rev() {
  local rev="$1" sha dir build
  if [[ "$rev" == WORKTREE ]]; then
    build="$repo_root/build"
    [[ -f "$build/meson-private/coredata.dat" ]] || meson setup "$build" -Dbuildtype=release >&2
    ninja -C "$build" >&2 || die "the build of the working tree failed"
  else
    sha="$(git rev-parse --verify "$rev^{commit}" 2>/dev/null)" || die "unknown revision '$rev'"
    dir="$ab_dir/${sha:0:12}"
    if [[ ! -d "$dir" ]]; then
      git worktree add --detach "$dir" "$sha" >&2 || die "git worktree add failed for $rev"
    fi
    build="$dir/build"
    if [[ ! -f "$build/meson-private/coredata.dat" ]]; then
      meson setup "$build" "$dir" -Dbuildtype=release -Dtests=false >&2 || die "meson setup failed for $rev"
    fi
    ninja -C "$build" >&2 || die "the build of $rev failed"
  fi
  local bin
  bin="$(find "$build" -type f -name floodgate -perm -u+x | head -n1)"
  [[ -n "$bin" ]] || die "no floodgate binary in $build"
  echo "$bin"
}

log "building $rev_a"
bin_a="$(build_rev "$rev_a")"
log "building $rev_b"
bin_b="$(build_rev "$rev_b")"
log "A = $rev_a ($bin_a)"
log "B = $rev_b ($bin_b)"
# The current tree's demo shop and benchmark scripts serve both revisions.
ninja -C build >&2 || die "the build of the current tree failed (its demo shop is used)"
shop_bin="$(find "$repo_root/build" -type f -name floodgate-demo-shop -perm -u+x | head -n1)"
[[ -n "$shop_bin" ]] || die "no floodgate-demo-shop in build/"

stamp="$(date +%Y%m%d-%H%M%S)"
results="$repo_root/bench/results"
mkdir -p "$results"
collected="$(mktemp -d "${TMPDIR:-/tmp}/floodgate-compare.XXXXXX")"
trap 'rm -rf "$collected"' EXIT

run_one() {  # run_one LABEL BINARY ROUND
  local label="$1" bin="$2" round="$3" before after logs
  before="$(ls -d "$results"/"$bench"-*.logs 2>/dev/null | sort | tail -n1 || true)"
  log "round $round: $label"
  # shellcheck disable=SC2086  # BENCH_ENV is a list of NAME=VALUE words
  env ${BENCH_ENV:-} ROUNDS=1 BUILD=0 FG_BIN="$bin" FG_SHOP_BIN="$shop_bin" "$script" >"$collected/$label-r$round.out" 2>&1 ||
    { tail -n 30 "$collected/$label-r$round.out" >&2; die "$script failed for $label"; }
  after="$(ls -d "$results"/"$bench"-*.logs 2>/dev/null | sort | tail -n1 || true)"
  [[ -n "$after" && "$after" != "$before" && -f "$after/runs.tsv" ]] || die "$script wrote no runs.tsv"
  logs="$after"
  awk -v l="$label" -v r="$round" 'NR == 1 { print "rev\tab_round\t" $0; next } { print l "\t" r "\t" $0 }' \
    "$logs/runs.tsv" >"$collected/$label-r$round.tsv"
}

for (( round = 1; round <= ROUNDS; round++ )); do
  if (( round % 2 == 1 )); then run_one A "$bin_a" "$round"; run_one B "$bin_b" "$round"
  else run_one B "$bin_b" "$round"; run_one A "$bin_a" "$round"; fi
done

report="$results/compare-$bench-$stamp.md"
python3 - "$collected" "$rev_a" "$rev_b" "$bench" "$ROUNDS" <<'PYEOF' | tee "$report"
import csv, glob, os, statistics, sys
d, rev_a, rev_b, bench, rounds = sys.argv[1:6]
rows = []
for f in sorted(glob.glob(os.path.join(d, "*.tsv"))):
    with open(f) as fh:
        rows += list(csv.DictReader(fh, delimiter="\t"))
# A benchmark that writes its figures as phase/key/value lines (queue): one row per
# revision, round and phase.
if rows and "key" in rows[0] and "value" in rows[0]:
    wide = {}
    for r in rows:
        w = wide.setdefault((r["rev"], r["ab_round"], r["phase"]),
                            {"rev": r["rev"], "ab_round": r["ab_round"], "phase": r["phase"]})
        w[r["key"]] = r["value"]
    rows = list(wide.values())
# Only the targets that run the revision under test; nginx and the shop alone are
# the same binary in both and serve as a check of the machine's steadiness.
keys = [k for k in ("target", "conns", "route", "phase") if rows and k in rows[0]]
figures = [f for f in ("rps", "tickets_per_s", "polls_per_s", "p50_ms", "p99_ms", "fg_cpu_us_per_req",
                       "proxy_cpu_us_per_req", "fg_us", "redis_us", "redis_scripts", "redis_cmds", "redis_script_us")
           if any(f in r for r in rows)]
groups = {}
for r in rows:
    g = tuple(r[k] for k in keys)
    groups.setdefault(g, {"A": [], "B": []})[r["rev"]].append(r)
def med(rs, f):
    vals = []
    for r in rs:
        try:
            vals.append(float(r[f]))
        except (ValueError, TypeError, KeyError):
            pass
    return statistics.median(vals) if vals else None
print(f"# A/B: {bench} benchmark, A = {rev_a}, B = {rev_b}, {rounds} interleaved rounds\n")
print("| " + " | ".join(keys) + " | " + " | ".join(f"{f} A | {f} B | B/A" for f in figures) + " |")
print("|" + "---|" * (len(keys) + 3 * len(figures)))
for g, by in sorted(groups.items()):
    cells = list(g)
    for f in figures:
        a, b = med(by["A"], f), med(by["B"], f)
        cells += [f"{a:.2f}" if a is not None else "-", f"{b:.2f}" if b is not None else "-",
                  f"{b / a:.3f}" if a and b is not None else "-"]
    print("| " + " | ".join(cells) + " |")
# Where the benchmark also runs nginx, Floodgate's figures relative to nginx in the same run
# are steadier than absolute ones when the machine's load drifts between runs.
if rows and "target" in rows[0] and any(r["target"] == "nginx" for r in rows):
    print("\n| conns | rps vs nginx, A | rps vs nginx, B | B/A | cpu/req vs nginx, A | cpu/req vs nginx, B | B/A |")
    print("|---|---|---|---|---|---|---|")
    conns = sorted({r.get("conns", "") for r in rows}, key=lambda c: int(c) if c.isdigit() else 0)
    for c in conns:
        cells = [c]
        for f in ("rps", "proxy_cpu_us_per_req"):
            ratio = {}
            for rev in ("A", "B"):
                per_round = []
                for rnd in sorted({r["ab_round"] for r in rows if r["rev"] == rev}):
                    pick = lambda t: [r for r in rows if r["rev"] == rev and r["ab_round"] == rnd and r["target"] == t and r.get("conns", "") == c]
                    fg, ng = pick("floodgate"), pick("nginx")
                    a, b = med(fg, f), med(ng, f)
                    if a is not None and b:
                        per_round.append(a / b)
                ratio[rev] = statistics.median(per_round) if per_round else None
            a, b = ratio["A"], ratio["B"]
            cells += [f"{a:.3f}" if a else "-", f"{b:.3f}" if b else "-", f"{b / a:.3f}" if a and b else "-"]
        print("| " + " | ".join(cells) + " |")
print("\nMedians over the rounds; a target that is not Floodgate (nginx, the shop alone) runs the")
print("same binary for A and B, so its B/A shows how steady the machine was.")
PYEOF
log "report: $report"
