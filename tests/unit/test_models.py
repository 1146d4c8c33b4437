"""Model presets, loading, untying and error messages."""
from __future__ import annotations

import os

import pytest
import torch

from ember_utils import models
from ember_utils.interp.embeddings import embedding_scale, nearest_tokens, token_id
from ember_utils.io import atomic_directory
from ember_utils.models import (
    GatedModelError,
    InsufficientMemoryError,
    ModelNotAvailableError,
    UnknownModelError,
    get_preset,
    preset_table,
    untie_embeddings,
)
from helpers.tiny_models import tiny_bridge_and_hf, tiny_gemma3, word_tokenizer

# ---------------------------------------------------------------- presets and errors

def test_preset_table_lists_all_presets_with_memory():
    table = preset_table()
    assert set(table["name"]) == {"gemma-3-270m", "google/gemma-3-270m-it", "google/gemma-2-2b-it",
                                  "meta-llama/Llama-3.1-8B-Instruct"}
    llama = table.set_index("name").loc["meta-llama/Llama-3.1-8B-Instruct"]
    assert 15 < llama["weights_gb"] < 17.5  # ~16 GB in bf16
    assert llama["default_rank"] == 200
    assert table.set_index("name").loc["google/gemma-2-2b-it", "default_rank"] == 100


def test_unknown_preset_lists_valid_names():
    with pytest.raises(UnknownModelError) as err:
        get_preset("gpt-5")
    msg = str(err.value)
    assert "gpt-5" in msg and "gemma-3-270m" in msg and "meta-llama/Llama-3.1-8B-Instruct" in msg


def test_hub_id_resolves_to_preset():
    assert get_preset("google/gemma-2-2b-it").default_rank == 100


def test_insufficient_memory_is_reported_with_estimate(monkeypatch):
    monkeypatch.setattr(models, "available_memory_gb", lambda device: 4.0)
    with pytest.raises(InsufficientMemoryError) as err:
        models.load_hf_model("meta-llama/Llama-3.1-8B-Instruct", device="cpu")
    msg = str(err.value)
    assert "4.0 GB is available" in msg and "needs about" in msg and "gemma-3-270m" in msg


def test_gated_model_without_token(monkeypatch):
    monkeypatch.setattr(models, "available_memory_gb", lambda device: 1e6)
    monkeypatch.setattr(models, "_hf_token", lambda: None)
    with pytest.raises(GatedModelError, match="HF_TOKEN"):
        models.load_hf_model("google/gemma-2-2b-it", device="cpu")


def test_hub_model_without_network_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(models, "_hf_token", lambda: None)
    with pytest.raises(ModelNotAvailableError) as err:
        models.load_hf_model("google/gemma-3-270m-it", device="cpu", cache_dir=tmp_path)
    msg = str(err.value)
    assert "google/gemma-3-270m-it" in msg and "offline" in msg and "gemma-3-270m" in msg


def test_cuda_requested_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("machine has CUDA")
    with pytest.raises(ValueError, match="CUDA is not available"):
        models.pick_device("cuda")


def test_bad_dtype_rejected():
    with pytest.raises(ValueError, match="Unsupported dtype"):
        models.estimate_memory_gb("gemma-3-270m", dtype="int3")


def test_atomic_directory_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "cache" / "model"

    def build(tmp):
        (tmp / "half-written.bin").write_bytes(b"x" * 10)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_directory(target, build)
    assert not target.exists()
    assert list((tmp_path / "cache").iterdir()) == []


# ---------------------------------------------------------------- untying (tiny model)

def test_untied_edit_of_W_E_leaves_W_U_bit_identical():
    bridge, hf, _ = tiny_bridge_and_hf(untie=True)
    W_U_before = bridge.W_U.detach().clone()
    with torch.no_grad():
        bridge.W_E[5] += 1.0
    assert torch.equal(bridge.W_U, W_U_before)
    assert torch.equal(hf.lm_head.weight.T, W_U_before)
    assert not hf.config.tie_word_embeddings


def test_tied_edit_of_W_E_changes_W_U():
    """The control: without untying, the same edit leaks into the unembedding."""
    bridge, _, _ = tiny_bridge_and_hf(untie=False)
    W_U_before = bridge.W_U.detach().clone()
    with torch.no_grad():
        bridge.W_E[5] += 1.0
    assert not torch.equal(bridge.W_U, W_U_before)


