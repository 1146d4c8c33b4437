"""The edit's trace inside the model: the residual stream changes first at the edited positions only and then
spreads forward (never backward: attention is causal); attention weights on edited keys are read per head; the
logit lens under several states stacks the per-state tables."""
from __future__ import annotations

import numpy as np
import pytest

from ember_utils.interp.attention import attention_to_tokens
from ember_utils.interp.logit_lens import logit_lens, logit_lens_states
from ember_utils.interp.residual import residual_difference
from ember_utils.viz.widgets import attention_view
from helpers.states import noise_edit

TEXT = "the cat sat on the mat and the dog ran"


def _edited_id(bridge):
    return int(bridge.to_tokens(TEXT)[0, 3])  # a token in the middle of the text


def test_residual_difference_starts_at_the_edited_positions_and_spreads_forward(tiny_bridge):
    tid = _edited_id(tiny_bridge)
    edit = noise_edit(tiny_bridge, [tid], scale=5.0)
    diff = residual_difference(tiny_bridge, TEXT, edit)
    assert set(diff["layer"]) == set(range(-1, tiny_bridge.cfg.n_layers))
    embed = diff[diff["layer"] == -1]
    assert (embed.loc[embed["edited"], "relative_change"] > 0.1).all()
    assert (embed.loc[~embed["edited"], "relative_change"] == 0).all()
    first = int(diff.loc[diff["edited"], "position"].min())
    before = diff[diff["position"] < first]
    assert np.allclose(before["relative_change"], 0, atol=1e-6)  # causal: earlier positions never change
    later = diff[(diff["layer"] == tiny_bridge.cfg.n_layers - 1) & (diff["position"] > first) & ~diff["edited"]]
    assert (later["relative_change"] > 0).any()  # ... later ones do, through attention
    with pytest.raises(ValueError, match="needs a state"):
        residual_difference(tiny_bridge, TEXT, None)


def test_attention_to_tokens(tiny_bridge):
    tokens = tiny_bridge.to_tokens(TEXT)[0].tolist()
    tid = _edited_id(tiny_bridge)
    table = attention_to_tokens(tiny_bridge, TEXT, [tid])
    assert len(table) == tiny_bridge.cfg.n_layers * tiny_bridge.cfg.n_heads
    assert table["attention"].between(0, 1).all() and (table["attention"] > 0).any()
    everything = attention_to_tokens(tiny_bridge, TEXT, set(tokens))
    assert np.allclose(everything["attention"], 1.0, atol=1e-5)  # a pattern row sums to one
    nothing = attention_to_tokens(tiny_bridge, TEXT, [max(tokens) + 1])
    assert (nothing["attention"] == 0).all()
    edit = noise_edit(tiny_bridge, [tid], scale=5.0)
    assert not np.allclose(attention_to_tokens(tiny_bridge, TEXT, [tid], state=edit)["attention"], table["attention"])
    html = attention_view(tiny_bridge, TEXT, layer=0).data
    assert "L0H0" in html and "cat" in html
    with pytest.raises(ValueError, match="layer"):
        attention_view(tiny_bridge, TEXT, layer=tiny_bridge.cfg.n_layers)


def test_logit_lens_states(tiny_bridge):
    tid = _edited_id(tiny_bridge)
    edit = noise_edit(tiny_bridge, [tid], scale=5.0)
    target = tiny_bridge.to_str_tokens(TEXT, prepend_bos=False)[-1]
    both = logit_lens_states(tiny_bridge, TEXT, [target], {"unedited": None, "EMBER": edit})
    plain = logit_lens(tiny_bridge, TEXT, [target])
    assert set(both["state"]) == {"unedited", "EMBER"} and len(both) == 2 * len(plain)
    np.testing.assert_allclose(both.loc[both.state == "unedited", "prob"].to_numpy(), plain["prob"].to_numpy())
    assert not np.allclose(both.loc[both.state == "EMBER", "prob"].to_numpy(), plain["prob"].to_numpy())
