"""Experiment runner: heavy grids (several K/ρ, seeds, concepts) written to ``results/<model>/<concept>/``.

Chapters compute the default concept with one seed inline and read these grids. Every output folder gets a
``config.json`` with the exact command, parameters, package version and date. Files are written atomically.

Usage::

    python -m ember_utils.runner factorization-grid --concept harry_potter
    python -m ember_utils.runner ember --concept harry_potter world_war_ii --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from ._io import atomic_write_json, atomic_write_text
from .notebook import repo_root

__all__ = ["results_dir", "load_result_table", "load_result_json", "run_factorization_grid", "run_ember",
           "collect_ember_results", "main"]


def _model_dir(model_name: str) -> str:
    return model_name.replace("/", "__")


def results_dir(model_name: str, concept: str | None = None, root: str | Path | None = None) -> Path:
    """``results/<model>/<concept>/`` (model ids with '/' become '__')."""
    base = Path(root) if root is not None else repo_root() / "results"
    path = base / _model_dir(model_name)
    return path / concept if concept else path


def load_result_table(model_name: str, concept: str, filename: str, root: str | Path | None = None) -> pd.DataFrame | None:
    """Read a committed CSV result, or ``None`` (with a printed note) if the runner has not produced it."""
    path = results_dir(model_name, concept, root) / filename
    if not path.exists():
        print(f"No {filename} for {model_name}/{concept} yet: run `python -m ember_utils.runner` (see its --help).")
        return None
    return pd.read_csv(path)


def load_result_json(model_name: str, concept: str, filename: str, root: str | Path | None = None) -> dict | None:
    """Read a committed JSON result, or ``None`` if absent."""
    path = results_dir(model_name, concept, root) / filename
    return json.loads(path.read_text()) if path.exists() else None


def _write_config(folder: Path, name: str, params: dict[str, Any]) -> None:
    from . import __version__

    cfg = {"command": "python -m ember_utils.runner " + " ".join(shlex.quote(a) for a in sys.argv[1:])
           if sys.argv and sys.argv[0].endswith("runner.py") else params.get("command", ""),
           "params": params, "ember_utils": __version__, "date": _dt.datetime.now().isoformat(timespec="seconds")}
    atomic_write_json(folder / f"{name}.config.json", cfg)


def run_factorization_grid(concept: str, ks: Sequence[int] = (25, 50, 100, 200),
                           sparsities: Sequence[float] = (0.005, 0.01, 0.02), model_name: str = "gemma-3-270m",
                           seed: int = 0, root: str | Path | None = None, model: Any = None) -> pd.DataFrame:
    """Fit every (K, ρ) on the concept's V′ and record error, time and atom-selection statistics."""
    import torch

    from .data import load_common, load_concept
    from .models import load_model
    from .pipeline import fit_concept_atoms

    model = model or load_model(model_name)
    c, common = load_concept(concept), load_common()
    rows = []
    for K in ks:
        for rho in sparsities:
            t0 = time.perf_counter()
            atoms = fit_concept_atoms(model, c.sentences, common.neutral_texts("train"), concept, n_atoms=K,
                                      sparsity=rho, seed=seed, describe_top=1)
            fac = atoms.factorization
            top = atoms.selection.iloc[0]
            edit = atoms.edit() if atoms.selected_atoms else None
            rows.append({"n_atoms": K, "sparsity": rho, "reconstruction_error": fac.reconstruction_error_,
                         "n_iter": fac.n_iter_, "best_iter": fac.best_iter_, "seconds": time.perf_counter() - t0,
                         "top_atom": int(top.atom), "top_ratio": float(top.ratio), "top_purity": float(top.purity),
                         "n_selected": len(atoms.selected_atoms), "n_edit_tokens": len(edit) if edit else 0,
                         "top_tokens": " | ".join(atoms.descriptions[int(top.atom)]["top_tokens"][:8])})
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    folder = results_dir(model_name, concept, root)
    atomic_write_text(folder / "factorization_grid.csv", table.to_csv(index=False))
    _write_config(folder, "factorization_grid", {"concept": concept, "ks": list(ks), "sparsities": list(sparsities),
                                                 "seed": seed, "model": model_name,
                                                 "torch_threads": torch.get_num_threads()})
    return table


