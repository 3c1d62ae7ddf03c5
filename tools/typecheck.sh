#!/usr/bin/env bash
# mypy --strict on the installed layout: the card folders are sub-packages of
# chatlog only through setuptools' package-dir, which mypy does not read, so
# check a shadow tree of symlinks shaped like the installed package.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
shadow=$(mktemp -d)
trap 'rm -rf "$shadow"' EXIT
mkdir -p "$shadow/chatlog"
for f in "$root"/chatlog/*; do ln -s "$f" "$shadow/chatlog/$(basename "$f")"; done
for d in schemas producers projector histories benchmarks; do ln -s "$root/$d" "$shadow/chatlog/$d"; done
cd "$shadow"
"${PYTHON:-python}" -m mypy --strict --config-file "$root/pyproject.toml" --cache-dir "$root/.mypy_cache" -p chatlog "$@"
