#!/usr/bin/env bash
# mypy --strict on the whole package. chatlog/schemas, chatlog/projector, ...
# are links to the top-level card folders, so mypy sees the installed shape.
set -euo pipefail
cd "$(dirname "$0")/.."
"${PYTHON:-python}" -m mypy --strict --config-file pyproject.toml -p chatlog "$@"
