"""Reading the runner's committed results back."""
import json


def test_collect_ember_results_reads_runner_output(tmp_path):

    from ember_utils.experiments.results import collect_ember_results
    from ember_utils.paths import results_dir

    folder = results_dir("gemma-3-270m", "harry_potter", tmp_path)
    folder.mkdir(parents=True)
    (folder / "ember_seed0.json").write_text(json.dumps({
        "concept": "harry_potter", "seed": 0, "selected_atoms": [1, 2], "n_edit_tokens": 40, "chosen_delta": 2.0,
        "test_unedited": {"acc_concept": 0.6}, "test_edited": {"acc_concept": 0.3, "efficacy": 0.86}}))
    (folder / "ember_seed0.config.json").write_text(json.dumps({"command": "python -m ember_utils.experiments.runner ember"}))
    table = collect_ember_results("gemma-3-270m", tmp_path)
    assert len(table) == 1  # the run's config file is not a run
    assert table.loc[0, "concept_acc_after"] == 0.3 and table.loc[0, "selected_atoms"] == 2
    assert results_dir("meta-llama/Llama-3.1-8B-Instruct", None, tmp_path).name == "meta-llama__Llama-3.1-8B-Instruct"
