"""Chapter 5's comparison: unedited, EMBER, ELM, ELM+EMBER, RMU, RMU+EMBER on one concept and seed, measured on the
test split with the full evaluation; and the validation sweeps that chose the CPU settings.

Usage (through the runner)::

    python -m ember_utils.experiments.runner settings-sweep --method elm
    python -m ember_utils.experiments.runner compare --concept harry_potter --seeds 0 1 2
"""
from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..io import atomic_write_json, atomic_write_text
from ..paths import results_dir

__all__ = ["ROWS", "COMPARISON_COLUMNS", "COMPARE_RECORD_FORMAT", "ELM_SWEEP", "RMU_SWEEP", "run_settings_sweep",
           "run_comparison", "comparison_done", "load_edit", "first_chosen_edit", "collect_comparison", "comparison_table",
           "write_comparison", "ember_gain_table", "GAIN_METRICS", "aggregate_seeds"]

#: rows of the comparison table, in order
ROWS = ("unedited", "EMBER", "ELM", "ELM+EMBER", "RMU", "RMU+EMBER")
#: metric columns of the comparison table (test split)
COMPARISON_COLUMNS = ("acc_concept", "acc_indirect", "acc_open", "acc_similar", "acc_other_sense", "acc_general",
                      "perplexity", "seamlessness", "efficacy", "specificity", "coherence", "score")
COMPARE_RECORD_FORMAT = "ember-compare-v1"

#: the validation sweeps (changes to the CPU preset; run on the default concept's train questions and the neutral
#: validation split)
ELM_SWEEP: tuple[dict[str, Any], ...] = (
    {"eta": 5.0, "lr": 1e-3},
    {"eta": 20.0, "lr": 1e-3},
    {"eta": 20.0, "lr": 3e-3},
)
RMU_SWEEP: tuple[dict[str, Any], ...] = (
    {"steering": 1.0, "alpha": 10.0},
    {"steering": 3.0, "alpha": 10.0},
    {"steering": 3.0, "alpha": 100.0},
    {"steering": 10.0, "alpha": 10.0},
    {"steering": 1.0, "alpha": 100.0},
    {"steering": 1.0, "alpha": 1000.0},
    {"steering": 3.0, "alpha": 1000.0},
)


def _configs(model_name: str, seed: int, elm: dict | None = None, rmu: dict | None = None) -> tuple[Any, Any]:
    from ..methods.elm import elm_config_for
    from ..methods.rmu import rmu_config_for

    return (elm_config_for(model_name, seed=seed, **(elm or {})), rmu_config_for(model_name, seed=seed, **(rmu or {})))


def _texts(concept: Any, common: Any) -> tuple[list[str], list[str]]:
    """Forget text = the concept's sentences; retain text = neutral *train* sentences."""
    return list(concept.sentences), common.neutral_texts("train")


def _metric_row(metrics: dict) -> dict:
    keep = {}
    for k in COMPARISON_COLUMNS:
        for suffix in ("", "_lo", "_hi", "_se"):
            if f"{k}{suffix}" in metrics:
                keep[f"{k}{suffix}"] = metrics[f"{k}{suffix}"]
    for k in ("n_concept", "n_indirect", "efficacy_indirect", "d_acc_concept", "d_acc_concept_lo", "d_acc_concept_hi",
              "specificity_terms", "coherence_terms"):
        if k in metrics:
            keep[k] = metrics[k]
    return keep


