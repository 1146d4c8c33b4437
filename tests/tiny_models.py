"""Tiny Gemma-3 models built locally from a config, with a small word-level tokenizer (no network)."""
from __future__ import annotations

import re

import torch

TINY_CORPUS = [
    "Harry Potter is a young wizard who studies magic at Hogwarts with Ron and Hermione.",
    "The wand chose the wizard and the owl carried letters to the castle.",
    "The cat sat on the warm mat near the kitchen window in the morning.",
    "People go to the market to buy bread, milk, apples and fresh vegetables.",
    "The capital of France is Paris and the capital of Spain is Madrid.",
    "Question : Answer : what who where when how many",
]


def tiny_tokenizer(corpus: list[str] | None = None):
    """A word-level fast tokenizer with Gemma-style special ids (pad 0, eos 1, bos 2, unk 3)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, decoders
    from transformers import PreTrainedTokenizerFast

    words: list[str] = []
    for line in corpus or TINY_CORPUS:
        for w in re.findall(r"\w+|[^\w\s]", line):
            for variant in (w, w.lower(), w.capitalize()):
                if variant not in words:
                    words.append(variant)
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B",
                                                       special_tokens=[("<bos>", 2)])
    tok.decoder = decoders.WordPiece(prefix="##")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>", add_bos_token=True)
    # TransformerLens re-creates tokenizers from `name_or_path` unless they already add <bos>.
    fast.init_kwargs["name_or_path"] = "tiny-local"
    return fast


def tiny_hf_model(vocab_size: int, seed: int = 0, d_model: int = 32, n_layers: int = 2):
    """A randomly initialized tiny Gemma3ForCausalLM (tied embeddings, like the real one)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    cfg = Gemma3TextConfig(
        vocab_size=vocab_size, hidden_size=d_model, intermediate_size=2 * d_model, num_hidden_layers=n_layers,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=256,
        sliding_window=64, tie_word_embeddings=True, pad_token_id=0, eos_token_id=1, bos_token_id=2,
        architectures=["Gemma3ForCausalLM"], attn_implementation="eager",
    )
    model = Gemma3ForCausalLM(cfg)
    model.eval()
    return model


def tiny_bridge_and_hf(untie: bool = True, seed: int = 0):
    """(bridge, hf_model, tokenizer) for a tiny Gemma-3 model, optionally untied like ``load_model``."""
    from transformer_lens.model_bridge import TransformerBridge

    from ember_utils.models import untie_embeddings

    tok = tiny_tokenizer()
    model = tiny_hf_model(len(tok), seed=seed)
    if untie:
        untie_embeddings(model)
    bridge = TransformerBridge.boot_transformers("google/gemma-3-270m", hf_model=model, tokenizer=tok, device="cpu")
    bridge.eval()
    return bridge, model, tok
