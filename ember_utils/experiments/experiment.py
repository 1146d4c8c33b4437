"""One named experiment end to end: EMBER (factorize, δ sweep), ELM and RMU alone and on top of the edit, then
every attack on every row; each stage cached by :class:`~ember_utils.experiments.stages.StageCache`.

A stage's inputs hold the keys of the stages it builds on, so a changed δ recomputes the edit and what was
trained or attacked on it while the factorization, the base methods and the unedited rows stay cached; an
interrupted run resumes at the first unfinished stage. Results: ``robustness_seed<k>.json`` (one row per method
with the accuracy before the attack and after each attack, with intervals) and ``report_seed<k>.html``.

Usage (through the runner)::

    python -m ember_utils.experiments.runner experiment --name default --concept harry_potter --seeds 0 1 2
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..io import atomic_write_json, atomic_write_text, stable_hash
from ..paths import default_cache_dir, results_dir
from .compare import ROWS, aggregate_seeds
from .stages import JSON, Codec, FrameCodec, StageCache, StateCodec

__all__ = ["ExperimentConfig", "EXPERIMENTS", "ATTACKS", "run_experiment", "robustness_row", "ROBUSTNESS_COLUMNS",
           "ROBUSTNESS_FORMAT", "collect_robustness", "robustness_table", "write_robustness", "experiment_done",
           "regained_table", "PAPER_REGAINED"]

ROBUSTNESS_FORMAT = "ember-robustness-v1"
#: the attacks, in the order they run on each row
ATTACKS = ("relearn_full", "relearn_lora", "probe", "prompting", "token_bypass")
#: the row each EMBER row equals when the δ rule chose no edit
BASE_OF = {"EMBER": "unedited", "ELM+EMBER": "ELM", "RMU+EMBER": "RMU"}
#: columns of ``robustness.csv`` (each with ``_lo``/``_hi`` in a single-seed record)
ROBUSTNESS_COLUMNS = ("acc_before", "acc_relearn_full", "acc_relearn_lora", "probe_acc", "prompting_acc",
                      "bypass_acc")


@dataclass(frozen=True)
class ExperimentConfig:
    """What one experiment runs. ``delta=None`` lets the δ rule choose on train/validation; ``fast`` shrinks the
    data and every training loop (a smoke run, never a result); ``*_changes`` change a method's preset."""

    name: str = "default"
    model: str = "gemma-3-270m"
    rows: tuple[str, ...] = ROWS
    attacks: tuple[str, ...] = ATTACKS
    delta: float | None = None
    fast: bool = False
    elm_changes: dict[str, Any] = field(default_factory=dict)
    rmu_changes: dict[str, Any] = field(default_factory=dict)
    relearn_changes: dict[str, Any] = field(default_factory=dict)
    #: keyword arguments of the atom pipeline (``n_atoms``, ``sparsity``, ``rule``); empty = the preset's
    ember_params: dict[str, Any] = field(default_factory=dict)
    probe_layers: tuple[int, ...] | None = None
    fast_questions: int = 12

    def __post_init__(self) -> None:
        unknown = sorted(set(self.rows) - set(ROWS)) + sorted(set(self.attacks) - set(ATTACKS))
        if unknown:
            raise ValueError(f"Unknown rows/attacks {unknown}; rows: {list(ROWS)}, attacks: {list(ATTACKS)}.")
        if self.delta is not None and not self.delta > 0:
            raise ValueError(f"delta must be > 0 or None (the δ rule), got {self.delta}.")

    def replace(self, **changes: Any) -> "ExperimentConfig":
        return dataclasses.replace(self, **changes)


#: named experiments for the runner's ``--name``
EXPERIMENTS: dict[str, ExperimentConfig] = {
    "default": ExperimentConfig(),
    "fast": ExperimentConfig(name="fast", fast=True),
    "ember-only": ExperimentConfig(name="ember-only", rows=("unedited", "EMBER")),
}


