"""The results-summary figure on the book's intro page, drawn from whatever is committed under ``results/``.

Nothing here computes a result: it reads the experiment runner's files and plots them. Two sources, both
optional (a missing file shrinks the figure; with none at all the figure says so):

* ``results/<model>/baselines.csv`` — one row per concept with the unedited model's test accuracies
  (``python -m ember_utils.experiments.baselines``: columns ``concept`` and any of ``acc_mc_test``, ``acc_similar_test``,
  ``acc_general_test``; the names ``acc_concept``/``acc_similar``/``acc_general`` and ``mc_test_acc``/... are
  accepted too). Optional ``name`` (display name) and ``usable`` (the concept clears the accuracy bar
  for erasure experiments) columns label the bars.
* ``results/<model>/<concept>/<method>_seed<k>.json`` — one record per erasure run, as written by
  :func:`ember_utils.experiments.runner.run_ember` (``test_unedited`` and ``test_edited`` metric dicts with
  ``acc_concept``, ``acc_similar``, ``acc_general``, ...). The method label comes from the record's
  ``method`` field, else from the file name (``ember_seed0.json`` → EMBER, ``elm_ember_seed0.json`` →
  ELM+EMBER). ``test_edited: null`` (no δ passed the gates) means the model was left unedited.

Records from FAST smoke runs are used only when a concept has no full run.
"""
from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

__all__ = ["ResultsSummary", "load_baselines", "load_runs", "results_summary", "ACC_COLUMNS", "CHANCE"]

CHANCE = 0.25
DEFAULT_MODEL_DIR = "gemma-3-270m"
ACC_COLUMNS = {"acc_concept": "the concept", "acc_similar": "similar domain", "acc_general": "general knowledge"}
_BASELINE_ALIASES = {"acc_mc_test": "acc_concept", "acc_similar_test": "acc_similar", "acc_general_test": "acc_general",
                     "mc_test_acc": "acc_concept", "similar_test_acc": "acc_similar", "general_test_acc": "acc_general",
                     **{f"{a}_{b}": f"{c}_{b}" for a, c in (("acc_mc_test", "acc_concept"),
                                                            ("acc_similar_test", "acc_similar"),
                                                            ("acc_general_test", "acc_general")) for b in ("lo", "hi")}}
_RUN_FILE = re.compile(r"^(?P<method>[a-z0-9_]+?)_seed(?P<seed>\d+)\.json$")
UNEDITED = "unedited"


@dataclass
class ResultsSummary:
    """The intro figure, its caption (Markdown) and the files it was drawn from."""

    figure: Figure
    caption: str
    sources: list[Path] = field(default_factory=list)
    baselines: pd.DataFrame | None = None
    runs: pd.DataFrame | None = None

    def png(self, dpi: int = 120) -> bytes:
        """The figure as PNG bytes (the figure is built without pyplot, so no backend is involved)."""
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=dpi)
        return buffer.getvalue()

    def _repr_png_(self) -> bytes:
        return self.png()

    def _repr_markdown_(self) -> str:
        return self.caption


def _method_label(stem_method: str) -> str:
    return "+".join(part.upper() for part in stem_method.split("_"))


def load_baselines(model_dir: str | Path) -> pd.DataFrame | None:
    """``baselines.csv`` as columns ``concept`` (+ ``name``, ``usable`` if present) + the known accuracy
    columns, or ``None`` if absent/empty."""
    path = Path(model_dir) / "baselines.csv"
    if not path.is_file():
        return None
    table = pd.read_csv(path).rename(columns=_BASELINE_ALIASES)
    if "concept" not in table.columns:
        raise ValueError(f"{path}: no 'concept' column (columns: {list(table.columns)})")
    cols = [c for c in ACC_COLUMNS if c in table.columns]
    if not cols or table.empty:
        return None
    extra = [c for c in ("name", "usable") if c in table.columns]
    bounds = [f"{c}_{b}" for c in cols for b in ("lo", "hi") if f"{c}_{b}" in table.columns]
    return table[["concept", *extra, *cols, *bounds]].copy()


