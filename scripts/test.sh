#!/usr/bin/env bash
# Run the whole test suite: ruff, unit tests (tiny models), real-model tests, every chapter executed in FAST mode
# (a FAST build of the book) and the headless-browser test of that build.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi
# Lint first (config in pyproject.toml): a style or import error fails fast.
.venv/bin/ruff check .
# The test command runs everything, the real-model tests and the Colab smoke run included.
export EMBER_RUN_REAL_MODEL=1 EMBER_RUN_COLAB=1
.venv/bin/python -m pytest -q -ra "$@"
