"""Reading the runner's committed results back."""
import json


def test_collect_ember_results_reads_runner_output(tmp_path):

    from ember_utils.experiments.results import collect_ember_results
    from ember_utils.paths import results_dir

    folder = results_dir("gemma-3-270m", "harry_potter", tmp_path)
    folder.mkdir(parents=True)
    from ember_utils.experiments.results import EMBER_RECORD_FORMAT, mean_std, seed_summary

    for seed, acc in ((0, 0.3), (1, 0.4)):
        (folder / f"ember_seed{seed}.json").write_text(json.dumps({
            "format": EMBER_RECORD_FORMAT, "concept": "harry_potter", "seed": seed, "selected_atoms": [1, 2],
            "n_edit_tokens": 40, "chosen_delta": 2.0, "identified": True, "test_unedited": {"acc_concept": 0.6},
            "test_edited": {"acc_concept": acc, "acc_concept_lo": acc - 0.1, "acc_concept_hi": acc + 0.1,
                            "efficacy": 0.86}}))
    (folder / "ember_seed2.json").write_text(json.dumps({"concept": "harry_potter", "seed": 2}))  # an old record
    (folder / "ember_seed0.config.json").write_text(json.dumps({"command": "python -m ember_utils.experiments.runner ember"}))
    table = collect_ember_results("gemma-3-270m", tmp_path)
    assert len(table) == 2  # the run's config file is not a run; the old-format record is left out
    assert table.loc[0, "acc_concept"] == 0.3 and table.loc[0, "acc_concept_before"] == 0.6
    assert table.loc[1, "acc_concept_hi"] == 0.5 and table.loc[0, "selected_atoms"] == 2
    assert len(collect_ember_results("gemma-3-270m", tmp_path, current_only=False)) == 3
    s = seed_summary(table, ["acc_concept", "efficacy"]).iloc[0]
    assert s["seeds"] == 2 and s["acc_concept_mean"] == 0.35 and abs(s["acc_concept_std"] - 0.0707107) < 1e-6
    assert mean_std(s["acc_concept_mean"], s["acc_concept_std"]) == "0.350 ± 0.071"
    assert mean_std(0.5, float("nan")) == "0.500" and mean_std(float("nan"), 0.1) == "—"
    from ember_utils.experiments.results import ember_table_markdown

    md = ember_table_markdown(table)
    assert "| harry_potter | 0 |" in md and "0.300 [0.200, 0.400]" in md and "0.350 ± 0.071" in md
    assert results_dir("meta-llama/Llama-3.1-8B-Instruct", None, tmp_path).name == "meta-llama__Llama-3.1-8B-Instruct"


def test_grid_summary_counts_fits_with_an_atom(tmp_path):
    import pandas as pd

    from ember_utils.experiments.results import grid_summary

    for concept, selected in (("a", [1, 0, 0, 2]), ("b", [0, 0, 0, 1])):
        folder = tmp_path / "gemma-3-270m" / concept
        folder.mkdir(parents=True)
        pd.DataFrame({"n_atoms": [100, 100, 200, 200], "sparsity": [0.01] * 4, "seed": [0, 1, 0, 1],
                      "n_selected": selected, "top_ratio": [5.0, 3.0, 20.0, 30.0],
                      "tokens_per_atom": [50, 50, 50, 50]}).to_csv(folder / "factorization_seeds.csv", index=False)
    s = grid_summary("gemma-3-270m", root=tmp_path).set_index("n_atoms")
    assert s.loc[100, "fits"] == 4 and s.loc[100, "fits_with_atom"] == 1 and s.loc[100, "concepts_with_atom"] == 1
    assert s.loc[200, "fits_with_atom"] == 2 and s.loc[200, "concepts_with_atom"] == 2
    assert s.loc[200, "median_top_ratio"] == 25.0
    assert grid_summary("gemma-3-270m", root=tmp_path / "none").empty


def test_runner_resumes_only_current_records(tmp_path):
    from ember_utils.experiments.results import EMBER_RECORD_FORMAT
    from ember_utils.experiments.runner import ember_done
    from ember_utils.paths import results_dir

    folder = results_dir("gemma-3-270m", "harry_potter", tmp_path)
    folder.mkdir(parents=True)
    assert not ember_done("harry_potter", 0, root=tmp_path)
    (folder / "ember_seed0.json").write_text(json.dumps({"format": EMBER_RECORD_FORMAT, "fast": False}))
    (folder / "ember_seed1.json").write_text(json.dumps({"format": "v1-or-none", "fast": False}))
    (folder / "ember_seed2.json").write_text("{truncated")
    assert ember_done("harry_potter", 0, root=tmp_path) and not ember_done("harry_potter", 0, root=tmp_path, fast=True)
    assert not ember_done("harry_potter", 1, root=tmp_path) and not ember_done("harry_potter", 2, root=tmp_path)


def test_concept_status_reads_the_committed_records(tmp_path):
    from ember_utils.experiments.results import concept_status

    status = concept_status()
    assert status.loc["harry_potter", "δ seed 0"] == "5" and status.loc["world_war_ii", "δ seed 0"] == "none"
    assert status["example texts"].all() and status.loc["harry_potter", "robustness"]
    empty = concept_status(root=tmp_path)  # no records at all: nothing claimed
    assert (empty["δ seed 0"] == "—").all() and not empty["comparison"].any() and not empty["robustness"].any()


def test_spread_table_shows_the_spread_over_seeds_or_the_single_seed_interval():
    import pandas as pd
    import pytest

    from ember_utils.experiments.compare import aggregate_seeds
    from ember_utils.experiments.results import spread_table

    runs = pd.DataFrame([
        {"method": "unedited", "seed": 0, "acc": 0.5, "acc_lo": 0.4, "acc_hi": 0.6},
        {"method": "unedited", "seed": 1, "acc": 0.7, "acc_lo": 0.6, "acc_hi": 0.8},
        {"method": "EMBER", "seed": 0, "acc": float("nan"), "acc_lo": float("nan"), "acc_hi": float("nan")},
        {"method": "EMBER", "seed": 1, "acc": 0.3, "acc_lo": 0.2, "acc_hi": 0.4},
    ])
    cells = spread_table(aggregate_seeds(runs, ["acc", "absent"]), ["acc", "absent"]).set_index("method")
    assert list(cells.columns) == ["n_seeds", "acc"]
    assert cells.loc["unedited", "acc"] == "0.600 ± 0.141" and cells.loc["unedited", "n_seeds"] == 2
    assert cells.loc["EMBER", "acc"] == "0.300 [0.200, 0.400]"  # the one seed with a value: its interval
    with pytest.raises(ValueError, match="n_seeds"):
        spread_table(pd.DataFrame({"method": ["EMBER"], "acc": [0.3]}), ["acc"])