def load_runs(model_dir: str | Path) -> tuple[pd.DataFrame | None, list[Path]]:
    """Every ``<method>_seed<k>.json`` run record under ``model_dir/<concept>/`` as a long table.

    Columns: concept, method, seed, fast, state (``unedited``/``edited``), edited (bool: an edit was
    applied), and the accuracy columns present in the record. Returns ``(None, [])`` when there is none.
    """
    rows, sources = [], []
    for path in sorted(Path(model_dir).glob("*/*_seed*.json")):
        match = _RUN_FILE.match(path.name)
        if not match or path.name.endswith(".config.json"):
            continue
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from exc
        before = record.get("test_unedited")
        if not isinstance(before, dict):
            continue  # not an erasure record
        after = record.get("test_edited")
        base = {"concept": record.get("concept", path.parent.name),
                "method": record.get("method") or _method_label(match["method"]),
                "seed": int(record.get("seed", match["seed"])), "fast": bool(record.get("fast", False))}
        for state, metrics in ((UNEDITED, before), ("edited", after if isinstance(after, dict) else before)):
            rows.append({**base, "state": state, "edited": isinstance(after, dict),
                         **{k: metrics.get(k, np.nan) for k in ACC_COLUMNS}})
        sources.append(path)
    if not rows:
        return None, []
    runs = pd.DataFrame(rows)
    # Prefer full runs: drop FAST records for a (concept, method) that also has a full one.
    has_full = runs[~runs.fast].groupby(["concept", "method"]).size()
    keep = runs.apply(lambda r: not r.fast or (r.concept, r.method) not in has_full.index, axis=1)
    return runs[keep].reset_index(drop=True), sources


def _pick_model_dir(results_root: Path, model: str | None) -> Path | None:
    if model is not None:
        return results_root / model.replace("/", "__")
    if (results_root / DEFAULT_MODEL_DIR).is_dir():
        return results_root / DEFAULT_MODEL_DIR
    dirs = sorted(p for p in results_root.glob("*") if p.is_dir() and not p.name.startswith("."))
    return dirs[0] if dirs else None


def _bars(ax, table: pd.DataFrame, group_col: str, groups: list[str], title: str,
          points: pd.DataFrame | None = None, labels: dict[str, str] | None = None) -> None:
    """Grouped bars: one group per ``groups`` entry, one bar per accuracy column (mean over rows)."""
    cols = [c for c in ACC_COLUMNS if c in table.columns and table[c].notna().any()]
    width = 0.8 / max(len(cols), 1)
    colors = {"acc_concept": "#c0392b", "acc_similar": "#2980b9", "acc_general": "#7f8c8d"}
    x = np.arange(len(groups))
    for j, col in enumerate(cols):
        means = np.array([table.loc[table[group_col] == g, col].mean() for g in groups])
        offset = (j - (len(cols) - 1) / 2) * width
        err = None
        if f"{col}_lo" in table.columns and f"{col}_hi" in table.columns:  # one row per group: its 95 % interval
            lo = np.array([table.loc[table[group_col] == g, f"{col}_lo"].mean() for g in groups])
            hi = np.array([table.loc[table[group_col] == g, f"{col}_hi"].mean() for g in groups])
            err = np.nan_to_num(np.vstack([means - lo, hi - means]).clip(min=0))
        ax.bar(x + offset, means, width * 0.95, yerr=err, capsize=2, label=ACC_COLUMNS[col], color=colors[col])
        if points is not None:  # individual concepts as dots on the per-method means
            for i, g in enumerate(groups):
                vals = points.loc[points[group_col] == g, col].dropna().to_numpy()
                if len(vals) > 1:
                    ax.scatter(np.full(len(vals), x[i] + offset), vals, s=10, color="black", zorder=3)
    ax.axhline(CHANCE, ls="--", lw=1, color="black")
    ax.text(len(groups) - 0.5, CHANCE + 0.01, "chance", ha="right", va="bottom", fontsize=8)
    labels = labels or {}
    ax.set_xticks(x, [labels.get(g, g.replace("_", " ")) for g in groups], fontsize=9)
    ax.set_ylim(0, 1)
    ax.set_ylabel("test accuracy (4-way MC)")
    ax.set_title(title, fontsize=11)
    ax.legend(fontsize=8, loc="upper right")