# ----------------------------------------------------------------------------------------------- small helpers
def _data_key(concept: Any, common: Any) -> str:
    """Hash of every file of the concept's folder and of the common data the stages read."""
    h = hashlib.sha256()
    for folder in (Path(concept.root), Path(common.root)):
        for path in sorted(folder.glob("*")):
            if path.is_file():
                h.update(path.name.encode())
                h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _fast_concept(concept: Any, n: int) -> Any:
    """The concept with at most ``n`` questions per split and table and ``n`` relearning paragraphs."""
    def cut(df: pd.DataFrame) -> pd.DataFrame:
        if df is None or "split" not in df:
            return df
        return df.groupby("split", group_keys=False).head(n).reset_index(drop=True)

    return dataclasses.replace(concept, mc=cut(concept.mc), indirect_mc=cut(concept.indirect_mc),
                               relearn=concept.relearn.head(n).reset_index(drop=True))


def _optional_state_codec(cls: type) -> Codec[Any]:
    inner = StateCodec(cls)

    def save(value: Any, folder: Path) -> None:
        atomic_write_json(folder / "present.json", {"present": value is not None})
        if value is not None:
            inner.save(value, folder)

    def load(folder: Path) -> Any:
        return inner.load(folder) if json.loads((folder / "present.json").read_text())["present"] else None

    return Codec(save, load, f"optional-{inner.name}")


def _interval(values: np.ndarray, seed: int = 0) -> dict[str, float]:
    from ..eval.intervals import bootstrap_interval

    est, lo, hi = bootstrap_interval(np.asarray(values, float), n_boot=2000, seed=seed)
    return {"": est, "_lo": lo, "_hi": hi}