def test_untie_keeps_outputs_identical():
    tok = word_tokenizer()
    model = tiny_gemma3(len(tok), tie=True, init_std=None)
    ids = tok("the cat sat on the mat", return_tensors="pt").input_ids
    before = model(ids).logits
    assert untie_embeddings(model) is True
    assert torch.equal(model(ids).logits, before)
    assert untie_embeddings(model) is False  # already untied


def test_tiny_bridge_matches_hf_forward():
    bridge, hf, tok = tiny_bridge_and_hf()
    ids = bridge.to_tokens("Harry Potter is a wizard at Hogwarts.")
    assert torch.allclose(bridge(ids), hf(ids).logits, atol=1e-5)


def test_token_id_rejects_multi_token_strings():
    bridge, _, tok = tiny_bridge_and_hf()
    assert token_id(tok, "wand") == tok.convert_tokens_to_ids("wand")
    with pytest.raises(ValueError, match="not a single token"):
        token_id(tok, "wand castle")


def test_nearest_tokens_excludes_query():
    bridge, _, _ = tiny_bridge_and_hf()
    table = nearest_tokens(bridge, ["wand"], k=3)
    assert len(table) == 3 and "wand" not in set(table["neighbour"])
    assert table["cosine"].is_monotonic_decreasing


# ---------------------------------------------------------------- the real default model

@pytest.fixture(scope="module")
def default_bridge():
    return models.load_model()


@pytest.mark.real_model
def test_default_model_shape_and_untied(default_bridge):
    b = default_bridge
    assert b.cfg.d_model == 640 and b.cfg.n_layers == 18 and b.W_E.shape == (262_144, 640)
    assert b.W_E.data_ptr() != b.W_U.data_ptr()
    row = b.W_E[1000].detach().clone()
    W_U_col = b.W_U[:, 1000].detach().clone()
    try:
        with torch.no_grad():
            b.W_E[1000] *= 3.0
        assert torch.equal(b.W_U[:, 1000], W_U_col)
    finally:
        with torch.no_grad():
            b.W_E[1000] = row


@pytest.mark.real_model
def test_default_model_tokenization_round_trip(default_bridge):
    text = "Harry Potter waved his wand at Hogwarts, 1997."
    tokens = default_bridge.to_tokens(text)
    assert tokens[0, 0].item() == default_bridge.tokenizer.bos_token_id
    assert default_bridge.to_string(tokens[0, 1:]) == text


@pytest.mark.real_model
def test_default_model_forward_matches_transformers(default_bridge):
    from transformers import AutoModelForCausalLM

    folder, _ = models._offline_cache_folder(models.default_cache_dir())
    plain = AutoModelForCausalLM.from_pretrained(folder / "model", dtype=torch.float32, attn_implementation="eager")
    plain.eval()
    tokens = default_bridge.to_tokens("The Eiffel Tower is in the city of")
    with torch.no_grad():
        diff = (default_bridge(tokens) - plain(tokens).logits).abs().max().item()
    assert diff < 1e-4


@pytest.mark.real_model
def test_default_model_knows_hermione(default_bridge):
    out = default_bridge.generate("Harry Potter's best friends are Ron and", max_new_tokens=4, do_sample=False,
                                  verbose=False)
    assert "Hermione" in out


@pytest.mark.real_model
def test_default_model_embedding_scale_is_sqrt_d_model(default_bridge):
    assert embedding_scale(default_bridge) == pytest.approx(640 ** 0.5, rel=1e-4)


@pytest.mark.real_model
def test_offline_cache_is_reused(default_bridge):
    folder, _ = models._offline_cache_folder(models.default_cache_dir())
    marker = folder / "ember_cache.json"
    stamp = os.stat(marker).st_mtime_ns
    models.load_hf_model()
    assert os.stat(marker).st_mtime_ns == stamp


def test_atomic_write_gives_normal_file_permissions(tmp_path):
    import os
    import stat

    from ember_utils.io import atomic_write_text

    path = atomic_write_text(tmp_path / "x.txt", "hello")
    mode = stat.S_IMODE(os.stat(path).st_mode)
    plain = tmp_path / "plain.txt"
    plain.write_text("hello")
    assert mode == stat.S_IMODE(os.stat(plain).st_mode)  # not mkstemp's 0600
