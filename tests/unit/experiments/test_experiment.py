"""The stage-cached experiment on a tiny model: every row and attack runs, a second run is all cache hits with the
same record, a changed δ recomputes the edit's stages and not the factorization, an interrupted run resumes, a
damaged entry is recomputed."""
from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from ember_utils.experiments.experiment import (
    ATTACKS,
    ExperimentConfig,
    collect_robustness,
    experiment_done,
    robustness_table,
    run_experiment,
    write_robustness,
)
from ember_utils.experiments.report import summary_frame
from ember_utils.methods.ember.atoms import RatioRule
from ember_utils.methods.lora import LoraSpec
from helpers.toy_data import toy_concept_and_common

ROWS = ("unedited", "EMBER", "ELM", "ELM+EMBER", "RMU", "RMU+EMBER")


def tiny_config(**changes):
    base = ExperimentConfig(
        name="tiny", rows=ROWS, attacks=ATTACKS, delta=4.0, fast=True, fast_questions=4,
        ember_params={"n_atoms": 4, "sparsity": 0.2, "max_iter": 40, "patience": 10, "rule": RatioRule(1e-9)},
        elm_changes={"lora": LoraSpec(rank=2, layers=(0, 1)), "top_k": 4, "max_length": 16, "fluency_tokens": 4},
        rmu_changes={"layer": 1, "update_layers": (0, 1), "max_length": 16},
        relearn_changes={"lora_rank": 2}, probe_layers=(0, 1))
    return base.replace(**changes)


@pytest.fixture
def setup(fresh_tiny_bridge, tmp_path):
    concept, common = toy_concept_and_common(fresh_tiny_bridge)
    concept = concept.__class__(**{**concept.__dict__, "relearn": concept.relearn.assign(text=[
        "Harry Potter studies magic at Hogwarts with his friends Ron and Hermione."])})
    kw = dict(model=fresh_tiny_bridge, cache_root=tmp_path / "cache", root=tmp_path / "results",
              concept_data=concept, common_data=common)
    return kw, tmp_path


def stages_of(record, cached):
    return sorted({s["stage"] for s in record["stages"] if s["cached"] == cached})


def test_experiment_runs_every_row_and_attack_then_resumes_from_the_cache(setup):
    kw, tmp_path = setup
    cfg = tiny_config()
    first = run_experiment(cfg, "toy", 0, **kw)
    assert list(first["rows"]) == list(ROWS) and first["ember_delta"] == 4.0 and first["n_edit_tokens"] > 0
    for row in first["rows"].values():
        assert {"acc_before", "acc_relearn_full", "acc_relearn_lora", "probe_acc", "prompting_acc"} <= set(row)
        assert 0 <= row["acc_before"] <= 1
    assert {"factorize", "delta", "elm", "elm-ember", "rmu", "rmu-ember", "relearn-full", "relearn-lora", "probe",
            "prompting", "token-bypass"} <= set(stages_of(first, cached=False))
    assert experiment_done("toy", 0, cfg, root=tmp_path / "results")
    page = (tmp_path / "results" / "gemma-3-270m" / "toy" / "report_seed0_tiny.html").read_text()
    assert "Erasure report card" in page and "RMU+EMBER" in page and "--name tiny" in page
    assert len(summary_frame(first)) == len(ROWS)

    again = run_experiment(cfg, "toy", 0, **kw)  # every stage from the cache, the same numbers
    assert stages_of(again, cached=False) == []
    assert json.dumps(again["rows"], sort_keys=True) == json.dumps(first["rows"], sort_keys=True)


def test_changing_delta_recomputes_the_edit_stages_not_the_factorization(setup):
    kw, _ = setup
    cfg = tiny_config(rows=("unedited", "EMBER", "RMU", "RMU+EMBER"), attacks=("prompting",))
    run_experiment(cfg, "toy", 0, **kw)
    second = run_experiment(cfg.replace(delta=8.0), "toy", 0, **kw)
    recomputed = {(s["stage"]) for s in second["stages"] if not s["cached"]}
    cached = {(s["stage"]) for s in second["stages"] if s["cached"]}
    assert "factorize" in cached and "rmu" in cached  # nothing about them changed
    assert {"delta", "rmu-ember", "prompting"} <= recomputed  # the edit, what was trained and attacked on it
    prompting = [s for s in second["stages"] if s["stage"] == "prompting"]
    assert sum(not s["cached"] for s in prompting) == 2  # EMBER and RMU+EMBER; unedited and RMU stay cached


@dataclass
class NoAtomRule:
    """Selects no atom, so the run has no edit."""

    def select(self, scores, codes=None, vocab=None):
        return scores["ratio"] != scores["ratio"]

    def describe(self) -> str:
        return "no atom"


