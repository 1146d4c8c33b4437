"""Unedited-model baselines for every concept in ``data/``.

For each concept: MC accuracy on the concept, indirect (no names), similar-domain and other-sense questions
and open-question accuracy, each on the test split with a 95 % bootstrap interval (and train); once for all
concepts: general-knowledge MC accuracy and the neutral perplexity (validation and test splits). Scoring uses
:mod:`ember_utils.eval` with its default templates (length-normalized option log-likelihood; greedy open
answers with alias matching).
A concept is "usable" when its test MC accuracy is ≥ 0.40, i.e. at least 15 points above chance.

Command line (writes ``results/<model>/baselines.csv`` and ``baselines.json`` atomically)::

    python -m ember_utils.experiments.baselines [--model gemma-3-270m] [--concepts harry_potter ...] [--out DIR]
"""
from __future__ import annotations

import argparse
import datetime as _dt
import io
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..data import CONCEPT_FILES, data_root, list_concepts, load_common, load_concept
from ..eval import (
    CHANCE,
    MC_OPTION_TEMPLATE,
    MC_PROMPT_TEMPLATE,
    OPEN_PROMPT_TEMPLATE,
    mc_accuracy,
    perplexity,
    score_mc,
    score_open,
)
from ..eval.intervals import bootstrap_interval
from ..io import atomic_write_json, atomic_write_text
from ..paths import results_dir

__all__ = ["USABLE_ACCURACY", "incomplete_concepts", "measure_baselines", "write_baselines", "main"]

logger = logging.getLogger(__name__)

#: Test MC accuracy a concept needs to be kept (15 points above the 0.25 chance level).
USABLE_ACCURACY = 0.40


def incomplete_concepts(root: str | Path | None = None) -> dict[str, list[str]]:
    """Concept folders that lack some of the required files (slug -> missing file names)."""
    root = Path(root) if root is not None else data_root()
    out = {}
    for slug in list_concepts(root):
        missing = [f for f in (*CONCEPT_FILES, "DATACARD.md") if not (root / slug / f).is_file()]
        if missing:
            out[slug] = missing
    return out


def _accuracy_columns(prefix: str, scored: pd.DataFrame, seed: int = 0) -> dict[str, Any]:
    """``acc_<prefix>_test`` with its 95 % bootstrap interval (``_lo``/``_hi``), ``acc_<prefix>_train`` and
    ``n_<prefix>_test`` from a scored table with a ``split`` column."""
    test = scored[scored["split"] == "test"]
    train = scored[scored["split"] == "train"]
    est, lo, hi = bootstrap_interval(test["correct"].astype(float), seed=seed) if len(test) else (np.nan,) * 3
    return {f"acc_{prefix}_test": est, f"acc_{prefix}_test_lo": lo, f"acc_{prefix}_test_hi": hi,
            f"acc_{prefix}_train": mc_accuracy(train) if len(train) else np.nan, f"n_{prefix}_test": len(test)}


