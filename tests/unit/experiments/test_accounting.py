"""Token accounting: every token that enters the model is counted once, on the training side when gradients are
on and on the forward side otherwise, through the bridge and through the HF model alike; the stage cache keeps
the counts of the run that computed a stage."""
from __future__ import annotations

import torch

from ember_utils.eval import score_mc
from ember_utils.experiments.accounting import count_tokens
from ember_utils.experiments.stages import JSON, StageCache
from ember_utils.models import hf_model_of
from helpers.tiny_models import build_tiny_bridge


def test_counts_training_and_forward_tokens_separately():
    bridge = build_tiny_bridge()
    hf = hf_model_of(bridge)
    ids = torch.randint(0, 50, (3, 7))
    with count_tokens(bridge) as counted:
        hf(input_ids=ids, labels=ids).loss.backward()   # a training forward: 21 tokens
        with torch.no_grad():
            bridge(ids[:2, :5])                           # an evaluation forward through the bridge: 10 tokens
    assert (counted.trained, counted.forward, counted.calls) == (21, 10, 2)
    with torch.no_grad():
        hf(input_ids=ids)
    assert counted.forward == 10, "the hook must come off when the block ends"


def test_scoring_counts_as_forward_only():
    bridge = build_tiny_bridge()
    questions = [{"question": "a b c", "options": ["d", "e", "f", "g"], "answer": 0}]
    with count_tokens(bridge) as counted:
        score_mc(bridge, questions)
    assert counted.trained == 0 and counted.forward > 0


def test_stage_cache_records_the_meter_and_keeps_it_for_cached_reads(tmp_path):
    bridge = build_tiny_bridge()
    cache = StageCache(tmp_path, meter=lambda: count_tokens(bridge))

    def compute():
        with torch.no_grad():
            bridge(torch.zeros(2, 4, dtype=torch.long))
        return {"done": True}

    cache.run("probe", {"row": "EMBER"}, compute, JSON)
    cache.run("probe", {"row": "EMBER"}, compute, JSON)
    first, again = cache.log
    assert first["counts"] == {"trained": 0, "forward": 8, "calls": 1} and not first["cached"]
    assert again["cached"] and again["counts"] == first["counts"] and again["seconds"] == 0.0
    assert again["computed_seconds"] == first["computed_seconds"] > 0
