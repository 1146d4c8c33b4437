"""Reading and writing the runner's results under ``results/<model>/<concept>/``: committed tables and records,
the config written next to each output, and the collected EMBER runs."""
from __future__ import annotations

import datetime as _dt
import json
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..io import atomic_write_json
from ..paths import results_dir

__all__ = ["load_result_table", "load_result_json", "concept_status", "write_config", "collect_ember_results",
           "seed_summary", "mean_std", "spread_table", "test_gate_failures", "grid_summary", "ember_table_markdown",
           "RUNNER_COMMAND", "EMBER_TEST_COLUMNS"]

RUNNER_COMMAND = "python -m ember_utils.experiments.runner"
#: Format of ``ember_seed*.json``; records of another format come from an older evaluation and are re-run.
EMBER_RECORD_FORMAT = "ember-run-v2"


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


def concept_status(model_name: str = "gemma-3-270m", seeds: Sequence[int] = (0, 1, 2),
                   root: str | Path | None = None) -> pd.DataFrame:
    """One row per concept folder of ``data/``: its name, whether it has the chapters' example texts
    (``showcase.json``), the δ the rule chose per seed ("none" when it chose no edit, "—" when not run), and
    whether ``comparison.csv`` and ``robustness.csv`` are committed. Chapters 6–7 need a seed with an edit."""
    from ..data import list_concepts, load_concept

    rows = []
    for slug in list_concepts():
        concept = load_concept(slug)
        folder = results_dir(model_name, slug, root)
        row = {"concept": slug, "name": concept.name, "example texts": bool(concept.showcase)}
        for seed in seeds:
            rec = load_result_json(model_name, slug, f"ember_seed{seed}.json", root)
            delta = None if rec is None else rec.get("chosen_delta")
            row[f"δ seed {seed}"] = "—" if rec is None else ("none" if delta is None else f"{delta:g}")
        row["comparison"] = (folder / "comparison.csv").exists()
        row["robustness"] = (folder / "robustness.csv").exists()
        rows.append(row)
    return pd.DataFrame(rows).set_index("concept")


def write_config(folder: Path, name: str, params: dict[str, Any]) -> None:
    from .. import __version__

    """Write ``<name>.config.json`` (command, parameters, package version, date) atomically into ``folder``."""
    cfg = {"command": RUNNER_COMMAND + " " + " ".join(shlex.quote(a) for a in sys.argv[1:])
           if sys.argv and sys.argv[0].endswith("runner.py") else params.get("command", ""),
           "params": params, "ember_utils": __version__, "date": _dt.datetime.now().isoformat(timespec="seconds")}
    atomic_write_json(folder / f"{name}.config.json", cfg)


#: Test-split columns of :func:`collect_ember_results` taken from the edited result (with ``_lo``/``_hi``).
EMBER_TEST_COLUMNS = ("acc_concept", "acc_indirect", "acc_similar", "acc_other_sense", "acc_general", "efficacy",
                      "efficacy_indirect", "specificity", "coherence", "seamlessness", "score")


def collect_ember_results(model_name: str = "gemma-3-270m", root: str | Path | None = None,
                          current_only: bool = True) -> pd.DataFrame:
    """One row per committed ``ember_seed*.json`` under ``results/<model>/``: concept, seed, chosen δ and whether
    it is identified, edited tokens, test-split accuracies and metrics after the edit with their 95 % intervals,
    the unedited accuracies, the gates on test and the name/no-name breakdown. ``current_only`` skips records
    of an older format (made with an older evaluation)."""
    base = results_dir(model_name, None, root)
    rows = []
    for path in sorted(base.glob("*/ember_seed*.json")):
        if not re.fullmatch(r"ember_seed\d+\.json", path.name):  # e.g. ember_seed0.config.json
            continue
        rec = json.loads(path.read_text())
        if current_only and rec.get("format") != EMBER_RECORD_FORMAT:
            continue
        before, after = rec.get("test_unedited") or {}, rec.get("test_edited") or {}
        failed = test_gate_failures(after, rec.get("gate", 0.9)) if after else None
        row = {"concept": rec["concept"], "seed": rec["seed"], "fast": rec.get("fast", False),
               "format": rec.get("format", "v1"), "selected_atoms": len(rec.get("selected_atoms", [])),
               "edit_tokens": rec.get("n_edit_tokens", 0), "chosen_delta": rec.get("chosen_delta"),
               "edge": rec.get("edge"), "identified": rec.get("identified"),
               "test_passes_gates": (not failed) if failed is not None else None,
               "test_failed_gates": "+".join(failed) if failed else "",
               "norm_ratio_chosen": rec.get("norm_ratio_at_chosen_delta"),
               "norm_ratio_200": (rec.get("norm_ratio_at_report_delta") or {}).get("median")}
        for k in ("acc_concept", "acc_indirect", "acc_similar", "acc_other_sense", "acc_general", "acc_open"):
            row[f"{k}_before"] = before.get(k)
        for k in EMBER_TEST_COLUMNS:
            for suffix in ("", "_lo", "_hi"):
                row[k + suffix] = after.get(k + suffix)
        for k in ("acc_concept_named", "acc_concept_unnamed", "base_acc_concept_named", "base_acc_concept_unnamed",
                  "n_concept_named", "n_concept_unnamed", "concept_drop_share_unnamed", "lost_concept",
                  "gained_concept", "mcnemar_p_concept"):
            row[k] = after.get(k)
        rows.append(row)
    if not rows:
        print(f"No EMBER results under {base} yet: run `{RUNNER_COMMAND} ember --concept ...`.")
    return pd.DataFrame(rows)