class _Progress:
    """Prints each stage as it finishes, with the time spent and an estimate of the time left: each stage still to
    run (``plan``, labels ``"<row>: <attack>"`` or a method name) counts the mean time of the computed stages of its
    kind (the attack, or the method), or of all computed stages while none of its kind has run."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.t0 = total, 0, time.perf_counter()
        self.plan: list[str] = []
        self.seconds: dict[str, list[float]] = {}

    @staticmethod
    def _kind(label: str) -> str:
        return label.split(": ")[-1]

    def _left(self) -> float:
        every = [x for xs in self.seconds.values() for x in xs]
        if not every:
            return 0.0
        todo = self.plan[self.done:] if self.plan else [""] * (self.total - self.done)
        return sum(float(np.mean(self.seconds.get(self._kind(label)) or every)) for label in todo)

    def __call__(self, res: Any, label: str) -> None:
        self.done += 1
        if not res.cached:
            self.seconds.setdefault(self._kind(label), []).append(res.seconds)
        print(f"[{self.done}/{self.total}] {label}: {'cached' if res.cached else f'{res.seconds:.0f} s'} "
              f"(elapsed {time.perf_counter() - self.t0:.0f} s, about {self._left() / 60:.0f} min left)", flush=True)


# ----------------------------------------------------------------------------------------------- the run
def run_experiment(config: ExperimentConfig, concept: str, seed: int = 0, *, model: Any = None,
                   cache_root: str | Path | None = None, root: str | Path | None = None,
                   concept_data: Any = None, common_data: Any = None) -> dict:
    """Run ``config`` for ``concept`` and ``seed``: every row, every attack, each a cached stage. Writes
    ``robustness_seed<seed>[_<name>].json`` and ``report_seed<seed>[_<name>].html`` and returns the record."""
    from ..attacks.probing import best_probe, probe_attack
    from ..attacks.prompting import best_prompting, prompting_attack
    from ..attacks.relearn import relearn, relearn_config_for
    from ..attacks.token_bypass import best_bypass, token_bypass_attack
    from ..data import load_common, load_concept
    from ..eval import Evaluator
    from ..methods.compose import elm_trainer, rmu_trainer, train_on_top
    from ..methods.elm import elm_config_for
    from ..methods.elm.train import model_fingerprint
    from ..methods.ember.delta import DELTA_GRID, sweep_delta
    from ..methods.ember.edit import EmbeddingEdit
    from ..methods.ember.pipeline import fit_concept_atoms
    from ..methods.lora import LoraAdapter
    from ..methods.rmu import rmu_config_for
    from ..methods.weight_patch import WeightPatch
    from ..models import load_model
    from ..profiles import run_profile
    from ..state import StackedState

    t_all = time.perf_counter()
    model = model or load_model(config.model)
    c = concept_data or load_concept(concept)
    common = common_data or load_common()
    profile = run_profile(config.fast)
    if config.fast:
        c = _fast_concept(c, config.fast_questions)
    from .accounting import count_tokens

    cache = StageCache(Path(cache_root) if cache_root else default_cache_dir() / "stages",
                       meter=lambda: count_tokens(model))
    base_inputs = {"model": model_fingerprint(model), "data": _data_key(c, common), "concept": concept, "seed": seed,
                   "fast": config.fast}
    forget, retain = list(c.sentences), common.neutral_texts("train")

    # --- EMBER: the unit edit from the atoms, then δ chosen on train questions and neutral validation text
    def factorize() -> Any:
        atoms = fit_concept_atoms(model, c.sentences, retain, concept, seed=seed,
                                  cache_dir=cache.root / "factorizations",
                                  **{**dict(profile.factorization), **config.ember_params})
        if not atoms.selected_atoms:
            return None
        unit = atoms.edit(tokenizer=model.tokenizer)
        unit.meta.update(selected_atoms=atoms.selected_atoms, rule=atoms.rule.describe())
        return unit

    fac = cache.run("factorize", {**base_inputs, **dict(profile.factorization),
                                  **{k: repr(v) for k, v in config.ember_params.items()}}, factorize,
                    _optional_state_codec(EmbeddingEdit), code=["ember_utils.methods.ember.pipeline",
                                                                "ember_utils.methods.ember.factorize",
                                                                "ember_utils.methods.ember.atoms"])
    progress = _Progress(2)
    progress(fac, "factorize")
    unit = fac.value

    def choose_delta() -> dict:
        if unit is None:
            return {"chosen_delta": None, "note": "no atom selected"}
        if config.delta is not None:
            return {"chosen_delta": float(config.delta), "note": "δ fixed by the config"}
        ev = Evaluator(model, c, common, split="train", fast=config.fast, measure_open=False)
        sweep = sweep_delta(model, unit, ev, profile.delta_grid or DELTA_GRID, max_extensions=profile.delta_extensions,
                            progress=False)
        return {"chosen_delta": sweep.chosen_delta, "edge": sweep.edge, "identified": sweep.identified,
                "table": sweep.table.to_dict(orient="records")}

    dsel = cache.run("delta", {"factorize": fac.key, "delta": config.delta, "grid": list(profile.delta_grid or DELTA_GRID)},
                     choose_delta, JSON, code=["ember_utils.methods.ember.delta"])
    progress(dsel, "δ sweep")
    delta = dsel.value["chosen_delta"]
    edit = unit.with_delta(delta) if (unit is not None and delta is not None) else None
    edit_key = stable_hash(fac.key, delta) if edit is not None else None
    trained = [r for r in ("ELM", "ELM+EMBER", "RMU", "RMU+EMBER") if r in config.rows
               and (edit is not None or not r.endswith("+EMBER"))]
    # no edit chosen: a row with EMBER is its base row, so its attacks are the base row's (not recomputed)
    same_as = {r: BASE_OF[r] for r in config.rows if edit is None and r in BASE_OF and BASE_OF[r] in config.rows}
    attacked = [r for r in config.rows if r not in same_as]
    row_attacks = [a for a in config.attacks if a != "token_bypass" or edit is not None]  # the bypass needs an edit
    progress.plan = ["factorize", "δ sweep", *trained, *(f"{row}: {a}" for row in attacked for a in row_attacks)]
    progress.total = len(progress.plan)

    # --- base methods, alone and on top of the edit
    elm_cfg = elm_config_for(config.model, seed=seed, **config.elm_changes)
    rmu_cfg = rmu_config_for(config.model, seed=seed, **config.rmu_changes)
    if config.fast:
        elm_cfg, rmu_cfg = elm_cfg.replace(steps=2, n_fluency_texts=2), rmu_cfg.replace(steps=2)
    states: dict[str, Any] = {"unedited": None, "EMBER": edit}
    keys: dict[str, Any] = {"unedited": None, "EMBER": edit_key}
    trainers = {"ELM": (elm_cfg, LoraAdapter, "ember_utils.methods.elm.train",
                        lambda: elm_trainer(forget, retain, c.name, elm_cfg, cache_dir=cache.root / "fluency")),
                "RMU": (rmu_cfg, WeightPatch, "ember_utils.methods.rmu", lambda: rmu_trainer(forget, retain, rmu_cfg))}
    for base, (cfg, cls, code, trainer) in trainers.items():
        for on_edit in (False, True):
            name = f"{base}+EMBER" if on_edit else base
            if name not in config.rows:
                continue
            if on_edit and edit is None:  # no edit chosen: the stacked row equals the base row
                states[name], keys[name] = states.get(base), keys.get(base)
                continue

            def train(on_edit: bool = on_edit, trainer: Callable = trainer) -> Any:
                if on_edit:
                    stack, _ = train_on_top(model, edit, trainer())
                    return stack.states[-1]
                return trainer()(model)[0]

            res = cache.run(name.lower().replace("+", "-"), {**base_inputs, "config": cfg.to_dict(), "on": keys["EMBER"]
                                                             if on_edit else None}, train, StateCodec(cls),
                            code=[code])
            progress(res, name)
            states[name] = StackedState(edit, res.value) if on_edit else res.value
            keys[name] = res.key

    # --- attacks on every row
    relearn_cfg = relearn_config_for(config.model, seed=seed, **config.relearn_changes)
    if config.fast:
        relearn_cfg = relearn_cfg.replace(n_paragraphs=2, max_length=32, epochs=1, n_evals=2)
    test_sets = {"concept": c.split("mc", "test"), "indirect": c.split("indirect_mc", "test")}
    bypass_ids = edit.touched_tokens if edit is not None else frozenset()
    results: dict[str, dict[str, Any]] = {}
    bypass_memo: dict = {}  # the unedited model's scores on the respelled questions, shared by every row
    for row in attacked:
        state, key = states.get(row), keys.get(row)
        row_inputs = {**base_inputs, "row": row, "state": key}
        out: dict[str, Any] = {}
        for attack in config.attacks:
            if attack.startswith("relearn"):
                mode = attack.split("_")[1]
                rc = relearn_cfg.replace(mode=mode)

                def run_relearn(rc: Any = rc, state: Any = state) -> dict:
                    r = relearn(model, c.relearn_texts, rc, eval_sets=test_sets, state=state)
                    return {"curve": r.curve.to_dict(orient="list"), "correct": {k: v.tolist() for k, v in r.correct.items()},
                            "recovery": r.recovery, "timings": r.timings, "config": rc.to_dict()}

                res = cache.run(f"relearn-{mode}", {**row_inputs, "config": rc.to_dict()}, run_relearn, JSON,
                                code=["ember_utils.attacks.relearn", "ember_utils.eval.mc"])
                out[attack] = res.value
            elif attack == "probe":
                res = cache.run("probe", {**row_inputs, "layers": config.probe_layers},
                                lambda state=state: probe_attack(model, c, layers=config.probe_layers, seed=seed,
                                                                 state=state),
                                FrameCodec, code=["ember_utils.attacks.probing"])
                out[attack] = {"table": res.value, "best": best_probe(res.value)}
            elif attack == "prompting":
                res = cache.run("prompting", row_inputs,
                                lambda state=state: prompting_attack(model, c, seed=seed, state=state),
                                FrameCodec, code=["ember_utils.attacks.prompting", "ember_utils.eval.mc"])
                out[attack] = {"table": res.value, "best": best_prompting(res.value)}
            else:
                if not bypass_ids:
                    continue
                res = cache.run("token-bypass", {**row_inputs, "edit": edit_key},
                                lambda state=state, row=row: token_bypass_attack(model, c, bypass_ids, {row: state}, seed=seed,
                                                                                 unedited_memo=bypass_memo),
                                FrameCodec, code=["ember_utils.attacks.token_bypass", "ember_utils.eval.mc"])
                out[attack] = {"table": res.value, "best": best_bypass(res.value, row)}
            progress(res, f"{row}: {attack}")
        results[row] = out

    results.update({row: results[base] for row, base in same_as.items()})
    rows = {row: robustness_row(results[row]) for row in config.rows}
    record = {"format": ROBUSTNESS_FORMAT, "experiment": config.name, "concept": concept, "seed": seed,
              "model": config.model, "fast": config.fast, "ember_delta": delta, "n_edit_tokens": len(bypass_ids),
              "rows": rows, "details": _details(results), "stages": cache.log,
              "configs": {"elm": elm_cfg.to_dict(), "rmu": rmu_cfg.to_dict(), "relearn": relearn_cfg.to_dict()},
              "command": f"python -m ember_utils.experiments.runner experiment --name {config.name} --concept {concept} "
                         f"--seeds {seed}", "seconds": time.perf_counter() - t_all}
    folder = results_dir(config.model, concept, root)
    stem = _stem(config, seed)
    atomic_write_json(folder / f"robustness_{stem}.json", record)
    from .report import report_html

    atomic_write_text(folder / f"report_{stem}.html", report_html(record))
    return record


def _stem(config: ExperimentConfig, seed: int) -> str:
    return f"seed{seed}" + ("" if config.name == "default" else f"_{config.name}")


def _details(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What the record keeps besides the summary row: curves, recovery, the per-layer and per-attack tables."""
    out: dict[str, Any] = {}
    for row, attacks in results.items():
        d: dict[str, Any] = {}
        for name, value in attacks.items():
            if name.startswith("relearn"):
                d[name] = {k: value[k] for k in ("curve", "recovery", "timings")}
            else:
                d[name] = value["table"].to_dict(orient="records")
        out[row] = d
    return out