def run_settings_sweep(method: str, model_name: str = "gemma-3-270m", concept: str = "harry_potter",
                       grid: Sequence[dict[str, Any]] | None = None, seed: int = 0, model: Any = None,
                       root: str | Path | None = None, fast: bool = False) -> pd.DataFrame:
    """Train ``method`` ('elm' or 'rmu') with each change of ``grid`` applied to the CPU preset and evaluate on the
    *train* questions and the neutral *validation* split; one row per setting (resumes: finished rows are kept)."""
    from ..data import load_common, load_concept
    from ..eval import Evaluator
    from ..eval.metrics import GATE
    from ..methods.elm import train_elm
    from ..methods.ember.delta import gate_failures
    from ..methods.rmu import train_rmu
    from ..models import load_model

    if method not in ("elm", "rmu"):
        raise ValueError(f"method must be 'elm' or 'rmu', got {method!r}.")
    grid = list(grid if grid is not None else (ELM_SWEEP if method == "elm" else RMU_SWEEP))
    model = model or load_model(model_name)
    c, common = load_concept(concept), load_common()
    forget, retain = _texts(c, common)
    folder = results_dir(model_name, None, root)
    path = folder / f"{method}_settings_sweep{'_fast' if fast else ''}.csv"
    done = pd.read_csv(path) if path.exists() else pd.DataFrame()
    ev = Evaluator(model, c, common, split="train", fast=fast, measure_open=False)
    assert "test" not in ev.splits.values()
    rows = done.to_dict(orient="records")
    for change in grid:
        key = json.dumps(change, sort_keys=True)
        if len(done) and key in set(done["setting"]):
            continue
        elm_cfg, rmu_cfg = _configs(model_name, seed, elm=change if method == "elm" else None,
                                    rmu=change if method == "rmu" else None)
        t0 = time.perf_counter()
        if method == "elm":
            res = train_elm(model, forget, retain, c.name, elm_cfg.replace(steps=3) if fast else elm_cfg,
                            cache_dir=folder / ".cache")
            state = res.adapter
        else:
            res = train_rmu(model, forget, retain, rmu_cfg.replace(steps=3) if fast else rmu_cfg)
            state = res.patch
        train_s = time.perf_counter() - t0
        m = ev.evaluate(state, name=key).metrics
        failed = gate_failures(m, GATE)
        rows.append({"setting": key, **change, "train_seconds": train_s, **_metric_row(m),
                     "failed_gates": "+".join(failed), "passes_gates": not failed, "splits": json.dumps(ev.splits)})
        print(json.dumps({k: rows[-1][k] for k in ("setting", "train_seconds", "acc_concept", "efficacy", "specificity",
                                                   "coherence", "score", "failed_gates")}, default=str), flush=True)
        atomic_write_text(path, pd.DataFrame(rows).to_csv(index=False))
    table = pd.DataFrame(rows)
    table["baseline_acc_concept"] = ev.baseline.metrics["acc_concept"]
    ok = table[table["passes_gates"].astype(bool) & (table["score"].astype(float) > 0)]
    table["chosen"] = False  # none when no setting both passes the gates and erases anything (score > 0)
    if len(ok):
        table.loc[ok["score"].astype(float).idxmax(), "chosen"] = True
    atomic_write_text(path, table.to_csv(index=False))
    return table


def load_edit(model_name: str, concept: str, seed: int, root: str | Path | None = None) -> tuple[Any, dict]:
    """The EMBER edit the runner's δ rule chose for this concept and seed (``None`` when it chose none) and the
    EMBER record (``runner ember`` must have run first)."""
    from ..methods.ember.edit import EmbeddingEdit
    from .runner import ember_done

    folder = results_dir(model_name, concept, root)
    if not ember_done(concept, seed, model_name, root):
        raise FileNotFoundError(f"No current EMBER record for {concept} seed {seed} under {folder}; run "
                                f"`python -m ember_utils.experiments.runner ember --concept {concept} --seeds {seed}` first.")
    record = json.loads((folder / f"ember_seed{seed}.json").read_text())
    if record.get("chosen_delta") is None:
        return None, record
    return EmbeddingEdit.load(folder / f"edit_seed{seed}.safetensors"), record


def first_chosen_edit(model_name: str, concept: str, seeds: Sequence[int] = (0, 1, 2),
                      root: str | Path | None = None) -> tuple[Any, dict]:
    """The edit and EMBER record of the first of ``seeds`` whose δ rule chose an edit (records that are missing
    are skipped). A ValueError names the seeds tried when none did: the attack chapters need an edit to attack."""
    tried = []
    for seed in seeds:
        try:
            edit, record = load_edit(model_name, concept, seed, root)
        except FileNotFoundError:
            tried.append(f"seed {seed}: no EMBER record")
            continue
        if edit is not None:
            return edit, record
        tried.append(f"seed {seed}: no edit chosen")
    raise ValueError(f"No EMBER edit for {concept} on {model_name} ({'; '.join(tried)}). Run `python -m "
                     f"ember_utils.experiments.runner ember --concept {concept} --seeds {' '.join(map(str, seeds))}`, "
                     f"or pick a concept whose δ rule chose an edit.")