def test_gate_failures(metrics: dict, gate: float = 0.9) -> list[str]:
    """The gates of the δ rule applied to a test result: the terms (specificity, coherence and each of their
    terms) whose 95 % interval lies entirely below ``gate``."""
    from ..methods.ember.delta import gate_failures

    return gate_failures(metrics, gate)


def seed_summary(table: pd.DataFrame, columns: Sequence[str], by: str = "concept") -> pd.DataFrame:
    """Mean ± std over seeds per ``by`` group: columns ``<col>_mean``, ``<col>_std`` (NaN for one seed) and
    ``seeds``; rows with a missing value (e.g. no edit) are left out of that column's mean."""
    missing = [c for c in (by, *columns) if c not in table.columns]
    if missing:
        raise ValueError(f"seed_summary: columns {missing} not in the table (has {list(table.columns)}).")
    g = table.groupby(by)
    out = pd.DataFrame({"seeds": g.size()})
    for c in columns:
        vals = g[c].agg(lambda v: pd.to_numeric(v, errors="coerce").dropna().tolist())
        out[f"{c}_mean"] = vals.map(lambda v: float(np.mean(v)) if v else float("nan"))
        out[f"{c}_std"] = vals.map(lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else float("nan"))
    return out.reset_index()


def mean_std(mean: float, std: float, digits: int = 3) -> str:
    """``'0.412 ± 0.031'`` (``'0.412'`` when std is NaN, ``'—'`` when the mean is)."""
    if mean is None or np.isnan(mean):
        return "—"
    return f"{mean:.{digits}f}" + ("" if std is None or np.isnan(std) else f" ± {std:.{digits}f}")


def spread_table(table: pd.DataFrame, columns: Sequence[str], digits: int = 3) -> pd.DataFrame:
    """A seed-aggregated table (``comparison.csv``, ``robustness.csv``) as text cells: ``'0.450 ± 0.091'`` (mean ± std
    over the seeds with a value), ``'0.386 [0.286, 0.514]'`` (one seed has it: its 95 % interval), ``'—'`` if none.
    Keeps ``method`` and ``n_seeds``; columns absent from the table are left out."""
    from ..eval.report import with_interval

    missing = [c for c in ("method", "n_seeds") if c not in table.columns]
    if missing:
        raise ValueError(f"spread_table: columns {missing} not in the table (has {list(table.columns)}); "
                         "pass a table written by the runner (comparison.csv or robustness.csv).")
    present = [c for c in columns if c in table.columns and c not in ("method", "n_seeds")]
    rows = []
    for _, r in table.iterrows():
        d = r.to_dict()
        row = {"method": d["method"], "n_seeds": int(d["n_seeds"])}
        for c in present:
            std = d.get(f"{c}_std")
            row[c] = mean_std(d[c], std, digits) if pd.notna(std) else with_interval(d, c, digits)
        rows.append(row)
    return pd.DataFrame(rows, columns=["method", "n_seeds", *present])


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


def ember_table_markdown(runs: pd.DataFrame) -> str:
    """Markdown table of :func:`collect_ember_results`: one row per run (test split, 95 % intervals), then one row
    per concept with mean ± std over its seeds."""
    from ..eval.report import with_interval

    def cell(r: pd.Series, k: str) -> str:
        return with_interval(r.to_dict(), k) if r.get(k) is not None and r.get(k) == r.get(k) else "—"

    head = ("| concept | seed | tokens | chosen δ | identified | concept MC before → after | indirect MC after | "
            "efficacy | indirect efficacy | specificity | coherence | seamlessness | gates on test |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for _, r in runs.sort_values(["concept", "seed"]).iterrows():
        edited = r["chosen_delta"] is not None and r["chosen_delta"] == r["chosen_delta"]
        lines.append("| " + " | ".join([
            r["concept"], str(r["seed"]), str(r["edit_tokens"]), f"{r['chosen_delta']:g}" if edited else "none",
            ("yes" if r["identified"] else f"no ({r['edge']} edge)") if edited else "—",
            f"{r['acc_concept_before']:.3f} → {cell(r, 'acc_concept')}" if edited else f"{r['acc_concept_before']:.3f}",
            cell(r, "acc_indirect"), cell(r, "efficacy"), cell(r, "efficacy_indirect"), cell(r, "specificity"),
            cell(r, "coherence"), cell(r, "seamlessness"),
            ("pass" if r["test_passes_gates"] else f"fail ({r['test_failed_gates']})") if edited else "—"]) + " |")
    cols = ["acc_concept", "acc_indirect", "efficacy", "specificity", "coherence", "seamlessness", "chosen_delta"]
    edited_runs = runs[runs["chosen_delta"].notna()]
    if len(edited_runs):
        summ = seed_summary(edited_runs, cols)
        lines.append("")
        lines.append("| concept | seeds with an edit | " + " | ".join(f"{c} (mean ± std)" for c in cols) + " |")
        lines.append("|---|---|" + "---|" * len(cols))
        for _, r in summ.iterrows():
            lines.append(f"| {r['concept']} | {r['seeds']} | " + " | ".join(
                mean_std(r[f"{c}_mean"], r[f"{c}_std"], 2 if c == "chosen_delta" else 3) for c in cols) + " |")
    return head + "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ember_utils.experiments.results",
                                     description="Print tables of committed results.")
    parser.add_argument("table", choices=["ember"], help="which table")
    parser.add_argument("--model", default="gemma-3-270m")
    args = parser.parse_args(argv)
    runs = collect_ember_results(args.model)
    if len(runs):
        print(ember_table_markdown(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