def robustness_row(attacks: dict[str, Any]) -> dict[str, float]:
    """The summary of one row: accuracy on the concept's test questions before any attack (the relearning
    curve's step 0) and after each attack, with 95 % bootstrap intervals over questions."""
    row: dict[str, Any] = {}
    for mode in ("full", "lora"):
        r = attacks.get(f"relearn_{mode}")
        if r is None:
            continue
        curve = pd.DataFrame(r["curve"])
        if "acc_before" not in row and len(curve) and curve["step"].iloc[0] == 0:
            row["acc_before"] = float(curve["acc_concept"].iloc[0])
        for suffix, v in _interval(np.asarray(r["correct"]["concept"], float)).items():
            row[f"acc_relearn_{mode}{suffix}"] = v
        row[f"acc_indirect_relearn_{mode}"] = float(np.mean(r["correct"]["indirect"]))
        for k, v in (r.get("recovery") or {}).items():
            row[f"relearn_{mode}_{k}"] = v
    if "probe" in attacks:
        b = attacks["probe"]["best"]
        row.update(probe_acc=b.get("probe_acc"), probe_acc_lo=b.get("probe_acc_lo"), probe_acc_hi=b.get("probe_acc_hi"),
                   probe_layer=b.get("layer"), probe_control=b.get("control_acc"))
    if "prompting" in attacks:
        b = attacks["prompting"]["best"]
        row.update(prompting_acc=b.get("accuracy"), prompting_acc_lo=b.get("accuracy_lo"),
                   prompting_acc_hi=b.get("accuracy_hi"), prompting_attack=b.get("attack"))
    if "token_bypass" in attacks:
        b = attacks["token_bypass"]["best"]
        row.update(bypass_acc=b.get("accuracy"), bypass_acc_lo=b.get("accuracy_lo"), bypass_acc_hi=b.get("accuracy_hi"),
                   bypass_strategy=b.get("strategy"), bypass_original_acc=b.get("original_accuracy"),
                   bypass_unedited_acc=b.get("unedited_accuracy"), bypass_n=b.get("n_clean"))
    return row


