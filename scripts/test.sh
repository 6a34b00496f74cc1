#!/usr/bin/env bash
# The one test command: installs what is missing, builds, runs every suite.
#
#   scripts/test.sh                   release build in build/, then an
#                                     ASan+UBSan debug build in build-asan/
#   scripts/test.sh --quick           release build only
#   scripts/test.sh --suite NAME      only meson suite NAME (repeatable:
#                                     core, config, http, unit, integration, ...)
#   scripts/test.sh -j N              build with N jobs (default: cores, max 4)
#   scripts/test.sh -- ARGS...        extra arguments for `meson test`
#
# Environment: FG_JOBS (same as -j), FG_TIMEOUT_MULTIPLIER (release runs,
# default 1; sanitizer runs use 3x that).
# Ends with one line "N passed, M failed, K skipped" summed over all runs and
# exits non-zero if a build or any test failed, or if no test ran at all.
set -uo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root" || exit 1

quick=0
suites=()
extra_test_args=()
cores="$(nproc 2>/dev/null || echo 2)"
jobs="${FG_JOBS:-$(( cores > 4 ? 4 : cores ))}"
timeout_multiplier="${FG_TIMEOUT_MULTIPLIER:-1}"

usage() {
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) quick=1 ;;
    --suite)
      [[ $# -ge 2 ]] || { echo "test.sh: --suite needs a name" >&2; exit 2; }
      suites+=("$2"); shift ;;
    --suite=*) suites+=("${1#--suite=}") ;;
    -j)
      [[ $# -ge 2 ]] || { echo "test.sh: -j needs a number" >&2; exit 2; }
      jobs="$2"; shift ;;
    -j*) jobs="${1#-j}" ;;
    -h|--help) usage; exit 0 ;;
    --) shift; extra_test_args+=("$@"); break ;;
    *) echo "test.sh: unknown option: $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

if ! [[ "$jobs" =~ ^[1-9][0-9]*$ ]]; then
  echo "test.sh: -j / FG_JOBS must be a positive number, got '$jobs'" >&2
  exit 2
fi
if ! [[ "$timeout_multiplier" =~ ^[1-9][0-9]*$ ]]; then
  echo "test.sh: FG_TIMEOUT_MULTIPLIER must be a positive integer, got '$timeout_multiplier'" >&2
  exit 2
fi

total_pass=0
total_fail=0
total_skip=0
any_error=0
declare -a run_lines=()

say() { printf '\n==> %s\n' "$*"; }

# configure_dir DIR BUILDTYPE SANITIZE [extra -D options...]
# Creates the build directory on first use. Later runs leave it alone unless
# its build type or sanitizer setting differs from what is asked (someone ran
# `meson configure` by hand), because ninja already regenerates on its own
# when a meson.build file changes.
configure_dir() {
  local dir="$1" buildtype="$2" sanitize="$3"
  shift 3
  local opts=(-Dbuildtype="$buildtype" -Db_sanitize="$sanitize" -Dtests=true "$@")

  if [[ ! -f "$dir/meson-private/coredata.dat" ]]; then
    if [[ -d "$dir/meson-private" ]]; then
      meson setup --wipe "$dir" "${opts[@]}"
    else
      meson setup "$dir" "${opts[@]}"
    fi
    return
  fi

  local current
  current="$(python3 - "$dir/meson-info/intro-buildoptions.json" <<'EOF' 2>/dev/null
import json, sys
try:
    opts = {o["name"]: o["value"] for o in json.load(open(sys.argv[1]))}
except Exception:
    sys.exit(0)
print("%s %s %s" % (opts.get("buildtype"), opts.get("b_sanitize"), opts.get("tests")))
EOF
)"
  if [[ "$current" != "$buildtype $sanitize True" ]]; then
    echo "test.sh: reconfiguring $dir (was: ${current:-unknown})"
    meson setup --reconfigure "$dir" "${opts[@]}"
  fi
}