def results_summary(results_root: str | Path, model: str | None = None) -> ResultsSummary:
    """Build the intro figure from the committed results (see the module docstring for the file formats)."""
    results_root = Path(results_root)
    model_dir = _pick_model_dir(results_root, model) if results_root.is_dir() else None
    baselines = load_baselines(model_dir) if model_dir and model_dir.is_dir() else None
    runs, run_sources = load_runs(model_dir) if model_dir and model_dir.is_dir() else (None, [])
    sources = ([model_dir / "baselines.csv"] if baselines is not None else []) + run_sources

    if baselines is None and runs is not None:  # the runs carry their own unedited accuracies
        baselines = (runs[runs.state == UNEDITED].groupby("concept", as_index=False)[list(ACC_COLUMNS)].mean())

    panels = int(baselines is not None) + int(runs is not None)
    size = {0: (6.0, 1.2), 1: (6.0, 3.8)}.get(panels, (5.2 * panels, 3.8))
    fig = Figure(figsize=size, layout="constrained")
    if panels == 0:
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(0.5, 0.5, "No results committed under results/ yet.\n"
                "Run `python -m ember_utils.experiments.runner ...` and commit its output.",
                ha="center", va="center", fontsize=11)
        caption = ("**No results yet.** This figure summarises the committed result grids under `results/`; "
                   "none were found when the book was built.")
        return ResultsSummary(fig, caption, [])

    axes = fig.subplots(1, panels, squeeze=False)[0]
    model_name = model_dir.name
    shown = f"`{results_root.name}/{model_name}/`"
    found = (["`baselines.csv`"] if (model_dir / "baselines.csv") in sources else []) + (
        [f"{len(run_sources)} run record{'s' if len(run_sources) != 1 else ''} (`<concept>/<method>_seed<k>.json`)"]
        if run_sources else [])
    parts = [f"**Results summary for {model_name}**, drawn when the book was built from {shown}: "
             + " and ".join(found) + "."]
    concepts = sorted(baselines["concept"])
    labels, unusable = {}, []
    for row in baselines.itertuples():
        label = str(getattr(row, "name", row.concept)).replace("_", " ")
        if "usable" in baselines.columns and str(row.usable).lower() in {"false", "0", "no"}:
            label += "\n(too weak)"
            unusable.append(label.split("\n")[0])
        labels[row.concept] = label
    _bars(axes[0], baselines, "concept", concepts, "What the unedited model knows", labels=labels)
    parts.append(f"*Left:* test accuracy of the unedited model on {len(concepts)} concept"
                 f"{'s' if len(concepts) != 1 else ''} (4-way multiple choice; dashed line: chance"
                 + ("; error bars: 95 % bootstrap intervals over questions)." if any(
                     c.endswith("_lo") for c in baselines.columns) else ")."))
    if unusable:
        parts.append(f"The model knows too little about {', '.join(unusable)} to measure an erasure "
                     "(marked *too weak*; the book does not erase it).")
    if runs is not None:
        methods = [UNEDITED] + sorted(runs.method.unique())
        long = pd.concat([runs[runs.state == UNEDITED].assign(method=UNEDITED).drop_duplicates(["concept", "seed"]),
                          runs[runs.state == "edited"]], ignore_index=True)
        per_concept = long.groupby(["method", "concept"], as_index=False)[list(ACC_COLUMNS)].mean()
        n_c, n_s = runs.concept.nunique(), runs.seed.nunique()
        _bars(axes[1], per_concept, "method", methods, f"After erasure ({n_c} concept{'s' if n_c != 1 else ''})",
              points=per_concept)
        text = (f"*Right:* accuracy before and after erasure, mean over {n_c} concept{'s' if n_c != 1 else ''} "
                f"and {n_s} seed{'s' if n_s != 1 else ''} (dots: individual concepts). A good erasure drops the "
                "red bar to chance and leaves the blue and grey bars where they were.")
        unedited_runs = sorted(set(runs[(runs.state == "edited") & ~runs.edited].concept))
        if unedited_runs:
            text += f" No δ passed the selection gates for {', '.join(unedited_runs)}: the model stayed unedited there."
        if runs.fast.any():
            text += " Some runs are FAST smoke runs (reduced data), so their numbers are rough."
        parts.append(text)
    return ResultsSummary(fig, " ".join(parts), sources, baselines, runs)
