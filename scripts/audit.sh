#!/usr/bin/env bash
# Audit every installed dependency for known vulnerabilities (pip-audit, PyPI's advisory data).
# Needs pypi.org's JSON API or, with `--vulnerability-service osv`, api.osv.dev: where neither is
# reachable, pip-audit fails with "could not be audited" and so does this script.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
.venv/bin/pip install --quiet pip-audit
exec .venv/bin/pip-audit --strict --skip-editable "$@"
