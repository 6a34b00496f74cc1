#!/bin/sh
# Installs the example config as the config only when none exists yet.
# Called by `meson install` with: SOURCE_CONFIG SYSCONFDIR (relative or absolute).
set -eu
src="$1"
dir="$2"
case "$dir" in
  /*) dest="${DESTDIR:-}$dir" ;;
  *) dest="${MESON_INSTALL_DESTDIR_PREFIX}/$dir" ;;
esac
mkdir -p "$dest"
if [ -e "$dest/floodgate.toml" ]; then
  echo "floodgate: keeping the existing $dest/floodgate.toml (the new example is floodgate.toml.example)"
else
  cp "$src" "$dest/floodgate.toml"
  echo "floodgate: installed $dest/floodgate.toml"
fi
