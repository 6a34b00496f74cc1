#!/usr/bin/env bash
# Installs the Debian 12 packages Floodgate needs to build, test and run.
#
# Idempotent and non-interactive: asks dpkg which packages are missing and
# only then runs `apt-get update` once and installs exactly those. When
# everything is present it returns at once, so test.sh and run.sh call it on
# every start.
#
#   scripts/setup.sh           build + test + run dependencies
#   scripts/setup.sh --bench   also nginx-light and wrk (for bench/)
#
# As root it installs; as another user it prints the command to run and exits 1.
set -euo pipefail

readonly MIN_MESON=0.63

packages=(
  meson ninja-build pkg-config g++
  libuv1-dev libssl-dev node-llhttp libhiredis-dev libsimdjson-dev libtomlplusplus-dev libc-ares-dev
  catch2 redis-server python3 python3-pytest python3-yaml systemd curl ca-certificates
  # The browser tests of the waiting page (tests/integration/test_browser.py): headless
  # Chromium driven by Selenium, and a font with Chinese glyphs for its screenshots.
  chromium chromium-driver python3-selenium fonts-wqy-zenhei
  # The TLS tests make their certificates with the openssl command-line tool.
  openssl
)
bench_packages=(nginx-light wrk)

usage() {
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --bench) packages+=("${bench_packages[@]}") ;;
    -h|--help) usage; exit 0 ;;
    *) echo "setup.sh: unknown option: $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

# One dpkg-query for the whole list keeps the no-op path well under a second.
# Packages dpkg has never heard of are simply absent from its output.
declare -A installed=()
while read -r name state; do
  [[ "$state" == "installed" ]] && installed["$name"]=1
done < <(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${packages[@]}" 2>/dev/null || true)

missing=()
for p in "${packages[@]}"; do
  [[ -n "${installed[$p]:-}" ]] || missing+=("$p")
done

if [[ ${#missing[@]} -gt 0 ]]; then
  if [[ "$(id -u)" -ne 0 ]]; then
    echo "setup.sh: missing Debian packages: ${missing[*]}" >&2
    echo "setup.sh: install them as root, e.g.:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
  echo "setup.sh: installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Debian's redis-server package enables a system service on port 6379. The
# project never relies on it: tests and run.sh start their own redis-server
# on their own ports, so a running (or stopped) system service is harmless.

if ! command -v meson >/dev/null 2>&1; then
  echo "setup.sh: meson is not on PATH although the package is installed; check PATH" >&2
  exit 1
fi
meson_version="$(meson --version 2>/dev/null || echo 0)"
if [[ "$(printf '%s\n%s\n' "$MIN_MESON" "$meson_version" | sort -V | head -n1)" != "$MIN_MESON" ]]; then
  echo "setup.sh: meson $meson_version found at $(command -v meson), but Floodgate needs meson >= $MIN_MESON." >&2
  echo "setup.sh: Debian 12 ships meson 1.0; on an older system install a newer meson first." >&2
  exit 1
fi

if [[ ! -f /usr/share/llhttp/llhttp.c || ! -f /usr/share/include/llhttp/llhttp.h ]]; then
  echo "setup.sh: note: llhttp sources are not at /usr/share/llhttp (node-llhttp);" >&2
  echo "setup.sh: pass -Dllhttp_src=DIR -Dllhttp_include=DIR to meson setup." >&2
fi

echo "setup.sh: ${#packages[@]} packages present, meson $meson_version"
