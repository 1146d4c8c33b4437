"""Every preset's architecture, offline: a tiny random model of the same family (Gemma 3, Gemma 2 with soft-capping
and sliding windows, Llama untied and unscaled) boots in the bridge, the packed MC scorer equals the naive one,
an embedding edit leaves W_U bit-identical, and the hub loader works in bfloat16. These are the only checks the
GPU presets get on a machine without a GPU or network."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from ember_utils import models
from ember_utils.eval import score_mc, score_mc_naive
from ember_utils.interp.embeddings import embedding_scale
from helpers.states import noise_edit
from helpers.tiny_models import PRESET_ARCHITECTURES, boot_bridge_as, bpe_tokenizer
from helpers.toy_data import SCORE_COLS, toy_frame

ARCHS = sorted(PRESET_ARCHITECTURES)
#: the hub preset with this architecture (the offline default has its own loader, tested on the real model)
LOADABLE_PRESET = {"google/gemma-3-270m": "google/gemma-3-270m-it"}


@pytest.fixture(scope="module")
def tok():
    return bpe_tokenizer()


def _bridge(hf_id, tok, **kw):
    model = PRESET_ARCHITECTURES[hf_id](len(tok), **kw)
    return boot_bridge_as(hf_id, model, tok), model


@pytest.mark.parametrize("hf_id", ARCHS)
def test_boots_and_matches_the_hf_forward(hf_id, tok):
    bridge, model = _bridge(hf_id, tok)
    ids = tok(["Harry Potter is a wizard who studies at Hogwarts."], return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(bridge(ids), model(ids).logits, atol=1e-5)
    scale = embedding_scale(bridge)
    d = model.config.hidden_size
    expected = 1.0 if hf_id.startswith("meta-llama") else math.sqrt(d)  # Gemma scales by √d_model, Llama does not
    assert scale == pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize("hf_id", ARCHS)
def test_packed_mc_scorer_equals_naive(hf_id, tok):
    bridge, _ = _bridge(hf_id, tok)
    q = toy_frame()
    fast = score_mc(bridge, q, max_row_tokens=64, batch_tokens=128)
    slow = score_mc_naive(bridge, q)
    torch.testing.assert_close(torch.tensor(fast[SCORE_COLS].to_numpy(float)),
                               torch.tensor(slow[SCORE_COLS].to_numpy(float)), atol=1e-4, rtol=0)
    assert list(fast["predicted"]) == list(slow["predicted"])


@pytest.mark.parametrize("hf_id", ARCHS)
def test_embedding_edit_leaves_unembedding_bit_identical(hf_id, tok):
    bridge, model = _bridge(hf_id, tok)
    assert model.get_input_embeddings().weight.data_ptr() != model.lm_head.weight.data_ptr()
    W_U = model.lm_head.weight.detach().clone()
    W_E = bridge.W_E.detach().clone()
    edit = noise_edit(bridge, [5, 9, 17], scale=2.0)
    with edit.applied_to(bridge):
        assert not torch.equal(bridge.W_E, W_E)
        assert torch.equal(model.lm_head.weight, W_U)
    assert torch.equal(bridge.W_E, W_E)


@pytest.mark.parametrize("hf_id", ARCHS)
def test_hub_loader_in_bfloat16(hf_id, tok, tmp_path, monkeypatch):
    """``load_model`` on a preset whose hub copy is a local folder: bf16 weights, untied, booted in the bridge."""
    folder = tmp_path / "hub_copy"
    model = PRESET_ARCHITECTURES[hf_id](len(tok), tie=True) if "gemma" in hf_id else PRESET_ARCHITECTURES[hf_id](len(tok))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    preset = models.get_preset(LOADABLE_PRESET.get(hf_id, hf_id))
    monkeypatch.setitem(models.PRESETS, preset.name, dataclasses.replace(preset, hf_id=str(folder), gated=False))
    bridge = models.load_model(preset.name, device="cpu", dtype="bfloat16", check_memory=False)
    hf = models.hf_model_of(bridge)
    assert next(hf.parameters()).dtype == torch.bfloat16 and bridge.W_E.dtype == torch.bfloat16
    assert hf.get_input_embeddings().weight.data_ptr() != hf.lm_head.weight.data_ptr()
    ids = tok(["The cat sat on the mat."], return_tensors="pt").input_ids
    with torch.no_grad():
        logits = bridge(ids)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()