def measure_baselines(model: Any, concepts: Sequence[str] | None = None, root: str | Path | None = None,
                      open_max_new_tokens: int = 10, progress: bool = False) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Measure the unedited baselines. Returns ``(table, shared)``: one row per concept (concept, indirect,
    similar-domain and other-sense MC, open questions, each on its test split with a 95 % bootstrap interval),
    and the numbers shared by all concepts (general-knowledge accuracy, neutral perplexity)."""
    concepts = list(concepts) if concepts is not None else list_concepts(root)
    if not concepts:
        raise ValueError(f"No concepts found in {root or data_root()}.")
    common = load_common(root)
    t0 = time.perf_counter()
    gen = score_mc(model, common.general_mc, progress=progress)
    shared: dict[str, Any] = _accuracy_columns("general", gen)
    for split in ("validation", "test"):
        neutral = common.neutral_texts(split)
        if neutral:
            shared[f"neutral_{split}_perplexity"] = perplexity(model, neutral, progress=progress)
            shared[f"n_neutral_{split}"] = len(neutral)
    shared["general_accuracy_by_subject_test"] = (
        gen[gen["split"] == "test"].groupby("subject")["correct"].mean().round(3).to_dict())
    logger.info("shared baselines in %.0fs: %s", time.perf_counter() - t0, shared)
    rows = []
    for slug in concepts:
        t = time.perf_counter()
        c = load_concept(slug, root)
        row: dict[str, Any] = {"concept": slug, "name": c.name, "similar_domain": c.similar_domain}
        for prefix, table in (("mc", c.mc), ("indirect", c.indirect_mc), ("similar", c.similar_mc),
                              ("other_sense", c.collateral_mc)):
            if len(table):
                row.update(_accuracy_columns(prefix, score_mc(model, table, progress=progress)))
        if len(c.open):
            op = score_open(model, c.open, max_new_tokens=open_max_new_tokens, progress=progress)
            op["split"] = c.open["split"].to_numpy() if "split" in c.open else "test"
            open_cols = _accuracy_columns("open", op)
            row.update({k.replace("acc_open_test", "acc_open").replace("n_open_test", "n_open"): v
                        for k, v in open_cols.items()})
        row["acc_general_test"] = shared["acc_general_test"]
        row["neutral_test_perplexity"] = shared.get("neutral_test_perplexity", np.nan)
        acc_test = row["acc_mc_test"]
        row["points_above_chance"] = round(100 * (acc_test - CHANCE), 1)
        row["usable"] = bool(acc_test >= USABLE_ACCURACY)
        rows.append(row)
        logger.info("%s in %.0fs: %s", slug, time.perf_counter() - t, rows[-1])
    return pd.DataFrame(rows), shared


def write_baselines(table: pd.DataFrame, shared: dict[str, Any], out_dir: str | Path, *, model: str,
                    command: str, seconds: float | None = None) -> tuple[Path, Path]:
    """Write ``baselines.csv`` (one row per concept) and ``baselines.json`` (rows + shared numbers +
    provenance) atomically into ``out_dir``."""
    out_dir = Path(out_dir)
    buf = io.StringIO()
    table.to_csv(buf, index=False, float_format="%.4f")
    csv_path = atomic_write_text(out_dir / "baselines.csv", buf.getvalue())
    record = {
        "model": model,
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "command": command,
        "seconds": seconds,
        "settings": {"mc_prompt_template": MC_PROMPT_TEMPLATE, "mc_option_template": MC_OPTION_TEMPLATE,
                     "open_prompt_template": OPEN_PROMPT_TEMPLATE, "normalization": "tokens (mean log-prob)",
                     "usable_threshold": USABLE_ACCURACY, "chance": CHANCE},
        "shared": shared,
        "concepts": table.to_dict(orient="records"),
    }
    json_path = atomic_write_json(out_dir / "baselines.json", record)
    return csv_path, json_path


def main(argv: Sequence[str] | None = None) -> int:
    from ..models import DEFAULT_MODEL, load_model

    ap = argparse.ArgumentParser(prog="python -m ember_utils.experiments.baselines", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL, help="model preset (default: %(default)s)")
    ap.add_argument("--concepts", nargs="*", default=None, help="concept slugs (default: every folder in data/)")
    ap.add_argument("--data", default=None, help="data folder (default: $EMBER_DATA_DIR or the repo's data/)")
    ap.add_argument("--out", default=None, help="output folder (default: results/<model>/ in the repository)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    incomplete = incomplete_concepts(args.data)
    wanted = args.concepts if args.concepts else list_concepts(args.data)
    bad = {k: v for k, v in incomplete.items() if k in wanted}
    if bad:
        print(f"Incomplete concept folders: {bad}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else results_dir(args.model)
    t0 = time.perf_counter()
    model = load_model(args.model)
    table, shared = measure_baselines(model, wanted, args.data, progress=args.progress)
    command = " ".join(["python -m ember_utils.experiments.baselines", *(argv if argv is not None else sys.argv[1:])])
    csv_path, json_path = write_baselines(table, shared, out, model=args.model, command=command,
                                          seconds=round(time.perf_counter() - t0, 1))
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        cols = ["concept", "acc_mc_test", "acc_indirect_test", "acc_similar_test", "acc_other_sense_test",
                "acc_general_test", "acc_open", "neutral_test_perplexity", "usable"]
        print(table[[c for c in cols if c in table]].to_string(index=False))
    print(f"wrote {csv_path} and {json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
