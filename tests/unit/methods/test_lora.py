"""The LoRA adapter state: peft injected into a booted bridge, base weights untouched, exact disable/revert,
save/load, merge, on every preset architecture."""
from __future__ import annotations

import pytest
import torch

from ember_utils.methods.lora import LoraAdapter, LoraSpec
from ember_utils.state import StateError
from helpers.tiny_models import PRESET_ARCHITECTURES, boot_bridge_as, bpe_tokenizer

IDS = torch.tensor([[2, 40, 41, 42, 43, 44, 45, 46]])


def _randomize(adapter: LoraAdapter, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=gen))


@pytest.fixture(scope="module")
def tok():
    return bpe_tokenizer()


@pytest.mark.parametrize("hf_id", sorted(PRESET_ARCHITECTURES))
def test_adapter_changes_outputs_disable_and_revert_restore_them_exactly(hf_id, tok):
    bridge = boot_bridge_as(hf_id, PRESET_ARCHITECTURES[hf_id](len(tok)), tok)
    hf = bridge.original_model
    before = {n: p.detach().clone() for n, p in hf.named_parameters()}
    with torch.no_grad():
        base = bridge(IDS).clone()
    adapter = LoraAdapter(LoraSpec(rank=2, layers=(1,)))
    with adapter.applied_to(bridge):
        _randomize(adapter)
        with torch.no_grad():
            adapted = bridge(IDS).clone()
            assert torch.equal(hf(IDS).logits, adapted)  # the HF model the evaluator uses sees the adapter too
            with adapter.disabled():
                assert torch.equal(bridge(IDS), base)
        assert (adapted - base).abs().max() > 1e-3
        loss = bridge(IDS).logsumexp(-1).sum()
        loss.backward()
        assert all(p.grad is not None for p in adapter.parameters())  # gradients reach LoRA through the bridge
    with torch.no_grad():
        assert torch.equal(bridge(IDS), base)
    after = dict(hf.named_parameters())
    assert set(after) == set(before)
    assert all(torch.equal(before[n], after[n]) for n in before)  # base weights untouched, module tree restored


def test_saved_and_loaded_adapter_gives_identical_logits(fresh_tiny_bridge, tmp_path):
    adapter = LoraAdapter(LoraSpec(rank=4, layers=(0, 1), modules=("q_proj", "down_proj")), seed=3)
    with adapter.applied_to(fresh_tiny_bridge):
        _randomize(adapter, 1)
        with torch.no_grad():
            want = fresh_tiny_bridge(IDS).clone()
    path = adapter.save(tmp_path / "a.safetensors")
    loaded = LoraAdapter.load(path)
    assert loaded.spec == adapter.spec and set(loaded.weights) == set(adapter.weights)
    assert all(k.startswith("model.layers.") and "_original_component" not in k for k in loaded.weights)
    with loaded.applied_to(fresh_tiny_bridge), torch.no_grad():
        assert torch.equal(fresh_tiny_bridge(IDS), want)
    merged = LoraAdapter.load(path, merged=True)
    with torch.no_grad():
        base = fresh_tiny_bridge(IDS).clone()
        with merged.applied_to(fresh_tiny_bridge):
            torch.testing.assert_close(fresh_tiny_bridge(IDS), want, atol=1e-4, rtol=0)
        assert torch.equal(fresh_tiny_bridge(IDS), base)


def test_adapter_errors(fresh_tiny_bridge, tmp_path):
    with pytest.raises(ValueError, match="rank"):
        LoraSpec(rank=0)
    with pytest.raises(ValueError, match="Unknown LoRA target"):
        LoraSpec(modules=("qkv",))
    with pytest.raises(StateError, match="do not exist"):
        LoraAdapter(LoraSpec(layers=(7,))).apply(fresh_tiny_bridge)
    a = LoraAdapter(LoraSpec(rank=2, layers=(0,)))
    with a.applied_to(fresh_tiny_bridge):
        with pytest.raises(StateError, match="already carries LoRA"):
            LoraAdapter(LoraSpec(rank=2, layers=(1,))).apply(fresh_tiny_bridge)
    wrong = LoraAdapter(LoraSpec(rank=2, layers=(1,)), weights=a.weights)
    with pytest.raises(StateError, match="do not fit"):
        wrong.apply(fresh_tiny_bridge)
    assert not any("lora" in n for n, _ in fresh_tiny_bridge.original_model.named_parameters())  # failed apply undone
    (tmp_path / "bad.safetensors").write_bytes(b"not a file")
    with pytest.raises(ValueError, match="not a readable LoRA"):
        LoraAdapter.load(tmp_path / "bad.safetensors")


def test_adapter_folded_into_a_weight_patch_gives_the_same_logits(fresh_tiny_bridge):
    bridge = fresh_tiny_bridge
    adapter = LoraAdapter(LoraSpec(rank=2, layers=(0, 1)))
    with adapter.applied_to(bridge):
        _randomize(adapter)
        with torch.no_grad():
            adapted = bridge(IDS).clone()
    patch = adapter.as_weight_patch(bridge)
    assert len(patch.weights) == 2 * 7 and all(k.endswith(".weight") and "lora" not in k for k in patch.weights)
    with patch.applied_to(bridge), torch.no_grad():
        torch.testing.assert_close(bridge(IDS), adapted, atol=1e-4, rtol=1e-4)
    with adapter.applied_to(bridge), pytest.raises(StateError, match="Revert"):
        adapter.as_weight_patch(bridge)
    with pytest.raises(StateError, match="no weights"):
        LoraAdapter(LoraSpec(rank=2, layers=(0,))).as_weight_patch(bridge)
