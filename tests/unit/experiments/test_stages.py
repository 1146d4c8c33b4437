"""The stage cache: a stage runs once per inputs and code version, a changed input recomputes only what depends on
it, and a damaged entry is detected and recomputed."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from ember_utils.experiments.stages import JSON, CorruptEntryError, FrameCodec, StageCache, StateCodec, code_version
from ember_utils.methods.weight_patch import WeightPatch


class Counter:
    def __init__(self):
        self.calls = 0

    def __call__(self, value):
        def compute():
            self.calls += 1
            return value
        return compute


def test_a_stage_runs_once_per_inputs(tmp_path):
    cache, count = StageCache(tmp_path), Counter()
    first = cache.run("sweep", {"delta": 1.0}, count({"chosen": 2.0}))
    again = cache.run("sweep", {"delta": 1.0}, count({"chosen": 999.0}))
    assert (first.cached, again.cached) == (False, True) and again.value == {"chosen": 2.0} and count.calls == 1
    other = cache.run("sweep", {"delta": 2.0}, count({"chosen": 3.0}))
    assert not other.cached and other.key != first.key and count.calls == 2


def test_changing_delta_recomputes_the_edit_not_the_factorization(tmp_path):
    """Two dependent stages: the edit's inputs hold the factorization's key and δ."""
    cache, fac_count, edit_count = StageCache(tmp_path), Counter(), Counter()

    def pipeline(delta):
        fac = cache.run("factorize", {"K": 50, "rho": 0.01, "seed": 0}, fac_count({"atoms": [1, 2]}))
        edit = cache.run("edit", {"factorization": fac.key, "delta": delta}, edit_count({"delta": delta}))
        return fac, edit

    f1, e1 = pipeline(10.0)
    f2, e2 = pipeline(20.0)
    assert f1.key == f2.key and f2.cached and fac_count.calls == 1
    assert e1.key != e2.key and not e2.cached and edit_count.calls == 2
    _, e3 = pipeline(10.0)
    assert e3.cached and e3.key == e1.key and edit_count.calls == 2


def test_code_version_enters_the_key(tmp_path):
    cache = StageCache(tmp_path)
    assert cache.key("s", {}, code=["ember_utils.io"]) != cache.key("s", {}, code=["ember_utils.state"])
    assert cache.key("s", {}, code=["ember_utils.io"]) != cache.key("s", {})
    assert code_version(["ember_utils.io", "ember_utils.state"]) == code_version(["ember_utils.state", "ember_utils.io"])


@pytest.mark.parametrize("damage", ["truncate", "flip", "extra_file", "manifest"])
def test_a_corrupted_entry_is_detected_and_recomputed(tmp_path, damage):
    cache, count = StageCache(tmp_path), Counter()
    res = cache.run("probe", {"layer": 3}, count({"acc": 0.5}))
    value_file = res.path / "value.json"
    if damage == "truncate":
        value_file.write_text(value_file.read_text()[:5])
    elif damage == "flip":
        value_file.write_text(json.dumps({"acc": 0.9}))  # valid JSON, wrong content: only the digest can tell
    elif damage == "extra_file":
        (res.path / "stray.tmp").write_text("x")
    else:
        (res.path / "manifest.json").write_text("{")
    with pytest.raises(CorruptEntryError):
        cache.verify(res.path)
    again = cache.run("probe", {"layer": 3}, count({"acc": 0.5}))
    assert not again.cached and again.value == {"acc": 0.5} and count.calls == 2
    cache.verify(again.path)  # the recomputed entry is intact


def test_an_interrupted_stage_leaves_no_entry(tmp_path):
    cache = StageCache(tmp_path)

    def crash():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.run("elm", {"seed": 0}, crash)
    assert not (tmp_path / "elm").exists() or not any((tmp_path / "elm").iterdir())
    assert not cache.run("elm", {"seed": 0}, lambda: {"ok": 1}).cached


def test_codecs_round_trip(tmp_path):
    cache = StageCache(tmp_path)
    frame = pd.DataFrame({"layer": [0, 1], "acc": [0.25, 1 / 3], "changes": [["a→b"], []]})
    cache.run("table", {}, lambda: frame, FrameCodec)
    back = cache.run("table", {}, lambda: None, FrameCodec)
    assert back.cached
    pd.testing.assert_frame_equal(back.value, frame)
    patch = WeightPatch({"w": torch.arange(6.0).reshape(2, 3)}, {"method": "test"})
    cache.run("patch", {}, lambda: patch, StateCodec(WeightPatch))
    loaded = cache.run("patch", {}, lambda: None, StateCodec(WeightPatch)).value
    assert torch.equal(loaded.weights["w"], patch.weights["w"]) and loaded.meta == {"method": "test"}
    assert cache.run("j", {}, lambda: [1, 2], JSON).value == [1, 2]


def test_bad_stage_names_and_inputs(tmp_path):
    cache = StageCache(tmp_path)
    for bad in ("", "a/b", ".hidden"):
        with pytest.raises(ValueError, match="plain folder names"):
            cache.run(bad, {}, lambda: 1)
    with pytest.raises(TypeError, match="dict"):
        cache.run("s", [1, 2], lambda: 1)
