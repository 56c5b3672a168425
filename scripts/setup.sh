#!/usr/bin/env bash
# Set up a fresh Debian 12 machine: the system packages (Python 3.11's venv and headers, a compiler and the
# libraries FFCV is built against, git), then a virtualenv in .venv with the pinned dependencies and this
# package installed in editable mode.
#
#   bash scripts/setup.sh           what the pipeline needs
#   bash scripts/setup.sh --tests   and what the tests need besides: PostgreSQL, Chromium, npm
#
# On a machine without apt-get it installs nothing itself: it names what to install by hand and goes on
# only when all of it is there. It stops before it installs anything when python3 is not 3.11.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1-}" in
  "") tests=no ;;
  --tests) tests=yes ;;
  *) echo "usage: bash scripts/setup.sh [--tests]" >&2; exit 2 ;;
esac

# The pinned torch and torchvision wheels are built for CPython 3.11, Debian 12's python3. A machine
# without python3 gets it from apt below (Debian 12's), and is checked again before the venv is made.
python_version() { python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])'; }
if command -v python3 >/dev/null && [ "$(python_version)" != 3.11 ]; then
  echo "setup: this project needs Python 3.11 (the pinned torch wheels are cp311), and python3 here is" \
       "$(python_version): nothing was installed" >&2
  exit 1
fi

# Debian package: what it gives. python3-venv is the one a minimal Debian lacks most often: without it
# `python3 -m venv` fails, for want of ensurepip.
packages=(
  "python3-venv: Python 3.11's venv module, with ensurepip"
  "python3-dev: Python's headers, to build FFCV"
  "build-essential: a C and C++ compiler"
  "git: DVC's experiments are git commits"
  "pkg-config: how FFCV's build finds OpenCV and libjpeg-turbo"
  "libopencv-dev: OpenCV, with its headers"
  "libturbojpeg0-dev: libjpeg-turbo, with its headers"
)
if [ "$tests" = yes ]; then
  packages+=(
    "postgresql: the PostgreSQL-backed MLflow server of tests/test_postgres.py"
    "chromium: the headless browser of the MLflow UI and DVC plots tests, at /usr/bin/chromium"
    "npm: fetches vega for the DVC plots test"
  )
fi

# Whether the thing a package gives is here, asked without a package manager.
present() {
  case "$1" in
    python3-venv) python3 -c 'import ensurepip, venv' 2>/dev/null ;;
    python3-dev) python3 -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null ;;
    build-essential) command -v cc && command -v c++ ;;
    libopencv-dev) pkg-config --exists opencv4 ;;
    libturbojpeg0-dev) pkg-config --exists libturbojpeg ;;
    postgresql) command -v pg_ctl || ls /usr/lib/postgresql/*/bin/pg_ctl ;;
    chromium) [ -x /usr/bin/chromium ] ;;
    *) command -v "$1" ;;
  esac >/dev/null 2>&1
}

missing=()
if command -v apt-get >/dev/null && command -v dpkg-query >/dev/null; then
  for entry in "${packages[@]}"; do
    package="${entry%%:*}"
    # NodeSource's nodejs brings its own npm, with which Debian's npm package conflicts: any npm will do.
    if [ "$package" = npm ]; then
      present npm || missing+=(npm)
    elif [ "$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null)" != installed ]; then
      missing+=("$package")
    fi
  done
  # Only a machine that lacks something needs root: a user who has them all is not asked for sudo.
  if [ "${#missing[@]}" -gt 0 ]; then
    sudo_cmd=()
    [ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
    echo "setup: installing with apt-get: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo_cmd[@]}" apt-get update -qq
    "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
else
  for entry in "${packages[@]}"; do
    present "${entry%%:*}" || missing+=("${entry%%:*}")
  done
  wanted=$(printf '%s; ' "${packages[@]}")
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: no apt-get here, so install by hand what these Debian packages give: ${wanted%; }." \
         "Missing here: ${missing[*]}. Nothing was installed." >&2
    exit 1
  fi
  echo "setup: no apt-get here; found what these Debian packages give: ${wanted%; }"
fi

if [ "$(python_version)" != 3.11 ]; then
  echo "setup: this project needs Python 3.11 (the pinned torch wheels are cp311), and python3 here is" \
       "$(python_version): no .venv was made" >&2
  exit 1
fi

# A .venv without pip is what a `python3 -m venv` that failed leaves (no ensurepip): start it afresh. A
# .venv this run makes is removed again if the run fails, so that .venv/ means a finished set-up; one
# that was there before is kept, and a re-run brings it up to date.
[ -e .venv ] && [ ! -x .venv/bin/pip ] && rm -rf .venv
made_venv=no
trap '[ "$made_venv" = yes ] && rm -rf .venv && echo "setup: failed; removed the unfinished .venv" >&2' EXIT
if [ ! -e .venv ]; then
  made_venv=yes
  python3 -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip setuptools wheel
# ffcv's setup.py imports numpy, and the pins come from pyproject.toml; the editable install brings them.
.venv/bin/pip install -q numpy==2.4.6
.venv/bin/pip install -q -e ".[test]"
made_venv=no
echo "Set up: activate with 'source .venv/bin/activate'"
