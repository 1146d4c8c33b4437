#!/usr/bin/env bash
# Offline stand-in for "open the chapter in Colab and run all cells", in FAST mode, in a fresh virtual environment
# that has only what Colab preinstalls that matters here (torch, IPython). A fake `google.colab` module makes each
# chapter's setup cell take its Colab branch, which clones the repository (this checkout's committed HEAD, served
# via EMBER_REPO_URL) and runs `pip install -e` on it, exactly as on Colab.
#
# Chapters named in FULL_CHAPTERS (default: 1, 2 and 8, the ones that load the model, factorize and read the
# committed results) run top to bottom; every other chapter runs its setup cell and every import statement of its
# code cells, i.e. everything that depends on Colab's environment rather than on the code the FAST book build
# already executes. FULL_CHAPTERS=all runs every chapter top to bottom (about 8 minutes more on 2 CPU cores).
# What it cannot check: the GPU preset (no GPU here) and the real GitHub URL.
#
# Usage: [FULL_CHAPTERS="01 02 08"|all] bash scripts/colab_smoke.sh [workdir]   (default workdir: a new temporary folder)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-$(mktemp -d /tmp/ember-colab-XXXXXX)}
mkdir -p "$WORK"
cd "$WORK"
# The setup cell clones `--branch main` of EMBER_REPO_URL: serve this checkout's HEAD (committed state) as
# branch main of a local bare repository, whatever branch or detached HEAD the checkout is on.
rm -rf origin.git
git clone -q --bare "$ROOT" origin.git
git -C origin.git update-ref refs/heads/main "$(git -C "$ROOT" rev-parse HEAD)"
git -C origin.git symbolic-ref HEAD refs/heads/main
rm -rf ember-book  # a previous run's clone
PY=${PYTHON:-python3}
[ -x venv/bin/python ] || "$PY" -m venv venv
venv/bin/python -m pip install -q --upgrade pip 2>pip.log
venv/bin/python -m pip install -q "torch==2.13.0" ipython 2>>pip.log  # Colab ships torch and IPython
export EMBER_REPO_URL="file://$WORK/origin.git" EMBER_FAST=1 MPLBACKEND=Agg
status=0
cat > run_notebook.py <<'PY'
"""Run a notebook's code cells in order in one IPython shell, as Colab does; exit 1 at the first failing cell.
With `imports` as second argument: the setup cell, then every import statement of the other code cells."""
import ast, json, os, sys
# A stand-in `google.colab` package (a real module with a spec: libraries such as accelerate probe it with
# importlib), so that the chapter's setup cell takes its Colab branch.
fake = os.path.abspath("fake_colab")
os.makedirs(os.path.join(fake, "google", "colab"), exist_ok=True)
for pkg in ("google", "google/colab"):
    open(os.path.join(fake, pkg, "__init__.py"), "a").close()
sys.path.insert(0, fake)
import google.colab  # noqa: E402,F401
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
cells = ["".join(c["source"]) for c in json.load(open(sys.argv[1]))["cells"] if c["cell_type"] == "code"]
if len(sys.argv) > 2 and sys.argv[2] == "imports":
    def imports(src):
        code = "\n".join(ln for ln in src.splitlines() if not ln.lstrip().startswith(("%", "!")))
        return [ast.get_source_segment(code, node) for node in ast.walk(ast.parse(code))
                if isinstance(node, (ast.Import, ast.ImportFrom))]
    statements = [s for src in cells[1:] for s in imports(src)]
    cells = cells[:1] + ["\n".join(statements)]
    what = f"setup cell and {len(statements)} import statements ran"
else:
    what = f"all {len(cells)} code cells ran"
for i, src in enumerate(cells, 1):
    result = shell.run_cell(src, store_history=True)
    if not result.success:
        print(f"cell {i} of {len(cells)} failed", file=sys.stderr)
        sys.exit(1)
print(what)
PY
FULL=${FULL_CHAPTERS:-"01 02 08"}
for nb in "$ROOT"/notebooks/[0-9]*.ipynb; do
  name=$(basename "$nb" .ipynb)
  start=$(date +%s)
  if [ "$FULL" = all ] || [[ " $FULL " == *" ${name%%_*} "* ]]; then mode=full; verdict="ran top to bottom"
  else mode=imports; verdict="setup and imports ran"; fi
  if venv/bin/python run_notebook.py "$nb" "$mode" > "$name.log" 2>&1; then
    echo "$name: $verdict in $(( $(date +%s) - start )) s ($(tail -1 "$name.log"))"
  else
    echo "$name: FAILED after $(( $(date +%s) - start )) s; last lines of $WORK/$name.log:"
    tail -25 "$name.log"
    status=1
  fi
done
echo "cloned commit: $(git -C ember-book log --oneline -1 2>/dev/null || echo none)"
exit $status
