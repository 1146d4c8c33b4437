"""Experiment runner: heavy grids (several K/ρ, seeds, concepts) written to ``results/<model>/<concept>/``.

Chapters compute the default concept with one seed inline and read these grids. Every output folder gets a
``config.json`` with the exact command, parameters, package version and date. Files are written atomically.

Usage::

    python -m ember_utils.experiments.runner factorization-grid --concept harry_potter
    python -m ember_utils.experiments.runner ember --concept harry_potter world_war_ii --seeds 0 1 2
    python -m ember_utils.experiments.runner settings-sweep --method elm rmu
    python -m ember_utils.experiments.runner compare --concept harry_potter --seeds 0 1 2
    python -m ember_utils.experiments.runner experiment --name default --concept harry_potter --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..io import atomic_write_json, atomic_write_text
from ..paths import results_dir
from ..profiles import run_profile
from .results import EMBER_RECORD_FORMAT, test_gate_failures, write_config

__all__ = ["run_factorization_grid", "run_ember", "ember_done", "main", "EMBER_RECORD_FORMAT"]


def run_factorization_grid(concept: str, ks: Sequence[int] = (25, 50, 100, 200),
                           sparsities: Sequence[float] = (0.005, 0.01, 0.02), model_name: str = "gemma-3-270m",
                           seeds: Sequence[int] = (0,), root: str | Path | None = None, model: Any = None,
                           filename: str = "factorization_grid") -> pd.DataFrame:
    """Fit every (K, ρ, seed) on the concept's V′ and record error, time and atom-selection statistics into
    ``<filename>.csv`` (and its config)."""
    import torch

    from ..data import load_common, load_concept
    from ..methods.ember.pipeline import fit_concept_atoms
    from ..models import load_model

    model = model or load_model(model_name)
    c, common = load_concept(concept), load_common()
    rows = []
    for K, rho, seed in [(K, rho, seed) for K in ks for rho in sparsities for seed in seeds]:
        t0 = time.perf_counter()
        atoms = fit_concept_atoms(model, c.sentences, common.neutral_texts("train"), concept, n_atoms=K,
                                  sparsity=rho, seed=seed, describe_top=1)
        fac = atoms.factorization
        top = atoms.selection.iloc[0]
        edit = atoms.edit() if atoms.selected_atoms else None
        rows.append({"n_atoms": K, "sparsity": rho, "seed": seed, "reconstruction_error": fac.reconstruction_error_,
                     "n_iter": fac.n_iter_, "best_iter": fac.best_iter_, "seconds": time.perf_counter() - t0,
                     "top_atom": int(top.atom), "top_ratio": float(top.ratio), "top_purity": float(top.purity),
                     "n_selected": len(atoms.selected_atoms), "n_edit_tokens": len(edit) if edit else 0,
                     "tokens_per_atom": fac.n_nonzero_per_atom_,
                     "top_tokens": " | ".join(atoms.descriptions[int(top.atom)]["top_tokens"][:8])})
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    folder = results_dir(model_name, concept, root)
    atomic_write_text(folder / f"{filename}.csv", table.to_csv(index=False))
    write_config(folder, filename, {"concept": concept, "ks": list(ks), "sparsities": list(sparsities),
                                    "seeds": list(seeds), "model": model_name, "torch_threads": torch.get_num_threads()})
    return table


#: δ at which the chapter and the records report what the edit does to a row's norm (the grid's top).
NORM_REPORT_DELTA = 200.0


def _gates_on_test(metrics: dict, gate: float) -> dict:
    """The δ rule's gates applied to the test result (interval rule on every term), and the point-estimate view."""
    failed = test_gate_failures(metrics, gate)
    return {"test_passes_gates": not failed, "test_failed_gates": "+".join(failed),
            "test_specificity_passes_point": bool(metrics["specificity"] >= gate),
            "test_coherence_passes_point": bool(metrics["coherence"] >= gate)}