def test_without_an_edit_the_ember_rows_reuse_their_base_rows_attacks(setup):
    kw, _ = setup
    cfg = tiny_config(rows=("unedited", "EMBER", "RMU", "RMU+EMBER"), attacks=("prompting", "token_bypass"),
                      ember_params={**tiny_config().ember_params, "rule": NoAtomRule()})
    record = run_experiment(cfg, "toy", 0, **kw)
    assert record["ember_delta"] is None and record["n_edit_tokens"] == 0
    stages = [s["stage"] for s in record["stages"]]
    assert stages.count("prompting") == 2 and "rmu-ember" not in stages and "token-bypass" not in stages
    assert record["rows"]["EMBER"] == record["rows"]["unedited"] and record["rows"]["RMU+EMBER"] == record["rows"]["RMU"]


def test_an_interrupted_run_resumes_and_a_damaged_entry_is_recomputed(setup, monkeypatch):
    kw, tmp_path = setup
    cfg = tiny_config(rows=("unedited", "EMBER"), attacks=("relearn_full", "prompting"))
    import ember_utils.attacks.prompting as prompting

    real = prompting.prompting_attack
    calls = {"n": 0}

    def crash_on_second(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(prompting, "prompting_attack", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, "toy", 0, **kw)
    monkeypatch.setattr(prompting, "prompting_attack", real)
    resumed = run_experiment(cfg, "toy", 0, **kw)
    fresh = {s["stage"] + str(i) for i, s in enumerate(resumed["stages"]) if not s["cached"]}
    assert len(fresh) == 1  # only the stage that was interrupted runs again
    entry = next((tmp_path / "cache" / "relearn-full").iterdir())
    (entry / "value.json").write_text((entry / "value.json").read_text().replace("0", "1", 1))
    healed = run_experiment(cfg, "toy", 0, **kw)
    assert [s["stage"] for s in healed["stages"] if not s["cached"]] == ["relearn-full"]
    assert json.dumps(healed["rows"], sort_keys=True) == json.dumps(resumed["rows"], sort_keys=True)


def test_robustness_table_over_seeds(setup):
    kw, tmp_path = setup
    cfg = tiny_config(name="default", rows=("unedited", "EMBER"), attacks=("relearn_full", "token_bypass"))
    for seed in (0, 1):
        run_experiment(cfg, "toy", seed, **kw)
    runs = collect_robustness("toy", root=tmp_path / "results")
    assert len(runs) == 4 and set(runs["method"]) == {"unedited", "EMBER"}
    table = robustness_table(runs)
    assert list(table["method"]) == ["unedited", "EMBER"] and (table["n_seeds"] == 2).all()
    assert "acc_relearn_full_std" in table
    assert (tmp_path / "results" / "gemma-3-270m" / "toy").exists()
    written = write_robustness("toy", root=tmp_path / "results")
    assert len(written) == 2


def test_config_errors():
    with pytest.raises(ValueError, match="Unknown rows/attacks"):
        ExperimentConfig(attacks=("jailbreak",))
    with pytest.raises(ValueError, match="delta"):
        ExperimentConfig(delta=0)


def test_regained_table_normalizes_against_the_unedited_model():
    import pandas as pd

    from ember_utils.experiments.experiment import regained_table

    t = pd.DataFrame({"method": ["unedited", "EMBER", "ELM", "ELM+EMBER"], "acc_before": [0.75, 0.35, 0.5, 0.3],
                      "acc_relearn_full": [0.8, 0.5, 0.75, 0.25]})
    r = regained_table(t).set_index("method")
    assert r.loc["EMBER", "regained_normalized"] == pytest.approx(0.5)
    assert r.loc["ELM", "regained_normalized"] == pytest.approx(1.0)
    assert r.loc["ELM+EMBER", "regained_normalized"] == pytest.approx(0.0)
    assert list(r["with_ember"]) == [True, False, True]
    with pytest.raises(ValueError, match="unedited"):
        regained_table(t[t.method != "unedited"])


def test_progress_estimates_each_remaining_stage_by_its_kind(capsys):
    from types import SimpleNamespace

    from ember_utils.experiments.experiment import _Progress

    p = _Progress(5)
    p.plan = ["ELM", "unedited: probe", "unedited: relearn_full", "EMBER: probe", "EMBER: relearn_full"]
    p(SimpleNamespace(cached=False, seconds=600.0), "ELM")
    p(SimpleNamespace(cached=False, seconds=60.0), "unedited: probe")
    p(SimpleNamespace(cached=False, seconds=180.0), "unedited: relearn_full")
    # left: one probe (60 s) and one relearn (180 s), not 2 × the mean of all stages (560 s)
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith("about 4 min left)")
    p(SimpleNamespace(cached=True, seconds=0.0), "EMBER: probe")
    assert "cached" in capsys.readouterr().out
