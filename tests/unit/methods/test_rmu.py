"""RMU on tiny models: training moves the layer's activations toward c·u on forget text and not on retain text;
activations are read through the bridge and match the HF hidden states; the model is unchanged afterwards."""
from __future__ import annotations

import pytest
import torch

from ember_utils.methods.rmu import RMUConfig, _batch, _content_mask, activation_shift, layer_activations, train_rmu
from helpers.tiny_models import PRESET_ARCHITECTURES, boot_bridge_as, bpe_tokenizer, build_tiny_bridge

FORGET = ["Harry Potter is a wizard at Hogwarts", "the wand of the wizard Harry", "Hogwarts is a school of magic"]
RETAIN = ["the house is on the street", "a cat sat on the mat", "the weather is nice today", "we went home late"]


def _dist(bridge, texts, layer, target=None, ref=None):
    ids, att = _batch(bridge.tokenizer, texts, 16)
    with torch.no_grad():
        h = layer_activations(bridge, ids, att, layer)
    m = _content_mask(att).bool()
    if ref is not None:
        return (h[m] - ref[m]).norm(dim=-1).mean().item(), h
    return (h[m] - target).norm(dim=-1).mean().item(), h


@pytest.mark.parametrize("hf_id", sorted(PRESET_ARCHITECTURES))
def test_layer_activations_match_the_hf_hidden_states(hf_id):
    tok = bpe_tokenizer()
    bridge = boot_bridge_as(hf_id, PRESET_ARCHITECTURES[hf_id](len(tok), n_layers=3), tok)
    ids, att = _batch(tok, FORGET, 16)
    with torch.no_grad():
        h = layer_activations(bridge, ids, att, 1)
        hs = bridge.original_model(ids, attention_mask=att, output_hidden_states=True).hidden_states[2]
    m = att.bool()
    torch.testing.assert_close(h[m], hs[m], atol=1e-4, rtol=1e-4)


def test_rmu_moves_forget_activations_toward_cu_and_keeps_retain_ones():
    bridge = build_tiny_bridge(n_layers=3)
    cfg = RMUConfig(layer=1, update_layers=(0, 1), steering=2.0, alpha=20.0, steps=150, lr=5e-3, batch_forget=3,
                    batch_retain=4, max_length=16)
    before = {n: p.detach().clone() for n, p in bridge.original_model.named_parameters()}
    _, r0 = _dist(bridge, RETAIN, 1, target=0.0)
    res = train_rmu(bridge, FORGET, RETAIN, cfg)
    assert all(torch.equal(before[n], p) for n, p in bridge.original_model.named_parameters())  # unchanged after
    target = res.steering_vector
    f_before, _ = _dist(bridge, FORGET, 1, target)
    with res.patch.applied_to(bridge):
        f_after, _ = _dist(bridge, FORGET, 1, target)
        r_shift, _ = _dist(bridge, RETAIN, 1, ref=r0)
    assert f_after < 0.7 * f_before, (f_before, f_after)
    # retain activations move far less than forget ones (relative to how far forget ones moved toward c·u)
    assert r_shift < 0.25 * (f_before - f_after), (r_shift, f_before, f_after)
    h = res.history
    assert h["forget"].iloc[-5:].mean() < h["forget"].iloc[:5].mean()
    shift = activation_shift(bridge, res, {"forget": FORGET, "retain": RETAIN}).set_index("texts")
    assert shift.loc["forget", "dist_to_cu_after"] == pytest.approx(f_after, rel=1e-4)
    assert shift.loc["forget", "dist_to_cu_before"] == pytest.approx(f_before, rel=1e-4)
    assert shift.loc["retain", "moved"] == pytest.approx(r_shift, rel=1e-4)
    assert set(res.patch.weights) == {"model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"}


def test_rmu_config_errors(tiny_bridge):
    with pytest.raises(ValueError, match="at or below"):
        RMUConfig(layer=1, update_layers=(2,))
    with pytest.raises(ValueError, match="does not exist"):
        train_rmu(tiny_bridge, FORGET, RETAIN, RMUConfig(layer=5, update_layers=(5,)))
    with pytest.raises(ValueError, match="forget texts"):
        train_rmu(tiny_bridge, [], RETAIN)
