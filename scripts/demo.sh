#!/usr/bin/env bash
# One command: set up, then run `dsotp demo` on embedded defaults (extra arguments pass through).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/dsotp demo "$@"
