#!/usr/bin/env bash
# Build the executed book on the default model (Gemma 3 270M, CPU, offline) into _build/html.
# Unchanged chapters are served from Jupyter Book's execution cache (_build/.jupyter_cache). That cache keys on
# notebook code only, so this script also fingerprints what the chapters import and read (ember_utils/, data/,
# results/, pyproject.toml) and drops the cache when that changed: the book never shows numbers from old code.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export EMBER_FAST=0
CACHE=_build/.jupyter_cache
STAMP=_build/.inputs.sha256
fingerprint=$(git ls-files -co --exclude-standard -- ember_utils data results pyproject.toml \
  | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1)
if [ -d "$CACHE" ] && [ "$(cat "$STAMP" 2>/dev/null)" != "$fingerprint" ]; then
  echo "ember_utils/data/results changed since the last build: clearing the execution cache."
  rm -rf "$CACHE"
fi
start=$(date +%s)
.venv/bin/jupyter-book build . -W -n --keep-going
mkdir -p _build && echo "$fingerprint" > "$STAMP"
echo "Built in $(( $(date +%s) - start )) s. Book: $(pwd)/_build/html/index.html"