def run_comparison(concept: str, seed: int = 0, model_name: str = "gemma-3-270m", fast: bool = False,
                   model: Any = None, root: str | Path | None = None, baselines: dict | None = None,
                   elm_changes: dict | None = None, rmu_changes: dict | None = None) -> dict:
    """Every row of the comparison for one concept and seed; writes ``comparison_seed<seed>.json``.

    The EMBER edit is the one the δ rule chose (``ember_seed<seed>``); the base methods are trained with the
    model's CPU/GPU preset and this seed, once on the unedited model and once on the edited one (EMBER first).
    When the rule chose no edit, the +EMBER rows equal the base rows and are marked ``ember_edit: none``.
    """
    from ..data import load_common, load_concept
    from ..eval import Evaluator
    from ..eval.uncertainty import paired_difference_intervals
    from ..methods.compose import elm_trainer, rmu_trainer, train_on_top
    from ..methods.elm import train_elm
    from ..methods.rmu import train_rmu
    from ..models import load_model

    t_all = time.perf_counter()
    model = model or load_model(model_name)
    c, common = load_concept(concept), load_common()
    forget, retain = _texts(c, common)
    elm_cfg, rmu_cfg = _configs(model_name, seed, elm_changes, rmu_changes)
    if fast:
        elm_cfg, rmu_cfg = elm_cfg.replace(steps=2, n_fluency_texts=2), rmu_cfg.replace(steps=2)
    edit, ember_record = load_edit(model_name, concept, seed, root)
    folder = results_dir(model_name, concept, root)
    cache = folder / ".cache"
    baselines = {} if baselines is None else baselines
    ev = Evaluator(model, c, common, split="test", fast=fast, baseline=baselines.get((concept, fast)))
    baselines[(concept, fast)] = ev.baseline
    rows: dict[str, dict] = {"unedited": {**_metric_row(ev.baseline.metrics), "train_seconds": 0.0}}
    extra: dict[str, Any] = {"histories": {}, "timings": {}, "fluency_examples": {}, "generations": {}}
    seamless = ev.baseline.measurements.seamless
    if seamless is not None:
        extra["generations"]["unedited"] = seamless[["prompt", "generation"]].head(6).to_dict(orient="records")

    results: dict[str, Any] = {}

    def record(name: str, state: Any, train_seconds: float, info: Any = None) -> None:
        res = results[name] = ev.evaluate(state, name=name)
        rows[name] = {**_metric_row(res.metrics), "train_seconds": train_seconds}
        if info is not None:
            extra["histories"][name] = info.history.to_dict(orient="list")
            extra["timings"][name] = info.timings
            if getattr(info, "fluency_examples", None):
                extra["fluency_examples"][name] = info.fluency_examples[:4]
        gens = getattr(res.measurements, "seamless", None)
        if gens is not None and {"prompt", "generation"} <= set(gens.columns):
            extra["generations"][name] = gens[["prompt", "generation"]].head(6).to_dict(orient="records")
        print(json.dumps({"concept": concept, "seed": seed, "row": name, "train_seconds": round(train_seconds, 1),
                          **{k: rows[name].get(k) for k in ("acc_concept", "efficacy", "specificity", "coherence")}},
                         default=str), flush=True)

    if edit is not None:
        record("EMBER", edit, 0.0)
    t0 = time.perf_counter()
    elm = train_elm(model, forget, retain, c.name, elm_cfg, cache_dir=cache)
    record("ELM", elm.adapter, time.perf_counter() - t0, elm)
    t0 = time.perf_counter()
    rmu = train_rmu(model, forget, retain, rmu_cfg)
    record("RMU", rmu.patch, time.perf_counter() - t0, rmu)
    if edit is not None:
        t0 = time.perf_counter()
        stack, info = train_on_top(model, edit, elm_trainer(forget, retain, c.name, elm_cfg, cache_dir=cache))
        record("ELM+EMBER", stack, time.perf_counter() - t0, info)
        t0 = time.perf_counter()
        stack, info = train_on_top(model, edit, rmu_trainer(forget, retain, rmu_cfg))
        record("RMU+EMBER", stack, time.perf_counter() - t0, info)
    else:
        rows["EMBER"] = {**rows["unedited"], "note": "no edit"}
        rows["ELM+EMBER"] = {**rows["ELM"], "note": "no edit: equals ELM"}
        rows["RMU+EMBER"] = {**rows["RMU"], "note": "no edit: equals RMU"}
    gains = {}  # does adding EMBER change the base method? same bootstrap draws for both states
    for base_name in ("ELM", "RMU"):
        if f"{base_name}+EMBER" in results:
            gains[base_name] = paired_difference_intervals(results[base_name].measurements,
                                                           results[f"{base_name}+EMBER"].measurements,
                                                           ev.baseline.measurements, n_boot=ev.n_boot or 2000)
    out = {"format": COMPARE_RECORD_FORMAT, "ember_gain": gains, "concept": concept, "seed": seed, "model": model_name,
           "fast": fast,
           "ember_edit": None if edit is None else {"delta": ember_record["chosen_delta"], "n_tokens": len(edit),
                                                    "identified": ember_record.get("identified")},
           "elm_config": elm_cfg.to_dict(), "rmu_config": rmu_cfg.to_dict(),
           "rows": {name: rows[name] for name in ROWS}, **extra, "seconds": time.perf_counter() - t_all}
    atomic_write_json(folder / f"comparison_seed{seed}{'_fast' if fast else ''}.json", out)
    return out


