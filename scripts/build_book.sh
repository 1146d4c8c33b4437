#!/usr/bin/env bash
# Build the executed book on the default model (Gemma 3 270M, CPU, offline) into _build/html.
# Unchanged chapters are served from Jupyter Book's execution cache (_build/.jupyter_cache);
# run `jupyter-book clean --all .` after changing ember_utils to force re-execution.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export EMBER_FAST=0
.venv/bin/jupyter-book build . -W -n --keep-going
echo "Book: $(pwd)/_build/html/index.html"