def run_ember(concept: str, seed: int = 0, model_name: str = "gemma-3-270m", fast: bool = False,
              root: str | Path | None = None, model: Any = None, grid: Sequence[float] | None = None,
              baselines: dict[tuple[str, str], Any] | None = None) -> dict:
    """The full EMBER pipeline for one concept and seed: atoms, δ sweep on train questions and neutral
    validation text, then test before/after with intervals, gates and the name/no-name breakdown.

    ``baselines``: a dict shared between calls on the same model; the unedited measurements of each
    (concept, split) are stored there and reused by later seeds (they do not depend on the seed).
    """
    from ..data import load_common, load_concept
    from ..eval import Evaluator
    from ..eval.metrics import GATE
    from ..methods.ember.delta import DELTA_GRID, sweep_delta
    from ..methods.ember.pipeline import fit_concept_atoms
    from ..models import load_model

    t0 = time.perf_counter()
    model = model or load_model(model_name)
    c, common = load_concept(concept), load_common()
    profile = run_profile(fast)
    atoms = fit_concept_atoms(model, c.sentences, common.neutral_texts("train"), concept, seed=seed,
                              **profile.factorization)
    folder = results_dir(model_name, concept, root)
    for stale in (f"delta_sweep_seed{seed}.csv", f"edit_seed{seed}.safetensors"):  # outputs of an earlier run
        (folder / stale).unlink(missing_ok=True)
    record: dict[str, Any] = {"format": EMBER_RECORD_FORMAT, "concept": concept, "seed": seed, "model": model_name,
                              "fast": fast, "n_vocab": len(atoms.vocab), "vocab_labels": atoms.vocab.summary().to_dict(),
                              "n_atoms": atoms.factorization.n_atoms, "sparsity": atoms.factorization.sparsity,
                              "reconstruction_error": atoms.factorization.reconstruction_error_,
                              "selection_rule": atoms.rule.describe(), "selected_atoms": atoms.selected_atoms,
                              "atoms": atoms.describe(atoms.selected_atoms).to_dict(orient="records"), "gate": GATE}
    baselines = {} if baselines is None else baselines
    test = Evaluator(model, c, common, split="test", fast=fast, baseline=baselines.get((concept, "test", fast)))
    baselines[(concept, "test", fast)] = test.baseline
    record["test_unedited"] = test.baseline.metrics
    record.update(chosen_delta=None, edge=None, identified=False, test_edited=None)
    if not atoms.selected_atoms:
        record["note"] = "no atom selected"
    else:
        edit = atoms.edit(tokenizer=model.tokenizer)
        record["n_edit_tokens"] = len(edit)
        record["edit_tokens"] = edit.tokens
        norms = edit.with_delta(NORM_REPORT_DELTA).summary(model)
        record["norm_ratio_at_report_delta"] = {"delta": NORM_REPORT_DELTA,
                                                "median": float(norms["norm_ratio"].median()),
                                                "min": float(norms["norm_ratio"].min()),
                                                "max": float(norms["norm_ratio"].max())}
        train = Evaluator(model, c, common, split="train", fast=fast, measure_open=False,
                          baseline=baselines.get((concept, "train", fast)))
        baselines[(concept, "train", fast)] = train.baseline
        record["train_splits"] = dict(train.splits)
        sweep = sweep_delta(model, edit, train, grid or profile.delta_grid or DELTA_GRID,
                            max_extensions=profile.delta_extensions)
        atomic_write_text(folder / f"delta_sweep_seed{seed}.csv", sweep.table.to_csv(index=False))
        record.update(chosen_delta=sweep.chosen_delta, edge=sweep.edge, identified=sweep.identified,
                      sweep_summary=sweep.summary(), grid=[float(d) for d in sweep.table["delta"]])
        if sweep.edit is not None:
            res = test.evaluate(sweep.edit, name=f"EMBER δ={sweep.chosen_delta:g}")
            record["test_edited"] = res.metrics
            record.update(_gates_on_test(res.metrics, GATE))
            record["norm_ratio_at_chosen_delta"] = float(sweep.edit.summary(model)["norm_ratio"].median())
            sweep.edit.save(folder / f"edit_seed{seed}.safetensors")
        else:
            record["note"] = "no δ passed the gates"
    record["seconds"] = time.perf_counter() - t0
    atomic_write_json(folder / f"ember_seed{seed}.json", record)
    write_config(folder, f"ember_seed{seed}", {"concept": concept, "seed": seed, "fast": fast, "model": model_name})
    return record


