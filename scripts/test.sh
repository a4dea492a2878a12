#!/usr/bin/env bash
# One command: install everything the tests need (Mosquitto, RabbitMQ, InfluxDB, VictoriaMetrics,
# Chromium, Python packages), lint, type-check and run the whole test suite. The tests start their
# own brokers and databases on free loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --services

.venv/bin/ruff check dsotp_streams tests benchmarks deploy/grafana
.venv/bin/ruff format --check dsotp_streams tests benchmarks deploy/grafana
.venv/bin/mypy
set +e
.venv/bin/python -m pytest "$@"
code=$?
set -e
if [[ $code -eq 5 ]]; then
  echo "test.sh: pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit $code
