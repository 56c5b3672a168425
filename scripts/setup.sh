#!/usr/bin/env bash
# Set up a fresh Debian/Ubuntu machine: system libraries FFCV builds and links against, a virtualenv
# in .venv with the pinned dependencies, and this package installed in editable mode.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
# postgresql: the tests start a throwaway MLflow tracking server backed by it; chromium: the MLflow UI
# test drives it headless (playwright's own browser download needs a network this setup cannot assume).
if ! dpkg -s libopencv-dev libturbojpeg0-dev postgresql chromium >/dev/null 2>&1; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq --no-install-recommends libopencv-dev libturbojpeg0-dev pkg-config postgresql chromium >/dev/null
fi

python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip setuptools wheel
# ffcv's setup.py imports numpy, and the pins come from pyproject.toml; the editable install brings them.
.venv/bin/pip install -q numpy==2.4.6
.venv/bin/pip install -q -e ".[test]"
echo "Set up: activate with 'source .venv/bin/activate'"