def ember_done(concept: str, seed: int, model_name: str = "gemma-3-270m", root: str | Path | None = None,
               fast: bool = False) -> bool:
    """Whether ``ember_seed<seed>.json`` exists in the current record format (and the same FAST/full mode)."""
    path = results_dir(model_name, concept, root) / f"ember_seed{seed}.json"
    if not path.exists():
        return False
    try:
        rec = json.loads(path.read_text())
    except json.JSONDecodeError:
        return False
    return rec.get("format") == EMBER_RECORD_FORMAT and bool(rec.get("fast")) == fast


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ember_utils.experiments.runner", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("factorization-grid", help="K × ρ × seed grid of factorizations per concept")
    g.add_argument("--concept", nargs="+", default=["harry_potter"])
    g.add_argument("--ks", type=int, nargs="+", default=[25, 50, 100, 200])
    g.add_argument("--sparsities", type=float, nargs="+", default=[0.005, 0.01, 0.02])
    g.add_argument("--seeds", type=int, nargs="+", default=[0])
    g.add_argument("--name", default="factorization_grid", help="output file name (without .csv)")
    g.add_argument("--model", default="gemma-3-270m")
    e = sub.add_parser("ember", help="EMBER pipeline (atoms, δ sweep, test) per concept and seed")
    e.add_argument("--concept", nargs="+", default=["harry_potter"])
    e.add_argument("--seeds", type=int, nargs="+", default=[0])
    e.add_argument("--model", default="gemma-3-270m")
    e.add_argument("--fast", action="store_true")
    e.add_argument("--redo", action="store_true", help="re-run seeds that already have a current record "
                   "(default: skip them, so an interrupted grid resumes where it stopped)")
    s = sub.add_parser("settings-sweep", help="validation sweep of the ELM / RMU CPU settings (default concept)")
    s.add_argument("--method", nargs="+", choices=["elm", "rmu"], default=["elm", "rmu"])
    s.add_argument("--concept", default="harry_potter")
    s.add_argument("--model", default="gemma-3-270m")
    s.add_argument("--fast", action="store_true")
    c = sub.add_parser("compare", help="unedited / EMBER / ELM / ELM+EMBER / RMU / RMU+EMBER on the test split")
    c.add_argument("--concept", nargs="+", default=["harry_potter"])
    c.add_argument("--seeds", type=int, nargs="+", default=[0])
    c.add_argument("--model", default="gemma-3-270m")
    c.add_argument("--fast", action="store_true")
    c.add_argument("--redo", action="store_true", help="re-run seeds that already have a record")
    x = sub.add_parser("experiment", help="a named experiment end to end: EMBER, ELM, RMU, both composed, every "
                       "attack on every row (stage-cached; an interrupted run resumes)")
    x.add_argument("--name", default="default", help="one of ember_utils.experiments.experiment.EXPERIMENTS")
    x.add_argument("--concept", nargs="+", default=["harry_potter"])
    x.add_argument("--seeds", type=int, nargs="+", default=[0])
    x.add_argument("--redo", action="store_true", help="re-run seeds that already have a record (stages stay cached)")
    args = parser.parse_args(argv)
    if args.command == "experiment":
        return _run_experiments(args)
    from ..models import load_model

    model = load_model(args.model)
    if args.command == "settings-sweep":
        from .compare import run_settings_sweep

        for method in args.method:
            table = run_settings_sweep(method, args.model, args.concept, model=model, fast=args.fast)
            print(table.to_string(), flush=True)
        return 0
    if args.command == "compare":
        from .compare import comparison_done, run_comparison, write_comparison

        baselines: dict = {}
        for concept in args.concept:
            for seed in args.seeds:
                if not args.redo and comparison_done(concept, seed, args.model, fast=args.fast):
                    print(f"{concept} seed {seed}: comparison exists, skipped (--redo re-runs it)", flush=True)
                    continue
                rec = run_comparison(concept, seed, args.model, args.fast, model=model, baselines=baselines)
                print(f"{concept} seed {seed}: done in {rec['seconds']:.0f} s", flush=True)
            if not args.fast:
                print(write_comparison(concept, args.model).round(3).to_string(), flush=True)
                print(f"figure: python -m ember_utils.viz.comparison --concept {concept}", flush=True)
        return 0
    if args.command == "factorization-grid":
        for concept in args.concept:
            print(run_factorization_grid(concept, args.ks, args.sparsities, args.model, args.seeds, model=model,
                                         filename=args.name).to_string())
    else:
        baselines: dict = {}
        for concept in args.concept:
            for seed in args.seeds:
                if not args.redo and ember_done(concept, seed, args.model, fast=args.fast):
                    print(f"{concept} seed {seed}: current record exists, skipped (--redo re-runs it)", flush=True)
                    continue
                rec = run_ember(concept, seed, args.model, args.fast, model=model, baselines=baselines)
                print(json.dumps({k: rec.get(k) for k in ("concept", "seed", "chosen_delta", "selected_atoms",
                                                          "n_edit_tokens", "identified", "seconds")}),
                      flush=True)
    return 0


def _run_experiments(args: argparse.Namespace) -> int:
    from ..models import load_model
    from .experiment import EXPERIMENTS, experiment_done, run_experiment, write_robustness

    if args.name not in EXPERIMENTS:
        raise SystemExit(f"Unknown experiment {args.name!r}; named experiments: {sorted(EXPERIMENTS)}.")
    config = EXPERIMENTS[args.name]
    model = load_model(config.model)
    for concept in args.concept:
        for seed in args.seeds:
            if not args.redo and experiment_done(concept, seed, config):
                print(f"{concept} seed {seed}: record exists, skipped (--redo re-runs it)", flush=True)
                continue
            rec = run_experiment(config, concept, seed, model=model)
            print(f"{concept} seed {seed}: done in {rec['seconds']:.0f} s", flush=True)
        if config.name == "default":
            print(write_robustness(concept, config.model).round(3).to_string(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