def experiment_done(concept: str, seed: int, config: ExperimentConfig, root: str | Path | None = None) -> bool:
    path = results_dir(config.model, concept, root) / f"robustness_{_stem(config, seed)}.json"
    try:
        return json.loads(path.read_text()).get("format") == ROBUSTNESS_FORMAT
    except (FileNotFoundError, json.JSONDecodeError):
        return False


def collect_robustness(concept: str, model_name: str = "gemma-3-270m", root: str | Path | None = None,
                       experiment: str = "default") -> pd.DataFrame:
    """One row per (seed, method) from the concept's ``robustness_seed*.json`` of ``experiment``."""
    rows = []
    for path in sorted(results_dir(model_name, concept, root).glob("robustness_seed*.json")):
        rec = json.loads(path.read_text())
        if rec.get("format") != ROBUSTNESS_FORMAT or rec.get("experiment") != experiment:
            continue
        for method, m in rec["rows"].items():
            rows.append({"concept": concept, "seed": rec["seed"], "method": method, **m})
    return pd.DataFrame(rows)


def robustness_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per method: mean (and std over seeds, or the single seed's interval) of :data:`ROBUSTNESS_COLUMNS`."""
    return aggregate_seeds(runs, (*ROBUSTNESS_COLUMNS, "probe_layer"))


def write_robustness(concept: str, model_name: str = "gemma-3-270m", root: str | Path | None = None) -> pd.DataFrame:
    """``robustness.csv``: the table over the concept's finished seeds of the default experiment."""
    table = robustness_table(collect_robustness(concept, model_name, root))
    atomic_write_text(results_dir(model_name, concept, root) / "robustness.csv", table.to_csv(index=False))
    return table


#: the paper's headline (Llama-3.1-8B-Instruct, relearning attack): accuracy regained with EMBER at most this,
#: prior methods alone in this range (fractions of the unedited accuracy)
PAPER_REGAINED = {"with_ember_at_most": 0.35, "without_ember_range": (0.70, 0.76), "model": "Llama-3.1-8B-Instruct"}


def regained_table(table: pd.DataFrame, attack: str = "acc_relearn_full", chance: float = 0.25) -> pd.DataFrame:
    """Per base method, with and without EMBER: raw accuracy after ``attack`` ("regained accuracy" as the paper
    reports it) and normalized, (after − chance) / (unedited before − chance), i.e. the share of the unedited
    model's above-chance accuracy that the attack brings back (1 = all of it)."""
    rows = table.set_index("method")
    if "unedited" not in rows.index or attack not in rows:
        raise ValueError(f"regained_table needs an 'unedited' row and a {attack!r} column.")
    ref = float(rows.loc["unedited", "acc_before"]) - chance
    out = []
    for base in ("EMBER", "ELM", "RMU"):
        for name in ((base,) if base == "EMBER" else (base, f"{base}+EMBER")):
            if name not in rows.index:
                continue
            after = float(rows.loc[name, attack])
            out.append({"method": name, "acc_before": float(rows.loc[name, "acc_before"]), "acc_after": after,
                        "regained_normalized": (after - chance) / ref if ref > 0 else float("nan"),
                        "with_ember": name.endswith("EMBER")})
    return pd.DataFrame(out)
