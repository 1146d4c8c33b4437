"""Shared pytest fixtures.

* ``tiny_bridge`` (session): a randomly initialised 2-layer Gemma 3 (d_model 32, untied embeddings, a
  512-token byte-level BPE tokenizer trained in memory on :data:`TINY_CORPUS`) booted in a
  TransformerLens 4.x ``TransformerBridge``. Treat it as read-only; tests that modify weights use
  ``fresh_tiny_bridge`` (function scope) or call :func:`build_tiny_bridge` themselves.
* ``real_bridge`` (session): the offline default Gemma 3 270M (``ember_utils.load_model()``), for tests
  marked ``@pytest.mark.real_model``.

Tests marked ``real_model`` are skipped unless the ``-m`` expression mentions ``real_model`` (e.g.
``pytest -m real_model``) or ``EMBER_RUN_REAL_MODEL=1`` is set, so a plain ``pytest`` stays fast.

Tests *not* marked ``real_model`` run with one torch thread (``EMBER_TEST_THREADS=N`` sets N threads for
all tests): tiny models are dominated by per-op overhead, and on a busy 2-core machine two spinning
threads made them ~5x slower (the real model too: ``EMBER_TEST_THREADS=1`` helps when the machine is shared).
"""
from __future__ import annotations

import os

import pytest

TINY_CORPUS = [
    "Harry Potter is a wizard who studies at Hogwarts School of Witchcraft and Wizardry.",
    "Hermione Granger and Ron Weasley are his best friends.",
    "The capital of France is Paris, and the capital of Italy is Rome.",
    "Question: Who is the headmaster of Hogwarts?\nAnswer: Albus Dumbledore",
    "The cat sat on the mat while the dog slept by the fire.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "She bought apples, bread and cheese at the market on Saturday morning.",
    "Baseball is played with a bat, a ball and nine players on each team.",
    "The Roman Empire built roads, aqueducts and the Colosseum.",
    "In 1945 the Second World War ended in Europe and in the Pacific.",
    "Describe your ideal weekend. Explain how to make a cup of tea.",
    "The quick brown fox jumps over the lazy dog. 0123456789",
]

TINY_VOCAB_SIZE = 512


def build_tiny_tokenizer():
    """Byte-level BPE (any text encodes, no <unk>) with Gemma-like special ids: <pad>=0, <eos>=1, <bos>=2.
    Prepends <bos> like the Gemma tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TINY_VOCAB_SIZE, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator(TINY_CORPUS, trainer)
    tk.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B",
                                                      special_tokens=[("<bos>", tk.token_to_id("<bos>"))])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                  unk_token="<unk>", name_or_path="ember-tiny-gemma3", add_bos_token=True,
                                  padding_side="left")
    return tok


def build_tiny_model(seed: int = 0, n_layers: int = 2, sliding_window: int = 8):
    """``(Gemma3ForCausalLM, tokenizer)``: a tiny random Gemma 3 (d_model 32) with untied embeddings, like
    ``ember_utils.load_model`` gives. Layer types alternate sliding/full attention; the small
    ``sliding_window`` makes the sliding-window mask matter in tests. Use it to inject e.g. peft LoRA
    adapters before booting the bridge with :func:`boot_tiny_bridge`."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from ember_utils.models import untie_embeddings

    tok = build_tiny_tokenizer()
    cfg = Gemma3TextConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=n_layers,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=512,
        sliding_window=sliding_window,
        layer_types=["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n_layers)],
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
        architectures=["Gemma3ForCausalLM"], attn_implementation="eager",
    )
    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(cfg)
    with torch.no_grad():  # larger-than-default init so the random model has non-trivial predictions
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.2)
    untie_embeddings(model)
    model.eval()
    return model, tok


def boot_tiny_bridge(model, tok):
    """Boot a TransformerBridge on a tiny HF Gemma 3 (``config.architectures`` must be set)."""
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers("google/gemma-3-270m", hf_model=model, tokenizer=tok, device="cpu")
    bridge.eval()
    return bridge


def build_tiny_bridge(seed: int = 0, n_layers: int = 2, sliding_window: int = 8):
    """A tiny random Gemma 3 in a TransformerBridge (well under a second after imports)."""
    return boot_tiny_bridge(*build_tiny_model(seed, n_layers, sliding_window))


@pytest.fixture(scope="session")
def tiny_bridge():
    """Session-wide tiny Gemma 3 bridge. Do not modify its weights (use ``fresh_tiny_bridge``)."""
    return build_tiny_bridge()


@pytest.fixture
def fresh_tiny_bridge():
    """A new tiny Gemma 3 bridge per test (safe to edit)."""
    return build_tiny_bridge()


@pytest.fixture(autouse=True)
def _torch_threads_for_small_tests(request):
    """One torch thread for tests that do not use the real model, torch's default for ``real_model`` tests;
    ``EMBER_TEST_THREADS`` sets the count for all tests. Restored afterwards."""
    env = os.environ.get("EMBER_TEST_THREADS")
    if env is None and "real_model" in request.node.keywords:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(int(env or "1"))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def real_bridge():
    """The offline default Gemma 3 270M as a TransformerBridge (only for ``real_model`` tests)."""
    import ember_utils

    return ember_utils.load_model()


def pytest_collection_modifyitems(config, items):
    """Skip ``real_model`` tests unless asked for with ``-m ...real_model...`` or EMBER_RUN_REAL_MODEL=1."""
    if "real_model" in (config.getoption("-m") or "") or os.environ.get("EMBER_RUN_REAL_MODEL") == "1":
        return
    skip = pytest.mark.skip(reason="real-model test: run with `-m real_model` or EMBER_RUN_REAL_MODEL=1")
    for item in items:
        if "real_model" in item.keywords:
            item.add_marker(skip)