def comparison_done(concept: str, seed: int, model_name: str = "gemma-3-270m", root: str | Path | None = None,
                    fast: bool = False) -> bool:
    path = results_dir(model_name, concept, root) / f"comparison_seed{seed}{'_fast' if fast else ''}.json"
    try:
        return json.loads(path.read_text()).get("format") == COMPARE_RECORD_FORMAT
    except (FileNotFoundError, json.JSONDecodeError):
        return False


def collect_comparison(concept: str, model_name: str = "gemma-3-270m", root: str | Path | None = None,
                       fast: bool = False) -> pd.DataFrame:
    """One row per (seed, method) from ``comparison_seed*.json``."""
    folder = results_dir(model_name, concept, root)
    rows = []
    for path in sorted(folder.glob("comparison_seed*.json")):
        if path.stem.endswith("_fast") != fast:
            continue
        rec = json.loads(path.read_text())
        if rec.get("format") != COMPARE_RECORD_FORMAT:
            continue
        for method, m in rec["rows"].items():
            rows.append({"concept": concept, "seed": rec["seed"], "method": method,
                         "ember_delta": (rec.get("ember_edit") or {}).get("delta"), **m})
    return pd.DataFrame(rows)


def aggregate_seeds(runs: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Per method (in :data:`ROWS` order): mean and std over seeds of every column (``<col>``, ``<col>_std``); where
    one seed has the value, that seed's 95 % interval bounds (``<col>_lo/_hi``) instead of a std."""
    out = []
    for method in ROWS:
        sub = runs[runs["method"] == method] if len(runs) else runs
        if sub.empty:
            continue
        row: dict[str, Any] = {"method": method, "n_seeds": int(sub["seed"].nunique())}
        for col in columns:
            if col not in sub or sub[col].isna().all():
                continue
            vals = sub[col].astype(float)
            row[col] = float(vals.mean())
            if vals.notna().sum() > 1:
                row[f"{col}_std"] = float(vals.std(ddof=1))
            else:  # one seed has this value (e.g. the bypass needs an edit): that seed's interval
                only = vals.first_valid_index()
                for s in ("_lo", "_hi"):
                    if f"{col}{s}" in sub:
                        row[f"{col}{s}"] = float(sub.at[only, f"{col}{s}"])
        out.append(row)
    return pd.DataFrame(out)


def comparison_table(runs: pd.DataFrame) -> pd.DataFrame:
    """:func:`aggregate_seeds` of the comparison columns and the training time."""
    return aggregate_seeds(runs, (*COMPARISON_COLUMNS, "train_seconds"))


def write_comparison(concept: str, model_name: str = "gemma-3-270m", root: str | Path | None = None) -> pd.DataFrame:
    """``comparison.csv``: the table of the concept's finished seeds (the figure is drawn from it by
    ``python -m ember_utils.viz.comparison``: computational modules never import the plotting layer)."""
    table = comparison_table(collect_comparison(concept, model_name, root))
    atomic_write_text(results_dir(model_name, concept, root) / "comparison.csv", table.to_csv(index=False))
    return table


#: the differences that answer "does adding EMBER help?"
GAIN_METRICS = ("efficacy", "specificity", "coherence", "acc_concept", "score")


def ember_gain_table(concept: str, model_name: str = "gemma-3-270m", root: str | Path | None = None) -> pd.DataFrame:
    """Per seed and base method: (base+EMBER) − base for :data:`GAIN_METRICS` with the 95 % paired interval, and
    ``verdict``: 'raises efficacy' when the efficacy interval lies above 0 while neither specificity's nor
    coherence's lies below 0; 'costs specificity/coherence' when one does; 'within noise' otherwise."""
    rows = []
    folder = results_dir(model_name, concept, root)
    for path in sorted(folder.glob("comparison_seed*.json")):
        if path.stem.endswith("_fast"):
            continue
        rec = json.loads(path.read_text())
        if rec.get("format") != COMPARE_RECORD_FORMAT:
            continue
        for base, g in (rec.get("ember_gain") or {}).items():
            row = {"concept": concept, "seed": rec["seed"], "base": base,
                   "ember_delta": (rec.get("ember_edit") or {}).get("delta")}
            for m in GAIN_METRICS:
                for s in ("", "_lo", "_hi"):
                    row[f"diff_{m}{s}"] = g.get(f"diff_{m}{s}", float("nan"))
            cost = [m for m in ("specificity", "coherence") if row[f"diff_{m}_hi"] < 0]
            if cost:
                row["verdict"] = "costs " + "/".join(cost)
            elif row["diff_efficacy_lo"] > 0:
                row["verdict"] = "raises efficacy"
            else:
                row["verdict"] = "within noise"
            rows.append(row)
    return pd.DataFrame(rows)
