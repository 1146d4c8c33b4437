"""Reading and writing the runner's results under ``results/<model>/<concept>/``: committed tables and records,
the config written next to each output, and the collected EMBER runs."""
from __future__ import annotations

import datetime as _dt
import json
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from ..io import atomic_write_json
from ..paths import results_dir

__all__ = ["load_result_table", "load_result_json", "write_config", "collect_ember_results", "grid_summary",
           "RUNNER_COMMAND"]

RUNNER_COMMAND = "python -m ember_utils.experiments.runner"


def load_result_table(model_name: str, concept: str, filename: str, root: str | Path | None = None) -> pd.DataFrame | None:
    """Read a committed CSV result, or ``None`` (with a printed note) if the runner has not produced it."""
    path = results_dir(model_name, concept, root) / filename
    if not path.exists():
        print(f"No {filename} for {model_name}/{concept} yet: run `{RUNNER_COMMAND}` (see its --help).")
        return None
    return pd.read_csv(path)


def load_result_json(model_name: str, concept: str, filename: str, root: str | Path | None = None) -> dict | None:
    """Read a committed JSON result, or ``None`` if absent."""
    path = results_dir(model_name, concept, root) / filename
    return json.loads(path.read_text()) if path.exists() else None


def write_config(folder: Path, name: str, params: dict[str, Any]) -> None:
    from .. import __version__

    """Write ``<name>.config.json`` (command, parameters, package version, date) atomically into ``folder``."""
    cfg = {"command": RUNNER_COMMAND + " " + " ".join(shlex.quote(a) for a in sys.argv[1:])
           if sys.argv and sys.argv[0].endswith("runner.py") else params.get("command", ""),
           "params": params, "ember_utils": __version__, "date": _dt.datetime.now().isoformat(timespec="seconds")}
    atomic_write_json(folder / f"{name}.config.json", cfg)


def collect_ember_results(model_name: str = "gemma-3-270m", root: str | Path | None = None) -> pd.DataFrame:
    """One row per committed ``ember_seed*.json`` under ``results/<model>/``: concept, seed, chosen δ,
    edited tokens and test-split metrics before/after."""
    base = results_dir(model_name, None, root)
    rows = []
    for path in sorted(base.glob("*/ember_seed*.json")):
        if not re.fullmatch(r"ember_seed\d+\.json", path.name):  # e.g. ember_seed0.config.json
            continue
        rec = json.loads(path.read_text())
        before, after = rec.get("test_unedited") or {}, rec.get("test_edited") or {}
        rows.append({"concept": rec["concept"], "seed": rec["seed"], "fast": rec.get("fast", False),
                     "selected_atoms": len(rec.get("selected_atoms", [])), "edit_tokens": rec.get("n_edit_tokens", 0),
                     "chosen_delta": rec.get("chosen_delta"),
                     "concept_acc_before": before.get("acc_concept"), "concept_acc_after": after.get("acc_concept"),
                     "similar_acc_before": before.get("acc_similar"), "similar_acc_after": after.get("acc_similar"),
                     "general_acc_before": before.get("acc_general"), "general_acc_after": after.get("acc_general"),
                     "efficacy": after.get("efficacy"), "specificity": after.get("specificity"),
                     "coherence": after.get("coherence"), "score": after.get("score")})
    if not rows:
        print(f"No EMBER results under {base} yet: run `{RUNNER_COMMAND} ember --concept ...`.")
    return pd.DataFrame(rows)


def grid_summary(model_name: str = "gemma-3-270m", filename: str = "factorization_seeds.csv",
                 root: str | Path | None = None) -> pd.DataFrame:
    """Per (K, ρ) over every concept's committed ``filename`` (runner ``factorization-grid --seeds ...``): fits,
    fits where the rule selected an atom, concepts with at least one such fit, median best-atom ratio and tokens
    per atom. Empty when no grid has been run."""
    tables = []
    for path in sorted(results_dir(model_name, None, root).glob(f"*/{filename}")):
        t = pd.read_csv(path)
        t["concept"] = path.parent.name
        tables.append(t)
    if not tables:
        print(f"No {filename} under {results_dir(model_name, None, root)} yet: run `{RUNNER_COMMAND} "
              "factorization-grid --concept ... --seeds ...`.")
        return pd.DataFrame()
    t = pd.concat(tables, ignore_index=True)
    with_atom = t["n_selected"] > 0
    g = t.assign(with_atom=with_atom).groupby(["n_atoms", "sparsity"])
    out = pd.DataFrame({
        "fits": g.size(),
        "fits_with_atom": g["with_atom"].sum().astype(int),
        "concepts_with_atom": g.apply(lambda d: d.loc[d["with_atom"], "concept"].nunique()),
        "concepts": g["concept"].nunique(),
        "median_top_ratio": g["top_ratio"].median(),
    })
    if "tokens_per_atom" in t:
        out["tokens_per_atom"] = g["tokens_per_atom"].first()
    return out.reset_index()