def run_ember(concept: str, seed: int = 0, model_name: str = "gemma-3-270m", fast: bool = False,
              root: str | Path | None = None, model: Any = None, grid: Sequence[float] | None = None,
              baselines: dict[tuple[str, str], Any] | None = None) -> dict:
    """The full EMBER pipeline for one concept and seed: atoms, δ sweep on train, test before/after.

    ``baselines``: a dict shared between calls on the same model; the unedited measurements of each
    (concept, split) are stored there and reused by later seeds (they do not depend on the seed).
    """
    from .data import load_common, load_concept
    from .edit import DELTA_GRID
    from .evaluate import Evaluator
    from .models import load_model
    from .pipeline import fit_concept_atoms
    from .sweep import sweep_delta

    t0 = time.perf_counter()
    model = model or load_model(model_name)
    c, common = load_concept(concept), load_common()
    fit_kw = dict(max_iter=60, patience=20) if fast else {}
    atoms = fit_concept_atoms(model, c.sentences, common.neutral_texts("train"), concept, seed=seed, **fit_kw)
    folder = results_dir(model_name, concept, root)
    record: dict[str, Any] = {"concept": concept, "seed": seed, "model": model_name, "fast": fast,
                              "n_vocab": len(atoms.vocab), "vocab_labels": atoms.vocab.summary().to_dict(),
                              "reconstruction_error": atoms.factorization.reconstruction_error_,
                              "selection_rule": atoms.rule.describe(), "selected_atoms": atoms.selected_atoms,
                              "atoms": atoms.describe(atoms.selected_atoms).to_dict(orient="records")}
    baselines = {} if baselines is None else baselines
    test = Evaluator(model, c, common, split="test", fast=fast, baseline=baselines.get((concept, "test", fast)))
    baselines[(concept, "test", fast)] = test.baseline
    base = test.baseline.metrics
    record["test_unedited"] = base
    if not atoms.selected_atoms:
        record.update(chosen_delta=None, test_edited=None, note="no atom selected")
    else:
        edit = atoms.edit(tokenizer=model.tokenizer)
        record["n_edit_tokens"] = len(edit)
        record["edit_tokens"] = edit.tokens
        train = Evaluator(model, c, common, split="train", fast=fast, measure_open=False,
                          baseline=baselines.get((concept, "train", fast)))
        baselines[(concept, "train", fast)] = train.baseline
        sweep = sweep_delta(model, edit, train, grid or DELTA_GRID)
        atomic_write_text(folder / f"delta_sweep_seed{seed}.csv", sweep.table.to_csv(index=False))
        record["chosen_delta"] = sweep.chosen_delta
        if sweep.edit is not None:
            res = test.evaluate(sweep.edit.applied_to(model), name=f"EMBER δ={sweep.chosen_delta:g}",
                                edited_tokens=sweep.edit.token_ids)
            record["test_edited"] = res.metrics
            sweep.edit.save(folder / f"edit_seed{seed}.safetensors")
        else:
            record["test_edited"] = None
            record["note"] = "no δ passed the gates"
    record["seconds"] = time.perf_counter() - t0
    atomic_write_json(folder / f"ember_seed{seed}.json", record)
    _write_config(folder, f"ember_seed{seed}", {"concept": concept, "seed": seed, "fast": fast, "model": model_name})
    return record


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
        print(f"No EMBER results under {base} yet: run `python -m ember_utils.runner ember --concept ...`.")
    return pd.DataFrame(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ember_utils.runner", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("factorization-grid", help="K × ρ grid of factorizations for one concept")
    g.add_argument("--concept", default="harry_potter")
    g.add_argument("--ks", type=int, nargs="+", default=[25, 50, 100, 200])
    g.add_argument("--sparsities", type=float, nargs="+", default=[0.005, 0.01, 0.02])
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--model", default="gemma-3-270m")
    e = sub.add_parser("ember", help="EMBER pipeline (atoms, δ sweep, test) per concept and seed")
    e.add_argument("--concept", nargs="+", default=["harry_potter"])
    e.add_argument("--seeds", type=int, nargs="+", default=[0])
    e.add_argument("--model", default="gemma-3-270m")
    e.add_argument("--fast", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "factorization-grid":
        print(run_factorization_grid(args.concept, args.ks, args.sparsities, args.model, args.seed).to_string())
    else:
        from .models import load_model

        model = load_model(args.model)
        baselines: dict = {}
        for concept in args.concept:
            for seed in args.seeds:
                rec = run_ember(concept, seed, args.model, args.fast, model=model, baselines=baselines)
                print(json.dumps({k: rec.get(k) for k in ("concept", "seed", "chosen_delta", "selected_atoms",
                                                          "n_edit_tokens", "seconds")}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
