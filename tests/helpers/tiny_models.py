"""Tiny Gemma 3 models built locally from a config (no network), for the fast unit tests.

One model builder (:func:`tiny_gemma3`) and one bridge booter (:func:`boot_tiny_bridge`), with two tokenizers:

* :func:`bpe_tokenizer` — byte-level BPE (any text encodes, no ``<unk>``) trained in memory on
  :data:`BPE_CORPUS`; used by the evaluation tests and the ``tiny_bridge`` fixtures (``conftest.py``).
* :func:`word_tokenizer` — word level, one token per word of :data:`WORD_CORPUS` (predictable token ids for
  the vocabulary-slice, atom and edit tests).

Both use Gemma's special ids (``<pad>``=0, ``<eos>``=1, ``<bos>``=2, ``<unk>``=3) and prepend ``<bos>``.
"""
from __future__ import annotations

import re

import torch

BPE_CORPUS = [
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
BPE_VOCAB_SIZE = 512

WORD_CORPUS = [
    "Harry Potter is a young wizard who studies magic at Hogwarts with Ron and Hermione.",
    "The wand chose the wizard and the owl carried letters to the castle.",
    "The cat sat on the warm mat near the kitchen window in the morning.",
    "People go to the market to buy bread, milk, apples and fresh vegetables.",
    "The capital of France is Paris and the capital of Spain is Madrid.",
    "Question : Answer : what who where when how many",
]
SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>"]


def _wrap(tk, name: str):
    """A transformers fast tokenizer around a ``tokenizers.Tokenizer`` that prepends <bos>."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tk.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B",
                                                      special_tokens=[("<bos>", tk.token_to_id("<bos>"))])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                  unk_token="<unk>", add_bos_token=True, padding_side="left", name_or_path=name)
    # TransformerLens re-creates tokenizers from `name_or_path` unless they already add <bos>.
    tok.init_kwargs["name_or_path"] = name
    return tok


def bpe_tokenizer():
    """Byte-level BPE with :data:`BPE_VOCAB_SIZE` tokens trained on :data:`BPE_CORPUS`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=BPE_VOCAB_SIZE, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator(BPE_CORPUS, trainer)
    return _wrap(tk, "ember-tiny-gemma3")


def word_tokenizer(corpus: list[str] | None = None):
    """Word level: every word of ``corpus`` (as is, lower-case and capitalized) and punctuation is a token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    words: list[str] = []
    for line in corpus or WORD_CORPUS:
        for w in re.findall(r"\w+|[^\w\s]", line):
            for variant in (w, w.lower(), w.capitalize()):
                if variant not in words:
                    words.append(variant)
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tk.decoder = decoders.WordPiece(prefix="##")
    return _wrap(tk, "tiny-local")


def tiny_gemma3(vocab_size: int, *, seed: int = 0, d_model: int = 32, n_layers: int = 2, sliding_window: int = 8,
                tie: bool = False, init_std: float | None = 0.2):
    """A random tiny ``Gemma3ForCausalLM`` (eager attention, layer types alternating sliding/full).

    ``tie=False`` unties the embeddings like ``ember_utils.load_model``; ``init_std`` re-draws every matrix from
    N(0, init_std²) so the random model has non-trivial predictions (``None`` keeps transformers' init).
    """
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from ember_utils.models import untie_embeddings

    cfg = Gemma3TextConfig(
        vocab_size=vocab_size, hidden_size=d_model, intermediate_size=2 * d_model, num_hidden_layers=n_layers,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=512,
        sliding_window=sliding_window,
        layer_types=["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n_layers)],
        tie_word_embeddings=True, pad_token_id=0, eos_token_id=1, bos_token_id=2,
        architectures=["Gemma3ForCausalLM"], attn_implementation="eager",
    )
    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(cfg)
    if init_std is not None:
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 2:
                    p.normal_(0.0, init_std)
    if not tie:
        untie_embeddings(model)
    model.eval()
    return model


def boot_tiny_bridge(model, tok):
    """Boot a TransformerLens ``TransformerBridge`` on a tiny HF Gemma 3 (``config.architectures`` must be set)."""
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers("google/gemma-3-270m", hf_model=model, tokenizer=tok, device="cpu")
    bridge.eval()
    return bridge


def build_tiny_model(seed: int = 0, n_layers: int = 2, sliding_window: int = 8):
    """``(model, tokenizer)``: BPE tokenizer, untied, N(0, 0.2²) weights; the small ``sliding_window`` makes the
    sliding-window mask matter. Use it to inject e.g. peft LoRA adapters before :func:`boot_tiny_bridge`."""
    tok = bpe_tokenizer()
    return tiny_gemma3(len(tok), seed=seed, n_layers=n_layers, sliding_window=sliding_window), tok


def build_tiny_bridge(seed: int = 0, n_layers: int = 2, sliding_window: int = 8):
    """A tiny random Gemma 3 (BPE tokenizer, untied) in a TransformerBridge."""
    return boot_tiny_bridge(*build_tiny_model(seed, n_layers, sliding_window))


def tiny_bridge_and_hf(untie: bool = True, seed: int = 0):
    """``(bridge, hf_model, tokenizer)`` with the word-level tokenizer and transformers' default init; tied
    like the hub checkpoint unless ``untie`` (like ``load_model``)."""
    tok = word_tokenizer()
    model = tiny_gemma3(len(tok), seed=seed, sliding_window=64, tie=not untie, init_std=None)
    return boot_tiny_bridge(model, tok), model, tok


def _randomize(model, init_std: float | None) -> None:
    if init_std is not None:
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 2:
                    p.normal_(0.0, init_std)


def tiny_gemma2(vocab_size: int, *, seed: int = 0, d_model: int = 32, n_layers: int = 2, sliding_window: int = 8,
                tie: bool = False, init_std: float | None = 0.2):
    """A random tiny ``Gemma2ForCausalLM``: tied (untied unless ``tie``), √d-scaled embeddings, attention and final
    logit soft-capping, alternating sliding-window layers — the architecture of the Gemma-2-2B-it preset."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    from ember_utils.models import untie_embeddings

    cfg = Gemma2Config(
        vocab_size=vocab_size, hidden_size=d_model, intermediate_size=2 * d_model, num_hidden_layers=n_layers,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=512,
        sliding_window=sliding_window, attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
        query_pre_attn_scalar=16, tie_word_embeddings=True, pad_token_id=0, eos_token_id=1, bos_token_id=2,
        architectures=["Gemma2ForCausalLM"], attn_implementation="eager",
    )
    torch.manual_seed(seed)
    model = Gemma2ForCausalLM(cfg)
    _randomize(model, init_std)
    if not tie:
        untie_embeddings(model)
    return model.eval()


def tiny_llama(vocab_size: int, *, seed: int = 0, d_model: int = 32, n_layers: int = 2,
               init_std: float | None = 0.2):
    """A random tiny ``LlamaForCausalLM``: untied, unscaled embeddings, grouped-query attention — the architecture of
    the Llama-3.1-8B-Instruct preset."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=vocab_size, hidden_size=d_model, intermediate_size=2 * d_model, num_hidden_layers=n_layers,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=512,
        tie_word_embeddings=False, pad_token_id=0, eos_token_id=1, bos_token_id=2,
        architectures=["LlamaForCausalLM"], attn_implementation="eager",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    _randomize(model, init_std)
    return model.eval()


#: preset hub id -> builder of a tiny random model of the same architecture
PRESET_ARCHITECTURES = {
    "google/gemma-3-270m": tiny_gemma3,
    "google/gemma-2-2b-it": tiny_gemma2,
    "meta-llama/Llama-3.1-8B-Instruct": tiny_llama,
}


def boot_bridge_as(hf_id: str, model, tok):
    """Boot a TransformerBridge on ``model`` under the official id of a preset (no network: the model is given)."""
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(hf_id, hf_model=model, tokenizer=tok, device="cpu",
                                                 dtype=next(model.parameters()).dtype)
    bridge.eval()
    return bridge
