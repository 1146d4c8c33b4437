"""Before/after tables of two evaluated states."""
from __future__ import annotations

import pytest

from ember_utils import eval as E
from ember_utils.eval.compare import flipped_questions, generation_changes, neutral_change_by_topic, open_answer_changes
from helpers.states import noise_edit
from helpers.toy_data import toy_concept_and_common


@pytest.fixture(scope="module")
def pair():
    from helpers.tiny_models import build_tiny_bridge

    bridge = build_tiny_bridge()
    concept, common = toy_concept_and_common(bridge)
    ev = E.Evaluator(bridge, concept, common, gen_max_new_tokens=5, open_max_new_tokens=3)
    after = ev.evaluate(noise_edit(bridge, list(range(4, len(bridge.tokenizer))), scale=5.0), name="broken")
    return ev, concept, common, after


def test_flipped_questions_agree_with_the_accuracies(pair):
    ev, concept, _, after = pair
    flips = flipped_questions(ev.baseline, after, concept.mc)
    assert len(flips) == ev.baseline.metrics["n_concept"]
    assert flips["before"].mean() == pytest.approx(ev.baseline.metrics["acc_concept"])
    assert flips["after"].mean() == pytest.approx(after.metrics["acc_concept"])
    assert (flips["flip"] == "right → wrong").sum() == (flips.before & ~flips.after).sum()
    assert flips["flip"].ne("").sum() == (flips.before != flips.after).sum()
    with pytest.raises(ValueError, match="No MC set"):
        flipped_questions(ev.baseline, after, concept.mc, which="nope")
    with pytest.raises(TypeError, match="EvalResult"):
        flipped_questions(ev.baseline, after.metrics, concept.mc)


def test_open_neutral_and_generation_tables(pair):
    ev, concept, common, after = pair
    op = open_answer_changes(ev.baseline, after, concept.open)
    assert op["ok before"].mean() == pytest.approx(ev.baseline.metrics["acc_open"])
    assert op["ok after"].mean() == pytest.approx(after.metrics["acc_open"])
    neu = neutral_change_by_topic(ev.baseline, after, common.neutral)
    assert neu["topic"].notna().all() and neu["delta_logprob"].is_monotonic_increasing
    assert (neu["delta_logprob"] != 0).any()  # every token was perturbed
    gens = generation_changes(ev.baseline, after)
    assert list(gens.columns) == ["prompt", "unedited", "fluency before", "edited", "fluency after", "drop"]
    assert gens["drop"].is_monotonic_decreasing
