"""The intro's results figure reads whatever is committed under results/ and never fails on missing files."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from ember_utils.viz.summary import load_baselines, load_runs, results_summary


def _metrics(concept, similar=0.6, general=0.55):
    return {"acc_concept": concept, "acc_similar": similar, "acc_general": general, "perplexity": 20.0}


def _write_run(root, concept, seed=0, method_file="ember", edited=0.26, fast=False):
    folder = root / "gemma-3-270m" / concept
    folder.mkdir(parents=True, exist_ok=True)
    record = {"concept": concept, "seed": seed, "fast": fast, "test_unedited": _metrics(0.7),
              "test_edited": _metrics(edited, 0.58) if edited is not None else None}
    (folder / f"{method_file}_seed{seed}.json").write_text(json.dumps(record))
    (folder / f"{method_file}_seed{seed}.config.json").write_text(json.dumps({"command": "x"}))


def _write_baselines(root):
    folder = root / "gemma-3-270m"
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"concept": ["harry_potter", "baseball"], "mc_test_acc": [0.7, 0.5],
                  "similar_test_acc": [0.6, 0.55], "general_test_acc": [0.5, 0.5], "open_acc": [0.2, 0.1],
                  "neutral_ppl": [20.0, 20.0]}).to_csv(folder / "baselines.csv", index=False)


def test_no_results_gives_a_placeholder(tmp_path):
    summary = results_summary(tmp_path / "results")
    assert "No results" in summary.caption
    assert summary.sources == [] and summary.figure.axes


def test_baselines_only(tmp_path):
    _write_baselines(tmp_path / "results")
    summary = results_summary(tmp_path / "results")
    assert len(summary.figure.axes) == 1
    assert "2 concepts" in summary.caption and "baselines.csv" in summary.caption
    assert list(summary.baselines.columns) == ["concept", "acc_concept", "acc_similar", "acc_general"]


def test_baselines_and_runs(tmp_path):
    root = tmp_path / "results"
    _write_baselines(root)
    _write_run(root, "harry_potter", seed=0)
    _write_run(root, "harry_potter", seed=1, edited=0.3)
    _write_run(root, "baseball", seed=0, edited=None)  # no δ passed the gates
    _write_run(root, "baseball", seed=0, method_file="elm_ember")
    summary = results_summary(root)
    assert len(summary.figure.axes) == 2
    assert set(summary.runs.method) == {"EMBER", "ELM+EMBER"}
    assert "baseball" in summary.caption and "stayed unedited" in summary.caption
    assert not any(p.name.endswith(".config.json") for p in summary.sources)
    summary.figure.savefig(tmp_path / "fig.png")  # draws without error
    assert (tmp_path / "fig.png").stat().st_size > 1000


def test_runs_without_baselines_use_the_unedited_metrics(tmp_path):
    root = tmp_path / "results"
    _write_run(root, "harry_potter")
    summary = results_summary(root)
    assert summary.baselines["acc_concept"].tolist() == [0.7]
    assert len(summary.figure.axes) == 2


def test_fast_runs_are_dropped_when_a_full_run_exists(tmp_path):
    root = tmp_path / "results"
    _write_run(root, "harry_potter", seed=0, fast=True, edited=0.9)
    _write_run(root, "harry_potter", seed=1, fast=False)
    runs, _ = load_runs(root / "gemma-3-270m")
    assert not runs.fast.any()


def test_bad_baselines_raise_a_clear_error(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "baselines.csv").write_text("name,mc_test_acc\nx,0.5\n")
    with pytest.raises(ValueError, match="no 'concept' column"):
        load_baselines(folder)


def test_png_bytes(tmp_path):
    summary = results_summary(tmp_path / "nothing")
    assert summary.png().startswith(b"\x89PNG") and summary._repr_png_().startswith(b"\x89PNG")


def test_baselines_in_the_baselines_module_format(tmp_path):
    """Columns as written by ``python -m ember_utils.experiments.baselines`` (acc_mc_test, ..., name, usable)."""
    folder = tmp_path / "results" / "gemma-3-270m"
    folder.mkdir(parents=True)
    pd.DataFrame({"concept": ["harry_potter", "baseball"], "name": ["Harry Potter", "Baseball"],
                  "acc_mc_test": [0.56, 0.37], "acc_similar_test": [0.51, 0.43], "acc_general_test": [0.63, 0.63],
                  "usable": [True, False]}).to_csv(folder / "baselines.csv", index=False)
    summary = results_summary(tmp_path / "results")
    assert summary.baselines["acc_concept"].tolist() == [0.56, 0.37]
    ticks = [t.get_text() for t in summary.figure.axes[0].get_xticklabels()]
    assert ticks == ["Baseball\n(too weak)", "Harry Potter"]
    assert "too little about Baseball" in summary.caption
