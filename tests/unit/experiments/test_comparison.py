"""The comparison table from per-seed records: mean ± std over seeds, a single seed's interval, the row order,
the settings-sweep guard against the test split, and the missing-EMBER-record error."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from ember_utils.experiments.compare import (
    COMPARE_RECORD_FORMAT,
    ROWS,
    collect_comparison,
    comparison_done,
    comparison_table,
    ember_gain_table,
    load_edit,
    write_comparison,
)


def _record(folder, seed, shift):
    rows = {}
    for j, name in enumerate(ROWS):
        m = {"acc_concept": 0.5 - 0.05 * j - shift, "acc_concept_lo": 0.4, "acc_concept_hi": 0.6,
             "efficacy": 0.1 * j + shift, "efficacy_lo": 0.0, "efficacy_hi": 0.3, "specificity": 0.95,
             "coherence": 0.97, "score": 0.2, "acc_indirect": 0.4, "train_seconds": 10.0 * j}
        rows[name] = m
    gain = {"diff_efficacy": 0.1 + shift, "diff_efficacy_lo": 0.05 - shift, "diff_efficacy_hi": 0.2,
            "diff_specificity": -0.01, "diff_specificity_lo": -0.03, "diff_specificity_hi": 0.01 - 3 * shift,
            "diff_coherence": 0.0, "diff_coherence_lo": -0.02, "diff_coherence_hi": 0.02}
    rec = {"format": COMPARE_RECORD_FORMAT, "concept": "toy", "seed": seed, "rows": rows, "ember_edit": {"delta": 2.0},
           "ember_gain": {"ELM": gain}}
    (folder / f"comparison_seed{seed}.json").write_text(json.dumps(rec))


def test_table_aggregates_seeds_and_keeps_single_seed_intervals(tmp_path):
    folder = tmp_path / "gemma-3-270m" / "toy"
    folder.mkdir(parents=True)
    _record(folder, 0, 0.0)
    one = comparison_table(collect_comparison("toy", root=tmp_path))
    assert list(one["method"]) == list(ROWS) and (one["n_seeds"] == 1).all()
    assert "acc_concept_lo" in one and "acc_concept_std" not in one
    _record(folder, 1, 0.1)
    (folder / "comparison_seed2.json").write_text(json.dumps({"format": "old"}))  # stale records are ignored
    runs = collect_comparison("toy", root=tmp_path)
    assert sorted(runs["seed"].unique()) == [0, 1]
    two = comparison_table(runs).set_index("method")
    assert two.loc["ELM", "efficacy"] == pytest.approx(0.25)
    assert two.loc["ELM", "efficacy_std"] == pytest.approx(pd.Series([0.2, 0.3]).std())
    assert comparison_done("toy", 0, root=tmp_path) and not comparison_done("toy", 2, root=tmp_path)
    table = write_comparison("toy", root=tmp_path)
    assert (folder / "comparison.csv").exists()
    from ember_utils.viz.comparison import write_comparison_figure

    assert write_comparison_figure("toy", root=tmp_path).stat().st_size > 1000
    assert len(table) == len(ROWS)
    gains = ember_gain_table("toy", root=tmp_path).set_index("seed")
    assert gains.loc[0, "verdict"] == "raises efficacy" and gains.loc[1, "verdict"] == "costs specificity"


def test_load_edit_needs_the_ember_record(tmp_path):
    with pytest.raises(FileNotFoundError, match="runner ember"):
        load_edit("gemma-3-270m", "harry_potter", 0, root=tmp_path)


def test_first_chosen_edit_skips_seeds_without_an_edit(tmp_path):
    """World War II: the committed seed-0 record chose no edit; a seed with an edit is found, none is an error."""
    import shutil

    from ember_utils.experiments.compare import first_chosen_edit
    from ember_utils.paths import results_dir

    dst = tmp_path / "gemma-3-270m" / "world_war_ii"
    dst.mkdir(parents=True)
    shutil.copy(results_dir("gemma-3-270m", "world_war_ii") / "ember_seed0.json", dst)
    with pytest.raises(ValueError, match=r"seed 0: no edit chosen; seed 1: no EMBER record"):
        first_chosen_edit("gemma-3-270m", "world_war_ii", seeds=(0, 1), root=tmp_path)
    src = results_dir("gemma-3-270m", "harry_potter")
    for name in ("ember_seed0.json", "edit_seed0.safetensors"):  # a record whose rule chose an edit, as seed 1
        (dst / name.replace("seed0", "seed1")).write_bytes((src / name).read_bytes())
    edit, record = first_chosen_edit("gemma-3-270m", "world_war_ii", seeds=(0, 1), root=tmp_path)
    assert edit is not None and len(edit) > 0 and record["chosen_delta"] is not None


@pytest.mark.real_model
def test_fast_comparison_runs_every_row_on_the_real_model(real_bridge, tmp_path):
    """FAST comparison of Harry Potter seed 0 on the default model (EMBER edit from the committed record): all six
    rows, the composed models differ from the base ones, the EMBER-gain intervals are recorded."""
    import shutil

    from ember_utils.experiments.compare import run_comparison
    from ember_utils.paths import results_dir

    src = results_dir("gemma-3-270m", "harry_potter")
    dst = tmp_path / "gemma-3-270m" / "harry_potter"
    dst.mkdir(parents=True)
    for name in ("ember_seed0.json", "edit_seed0.safetensors"):
        shutil.copy(src / name, dst / name)
    rec = run_comparison("harry_potter", 0, fast=True, model=real_bridge, root=tmp_path)
    assert list(rec["rows"]) == list(ROWS) and rec["ember_edit"]["delta"] > 0
    assert rec["rows"]["ELM+EMBER"] != rec["rows"]["ELM"] and rec["rows"]["RMU+EMBER"] != rec["rows"]["RMU"]
    assert {"ELM", "RMU"} <= set(rec["ember_gain"]) and "diff_efficacy_lo" in rec["ember_gain"]["ELM"]
    assert comparison_done("harry_potter", 0, root=tmp_path, fast=True)
    assert set(rec["generations"]) >= {"unedited", "ELM", "ELM+EMBER"}
