#!/usr/bin/env bash
# Refresh the lock files setup.sh and the Dockerfile install from: every version exact, with
# the hashes of its distributions, for every platform (uv's universal resolution).
#   scripts/lock.sh            keep the locked versions, add what pyproject.toml added
#   scripts/lock.sh --upgrade  move every package to its newest allowed version
set -euo pipefail
cd "$(dirname "$0")/.."
tool=.tools/uv-venv
if [[ ! -x $tool/bin/uv ]]; then
  python3 -m venv "$tool"
  "$tool/bin/pip" install -q --disable-pip-version-check uv
fi
common=(--generate-hashes --universal --python-version 3.11 --no-annotate --no-header "$@")
"$tool/bin/uv" pip compile pyproject.toml requirements/build.in --extra dev "${common[@]}" \
  -o requirements/dev.lock
# the image's lock: the runtime dependencies only, at the versions of the development lock
"$tool/bin/uv" pip compile pyproject.toml requirements/build.in -c requirements/dev.lock \
  "${common[@]}" -o requirements/runtime.lock