# count_results LOGFILE -> prints "pass fail skip" from meson's testlog.json.
# OK and EXPECTEDFAIL pass; SKIP is counted apart; everything else (FAIL,
# TIMEOUT, ERROR, UNEXPECTEDPASS, INTERRUPT, ...) fails.
count_results() {
  python3 - "$1" <<'EOF'
import json, sys
p = f = s = 0
try:
    with open(sys.argv[1], encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                r = json.loads(line).get("result", "")
            except ValueError:
                continue
            if r in ("OK", "EXPECTEDFAIL"):
                p += 1
            elif r == "SKIP":
                s += 1
            else:
                f += 1
except FileNotFoundError:
    pass
print(p, f, s)
EOF
}

# run_config LABEL DIR BUILDTYPE SANITIZE TIMEOUT_MULTIPLIER [extra -D...]
run_config() {
  local label="$1" dir="$2" buildtype="$3" sanitize="$4" tmult="$5"
  shift 5
  local started=$SECONDS

  say "$label: configure $dir (buildtype=$buildtype, sanitize=$sanitize)"
  if ! configure_dir "$dir" "$buildtype" "$sanitize" "$@"; then
    echo "test.sh: $label: meson setup failed" >&2
    run_lines+=("[$label] configure FAILED")
    total_fail=$(( total_fail + 1 )); any_error=1
    return
  fi

  say "$label: build (ninja -j$jobs)"
  if ! ninja -C "$dir" -j "$jobs"; then
    echo "test.sh: $label: build failed" >&2
    run_lines+=("[$label] build FAILED")
    total_fail=$(( total_fail + 1 )); any_error=1
    return
  fi

  local test_args=(-C "$dir" --print-errorlogs --no-rebuild --timeout-multiplier "$tmult")
  local s
  for s in "${suites[@]+"${suites[@]}"}"; do test_args+=(--suite "$s"); done
  test_args+=("${extra_test_args[@]+"${extra_test_args[@]}"}")

  # A stale log from an earlier run must never be counted as this run's result.
  local log="$dir/meson-logs/testlog.json"
  rm -f "$log"

  say "$label: meson test ${test_args[*]}"
  local rc=0
  meson test "${test_args[@]}" || rc=$?

  local p=0 f=0 sk=0
  read -r p f sk < <(count_results "$log") || true
  p="${p:-0}"; f="${f:-0}"; sk="${sk:-0}"
  if [[ $rc -ne 0 && $f -eq 0 ]]; then
    # meson itself failed (bad suite name, crash of the runner, ...).
    echo "test.sh: $label: meson test exited $rc" >&2
    f=1
  fi
  total_pass=$(( total_pass + p )); total_fail=$(( total_fail + f )); total_skip=$(( total_skip + sk ))
  [[ $rc -eq 0 && $f -eq 0 ]] || any_error=1
  run_lines+=("[$label] ok $p, failed $f, skipped $sk ($(( SECONDS - started ))s, log $dir/meson-logs/testlog.txt)")
}

say "setup: checking Debian packages"
if ! scripts/setup.sh; then
  echo "test.sh: scripts/setup.sh failed; nothing was built" >&2
  echo "0 passed, 1 failed"
  exit 1
fi

run_config release build release none "$timeout_multiplier"

if [[ $quick -eq 0 ]]; then
  # Leak checking stays on for the whole process tree: integration tests run
  # the sanitized floodgate and demo shop binaries, which inherit these.
  export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
  run_config asan+ubsan build-asan debug address,undefined "$(( timeout_multiplier * 3 ))" -Db_lundef=false
fi

echo
echo "==> summary"
for line in "${run_lines[@]}"; do echo "  $line"; done
if [[ $(( total_pass + total_fail )) -eq 0 ]]; then
  echo "test.sh: no test ran (suite filter: ${suites[*]:-none})" >&2
  any_error=1
  total_fail=1
fi
if [[ $total_skip -gt 0 ]]; then
  echo "$total_pass passed, $total_fail failed, $total_skip skipped"
else
  echo "$total_pass passed, $total_fail failed"
fi
[[ $any_error -eq 0 && $total_fail -eq 0 ]]
