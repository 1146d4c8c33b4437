"""Evaluation of (edited) models: multiple choice, open questions, perplexity, fluency and the EMBER metrics.

Everything here works on a TransformerLens 4.x ``TransformerBridge`` (or a plain ``transformers`` causal
LM plus its tokenizer). Computation goes through the wrapped Hugging Face model (``hf_model_of``), which
shares its parameters and hook points with the bridge, so an embedding edit of ``bridge.W_E``, LoRA
adapters injected with ``peft`` and hooks added on bridge components are all seen.

Prompt formats (all are parameters)
------------------------------------
* Multiple choice: the prompt ``"Question: {question}\\nAnswer:"`` (:data:`MC_PROMPT_TEMPLATE`, with the
  tokenizer's ``<bos>`` in front) is followed by each option as ``" {option}"`` (:data:`MC_OPTION_TEMPLATE`).
  Prompt and option are tokenized separately and concatenated, so every scorer sees the same tokens.
  The score of an option is its log-likelihood given the prompt, divided by its number of tokens
  (``normalization="tokens"``; ``"chars"`` divides by characters, ``"sum"`` keeps the total). The
  prediction is the arg-max option (first one on ties).
* Open questions: the same question format after two fixed, neutral worked examples
  (:data:`OPEN_PROMPT_TEMPLATE`, they only fix the answer format), greedy decoding of ``max_new_tokens``
  tokens, then :func:`answer_matches` (see there).
* Coherence generations: ``"{prompt}\\n"`` (:data:`COHERENCE_PROMPT_TEMPLATE`), greedy with no repeated
  3-gram (``gen_no_repeat_ngram_size=3``). Plain greedy decoding of the 270M base model loops ("I would
  love to ...\\nI would love to ...") and copies the prompt; the unedited model gives such loops a very
  high likelihood (mean −0.5 nats/token vs −1.1 without loops), so the fluency term would mostly measure
  whether the model still loops.

Fast multiple-choice scoring (:func:`score_mc`)
-----------------------------------------------
The 262k-token output layer is most of the cost of the default model, and the question is shared by its
4 options. :func:`branch_logprobs` therefore packs each question with its options into one sequence::

    <bos> Question: ... Answer: | option-1 tokens[:-1] | option-2 tokens[:-1] | ...

with a custom 4-D attention mask (each option attends to the question and causally to itself, never to
another option) and position ids that restart after the question for every option. Several questions
are packed into one row (block-diagonal mask) to avoid padding. The transformer body runs once; the
unembedding and log-softmax run only at the scored positions: the last question token (which predicts
the *first* token of all 4 options at once) and each option token but the last. Sliding-window layers
get the window applied on the position ids, so the result equals a plain forward of
``question + option`` (checked to 1e-4 against :func:`score_mc_naive`, the reference implementation).

Metrics (DESIGN §5)
-------------------
* normalized accuracy = clip((acc − 0.25) / (acc_base − 0.25), 0, 1); NaN when acc_base ≤ chance.
* efficacy = 1 − normalized concept accuracy.
* specificity = harmonic mean(normalized general accuracy, normalized similar-domain accuracy).
* coherence = harmonic mean(ppl_term, fluency_term) with
  ppl_term = min(1, ppl_base / ppl) on the held-out neutral sentences (``neutral`` split 'test'), and
  fluency_term = min(1, exp(f − f_base)) where f is the mean (over prompts) of the per-token
  log-likelihood that the *unedited* model assigns to the edited model's greedy generations on the
  coherence prompts, and f_base the same for the unedited model's own generations. exp(f − f_base) is a
  ratio of per-token likelihoods (a perplexity ratio), so both terms are "perplexity ratios capped at 1".
* score = harmonic mean(efficacy, specificity, coherence) (:func:`harmonic_mean`: 0 if any term is 0).

Embedding edits: re-measure only what they can change
-----------------------------------------------------
An edit of input-embedding rows (EMBER; the unembedding is untied) leaves the model's output unchanged on
every input that contains none of the edited tokens. ``Evaluator.evaluate(state, edited_tokens=...)`` therefore
re-runs only the affected items and copies the rest from a reference measurement, with a spot check that
raises if the promise does not hold (11x faster per δ-sweep step on the default model, identical numbers:
``benchmarks/bench_delta_sweep.py``).
"""
from __future__ import annotations

import contextlib
import math
import re
import time
import unicodedata
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import torch

__all__ = [
    "MC_PROMPT_TEMPLATE",
    "MC_OPTION_TEMPLATE",
    "OPEN_PROMPT_TEMPLATE",
    "COHERENCE_PROMPT_TEMPLATE",
    "CHANCE",
    "FAST_LIMITS",
    "branch_logprobs",
    "score_mc",
    "score_mc_naive",
    "mc_accuracy",
    "text_logprobs",
    "perplexity",
    "generate_greedy",
    "continuation_logprobs",
    "normalize_answer",
    "answer_span",
    "answer_matches",
    "score_open",
    "normalized_accuracy",
    "harmonic_mean",
    "coherence_terms",
    "compute_metrics",
    "selection_score",
    "Measurements",
    "EvalResult",
    "Evaluator",
]

MC_PROMPT_TEMPLATE = "Question: {question}\nAnswer:"
MC_OPTION_TEMPLATE = " {option}"
#: Two neutral general-knowledge examples fix the answer format (short answer, then a blank line); zero-shot,
#: the 270M base model mostly answers with a sentence that restates the question (HP open accuracy 4 % vs 10 %).
OPEN_PROMPT_TEMPLATE = ("Question: What is the capital of France?\nAnswer: Paris\n\n"
                        "Question: Who painted the Mona Lisa?\nAnswer: Leonardo da Vinci\n\n"
                        "Question: {question}\nAnswer:")
COHERENCE_PROMPT_TEMPLATE = "{prompt}\n"
CHANCE = 0.25

#: What ``fast=True`` keeps (seeded random subsets) — for CI smoke runs of the notebooks, not for results.
FAST_LIMITS: dict[str, int] = {
    "mc": 16,                 # concept MC questions
    "similar_mc": 8,          # similar-domain MC questions
    "general_mc": 16,         # general-knowledge MC questions
    "open": 8,                # open questions
    "neutral": 48,            # held-out neutral sentences for perplexity
    "coherence_prompts": 4,   # coherence prompts
    "gen_max_new_tokens": 16, # tokens generated per coherence prompt (full: 40)
}


# ============================================================================ model plumbing


def _resolve_hf(model: Any) -> Any:
    """The HF causal LM behind a TransformerBridge, a peft model or a plain HF model."""
    if model is None:
        raise TypeError("model is None; pass a TransformerBridge or a transformers causal LM.")
    hf = model
    if getattr(model, "original_model", None) is not None:  # TransformerBridge
        hf = model.original_model
    elif hasattr(model, "get_base_model") and callable(model.get_base_model):  # peft.PeftModel
        hf = model.get_base_model()
    prefix = getattr(hf, "base_model_prefix", None)
    if not prefix or not hasattr(hf, prefix) or not hasattr(hf, "config"):
        raise TypeError(f"Expected a TransformerBridge or a transformers causal LM, got {type(model).__name__}.")
    impl = getattr(hf.config, "_attn_implementation", "eager")
    if impl not in (None, "eager", "sdpa"):
        raise NotImplementedError(f"Packed scoring needs 'eager' or 'sdpa' attention (custom 4-D masks); the model "
                                  f"uses {impl!r}. Load it with attn_implementation='eager'.")
    return hf


def _resolve(model: Any, tokenizer: Any = None) -> tuple[Any, Any]:
    """(HF causal LM, tokenizer); the tokenizer defaults to the bridge's."""
    hf = _resolve_hf(model)
    if tokenizer is None:
        tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise ValueError("No tokenizer: pass tokenizer= when scoring a plain transformers model.")
    return hf, tokenizer


def _body(hf: Any) -> Any:
    return getattr(hf, hf.base_model_prefix)


def _head(hf: Any) -> Any:
    head = getattr(hf, "lm_head", None)
    return head if head is not None else hf.get_output_embeddings()


def _text_config(hf: Any) -> Any:
    cfg = hf.config
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


def _device(hf: Any) -> torch.device:
    return next(hf.parameters()).device


@contextlib.contextmanager
def _inference(hf: Any):
    """Eval mode (no dropout, e.g. LoRA dropout) and no grad; restores the previous training flag."""
    was_training = hf.training
    hf.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        if was_training:
            hf.train()


def _encode_prompt(tok: Any, text: str) -> list[int]:
    ids = list(tok(text, add_special_tokens=True)["input_ids"])
    bos = getattr(tok, "bos_token_id", None)
    if bos is not None and (not ids or ids[0] != bos):
        ids = [bos] + ids
    if not ids:
        raise ValueError(f"Prompt {text!r} encodes to no tokens and the tokenizer has no <bos>.")
    return ids


def _encode_cont(tok: Any, text: str) -> list[int]:
    ids = list(tok(text, add_special_tokens=False)["input_ids"])
    if not ids:
        raise ValueError(f"Continuation {text!r} encodes to no tokens (empty option?).")
    return ids


def _progress(iterable: Iterable, progress: bool, total: int | None = None, desc: str | None = None) -> Iterable:
    if not progress:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False)


# ============================================================================ packed scorer


@dataclass
class _Row:
    items: list[int] = field(default_factory=list)
    length: int = 0


def _item_length(prefix: Sequence[int], branches: Sequence[Sequence[int]]) -> int:
    return len(prefix) + sum(len(b) - 1 for b in branches)


def _pack_rows(lengths: list[int], max_row_tokens: int) -> list[_Row]:
    """First-fit decreasing packing of items into rows of at most ``max_row_tokens`` (an item longer than
    that gets a row of its own)."""
    rows: list[_Row] = []
    for i in sorted(range(len(lengths)), key=lambda j: (-lengths[j], j)):
        for row in rows:
            if row.length + lengths[i] <= max_row_tokens:
                row.items.append(i)
                row.length += lengths[i]
                break
        else:
            rows.append(_Row([i], lengths[i]))
    return rows


def _batches(rows: list[_Row], batch_tokens: int) -> list[list[_Row]]:
    rows = sorted(rows, key=lambda r: -r.length)
    out: list[list[_Row]] = []
    for row in rows:
        if out and (len(out[-1]) + 1) * out[-1][0].length <= batch_tokens:
            out[-1].append(row)
        else:
            out.append([row])
    return out


def _mask_arg(hf: Any, seg: torch.Tensor, br: torch.Tensor, pos: torch.Tensor, valid: torch.Tensor,
              dtype: torch.dtype) -> Any:
    """Additive 4-D masks for the packed layout (a dict per layer type when the model has several)."""
    same = seg[:, :, None] == seg[:, None, :]
    causal = pos[:, None, :] <= pos[:, :, None]
    kb, qb = br[:, None, :], br[:, :, None]
    allowed = same & causal & ((kb == -1) | (kb == qb)) & valid[:, None, :] & valid[:, :, None]
    eye = torch.eye(seg.shape[1], dtype=torch.bool, device=seg.device)[None]
    allowed = allowed | (eye & ~valid[:, :, None])  # padding attends to itself only (no empty softmax rows)
    neg = torch.finfo(dtype).min

    def additive(ok: torch.Tensor) -> torch.Tensor:
        m = torch.zeros(ok.shape, dtype=dtype, device=ok.device)
        return m.masked_fill_(~ok, neg)[:, None]

    cfg = _text_config(hf)
    layer_types = getattr(cfg, "layer_types", None)
    window = getattr(cfg, "sliding_window", None)
    full = additive(allowed)
    if not layer_types:
        return full
    out = {}
    for lt in set(layer_types):
        if lt == "sliding_attention" and window:
            near = (pos[:, :, None] - pos[:, None, :]) < window
            out[lt] = additive(allowed & (near | (eye & ~valid[:, :, None])))
        else:
            out[lt] = full
    return out


def branch_logprobs(
    model: Any,
    items: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]],
    *,
    max_row_tokens: int = 512,
    batch_tokens: int = 2048,
    head_chunk: int = 256,
    progress: bool = False,
) -> list[list[np.ndarray]]:
    """Per-token log-probabilities of continuations ("branches") that share a prefix.

    Args:
        model: TransformerBridge or HF causal LM (only its body and output head are used).
        items: ``(prefix_ids, [branch_ids, ...])`` pairs; every prefix and branch must be non-empty. The
            prefix should start with ``<bos>`` when the model expects one.
        max_row_tokens: items are packed into rows of at most this many tokens.
        batch_tokens: rows are batched so that ``n_rows × row_length`` stays below this.
        head_chunk: positions per output-layer call (bounds the ``chunk × vocab`` logits buffer).

    Returns:
        ``out[i][b]`` = float64 array of log p(branch_b token t | prefix, branch_b tokens < t) for item i.
        Equal (to float32 rounding) to running a full forward of ``prefix + branch`` for every branch.
    """
    hf = _resolve_hf(model)
    for k, (prefix, branches) in enumerate(items):
        if len(prefix) == 0:
            raise ValueError(f"Item {k}: empty prefix (prepend <bos>).")
        if len(branches) == 0 or any(len(b) == 0 for b in branches):
            raise ValueError(f"Item {k}: every item needs at least one non-empty branch.")
    if max_row_tokens < 1 or batch_tokens < 1 or head_chunk < 1:
        raise ValueError("max_row_tokens, batch_tokens and head_chunk must be positive.")
    out: list[list[np.ndarray]] = [[np.zeros(len(b)) for b in branches] for _, branches in items]
    if not items:
        return out
    lengths = [_item_length(p, b) for p, b in items]
    batches = _batches(_pack_rows(lengths, max_row_tokens), batch_tokens)
    device = _device(hf)
    dtype = next(hf.parameters()).dtype
    pad_id = getattr(getattr(hf, "config", None), "pad_token_id", None) or 0
    cfg = _text_config(hf)
    softcap = getattr(cfg, "final_logit_softcapping", None)
    body, head = _body(hf), _head(hf)
    with _inference(hf):
        for batch in _progress(batches, progress, desc="scoring"):
            L = max(r.length for r in batch)
            B = len(batch)
            ids = np.full((B, L), pad_id, dtype=np.int64)
            pos = np.zeros((B, L), dtype=np.int64)
            seg = np.full((B, L), -1, dtype=np.int64)
            br = np.full((B, L), -2, dtype=np.int64)
            head_pos: list[int] = []          # flat index (row * L + col) of each scored position
            tgt_h: list[int] = []             # index into head_pos
            tgt_tok: list[int] = []
            tgt_dst: list[tuple[int, int, int]] = []  # (item, branch, token index)
            for r, row in enumerate(batch):
                col = 0
                for s, i in enumerate(row.items):
                    prefix, branches = items[i]
                    P = len(prefix)
                    ids[r, col:col + P] = prefix
                    pos[r, col:col + P] = np.arange(P)
                    seg[r, col:col + P] = s
                    br[r, col:col + P] = -1
                    h_last = len(head_pos)
                    head_pos.append(r * L + col + P - 1)
                    col += P
                    for b, toks in enumerate(branches):
                        tgt_h.append(h_last)
                        tgt_tok.append(toks[0])
                        tgt_dst.append((i, b, 0))
                        n_in = len(toks) - 1
                        if n_in:
                            ids[r, col:col + n_in] = toks[:-1]
                            pos[r, col:col + n_in] = np.arange(P, P + n_in)
                            seg[r, col:col + n_in] = s
                            br[r, col:col + n_in] = b
                            for j in range(n_in):
                                tgt_h.append(len(head_pos))
                                head_pos.append(r * L + col + j)
                                tgt_tok.append(toks[j + 1])
                                tgt_dst.append((i, b, j + 1))
                            col += n_in
            t_ids = torch.from_numpy(ids).to(device)
            t_pos = torch.from_numpy(pos).to(device)
            t_seg = torch.from_numpy(seg).to(device)
            t_br = torch.from_numpy(br).to(device)
            valid = t_seg >= 0
            mask = _mask_arg(hf, t_seg, t_br, t_pos, valid, dtype)
            hidden = body(input_ids=t_ids, attention_mask=mask, position_ids=t_pos, use_cache=False).last_hidden_state
            hidden = hidden.reshape(B * L, -1)[torch.tensor(head_pos, device=device)]
            th = np.asarray(tgt_h)
            tt = torch.tensor(tgt_tok, device=device)
            vals = np.empty(len(tgt_h))
            for start in range(0, len(head_pos), head_chunk):
                stop = min(start + head_chunk, len(head_pos))
                logits = head(hidden[start:stop]).float()
                if softcap:
                    logits = torch.tanh(logits / softcap) * softcap
                logp = torch.log_softmax(logits, dim=-1)
                sel = np.nonzero((th >= start) & (th < stop))[0]
                if len(sel):
                    sel_t = torch.from_numpy(sel).to(device)
                    rows = torch.from_numpy(th[sel] - start).to(device)
                    vals[sel] = logp[rows, tt[sel_t]].double().cpu().numpy()
            for v, (i, b, j) in zip(vals, tgt_dst):
                out[i][b][j] = v
    return out


# ============================================================================ multiple choice


def _questions_frame(questions: Any) -> pd.DataFrame:
    df = questions if isinstance(questions, pd.DataFrame) else pd.DataFrame(list(questions))
    missing = [c for c in ("question", "options") if c not in df.columns]
    if missing:
        raise ValueError(f"MC questions need columns 'question' and 'options' (and usually 'answer'); missing {missing}.")
    if len(df) == 0:
        raise ValueError("No questions to score (empty table).")
    return df.reset_index(drop=True)


def _normalize_scores(lp: np.ndarray, option_text: str, normalization: str) -> float:
    if normalization == "tokens":
        return float(lp.mean())
    if normalization == "sum":
        return float(lp.sum())
    if normalization == "chars":
        return float(lp.sum() / max(1, len(option_text)))
    raise ValueError(f"Unknown normalization {normalization!r}; use 'tokens', 'chars' or 'sum'.")


def _mc_frame(df: pd.DataFrame, scores: list[list[float]]) -> pd.DataFrame:
    n_opt = max(len(s) for s in scores)
    out = pd.DataFrame({c: df[c].values for c in ("id", "split", "subject") if c in df.columns})
    pred = np.array([int(np.argmax(s)) for s in scores])
    out["predicted"] = pred
    if "answer" in df.columns:
        out["answer"] = df["answer"].astype(int).values
        out["correct"] = out["predicted"] == out["answer"]
    for k in range(n_opt):
        out[f"score_{k}"] = [s[k] if k < len(s) else np.nan for s in scores]
    return out


def _mc_items(df: pd.DataFrame, tok: Any, prompt_template: str, option_template: str):
    items = []
    for q, opts in zip(df["question"], df["options"]):
        if len(opts) < 2:
            raise ValueError(f"Question {q!r} has fewer than 2 options.")
        items.append((_encode_prompt(tok, prompt_template.format(question=q)),
                      [_encode_cont(tok, option_template.format(option=o)) for o in opts]))
    return items


def score_mc(
    model: Any,
    questions: Any,
    *,
    tokenizer: Any = None,
    prompt_template: str = MC_PROMPT_TEMPLATE,
    option_template: str = MC_OPTION_TEMPLATE,
    normalization: str = "tokens",
    max_row_tokens: int = 512,
    batch_tokens: int = 2048,
    progress: bool = False,
) -> pd.DataFrame:
    """Score multiple-choice questions with the packed, prefix-sharing scorer (see module docstring).

    Args:
        questions: DataFrame (or records) with ``question``, ``options`` and optionally ``answer``,
            ``id``, ``split``, ``subject``.
    Returns:
        One row per question: ``id``, ``split``, ``subject`` (those present), ``predicted``, ``answer``,
        ``correct`` and ``score_0..score_3`` (normalized option log-likelihoods).
    """
    hf, tok = _resolve(model, tokenizer)
    df = _questions_frame(questions)
    items = _mc_items(df, tok, prompt_template, option_template)
    lps = branch_logprobs(hf, items, max_row_tokens=max_row_tokens, batch_tokens=batch_tokens, progress=progress)
    scores = [[_normalize_scores(lp, str(o), normalization) for lp, o in zip(lp_q, opts)]
              for lp_q, opts in zip(lps, df["options"])]
    return _mc_frame(df, scores)


def score_mc_naive(
    model: Any,
    questions: Any,
    *,
    tokenizer: Any = None,
    prompt_template: str = MC_PROMPT_TEMPLATE,
    option_template: str = MC_OPTION_TEMPLATE,
    normalization: str = "tokens",
    progress: bool = False,
) -> pd.DataFrame:
    """Reference scorer: one full-logits forward of ``prompt + option`` per option, one at a time.

    Same tokens, templates and output as :func:`score_mc`; slow (no prefix sharing, logits everywhere).
    Used in tests and the benchmark to check the fast scorer.
    """
    hf, tok = _resolve(model, tokenizer)
    df = _questions_frame(questions)
    items = _mc_items(df, tok, prompt_template, option_template)
    device = _device(hf)
    scores = []
    with _inference(hf):
        for (prefix, branches), opts in _progress(zip(items, df["options"]), progress, total=len(items), desc="naive"):
            row = []
            for toks, o in zip(branches, opts):
                ids = torch.tensor([list(prefix) + list(toks)], device=device)
                logits = hf(input_ids=ids, use_cache=False).logits[0].float()
                logp = torch.log_softmax(logits[len(prefix) - 1:-1], dim=-1)
                lp = logp[torch.arange(len(toks)), torch.tensor(toks, device=device)].double().cpu().numpy()
                row.append(_normalize_scores(lp, str(o), normalization))
            scores.append(row)
    return _mc_frame(df, scores)


def mc_accuracy(scored: pd.DataFrame) -> float:
    """Fraction of correct predictions in a :func:`score_mc` table (NaN when empty)."""
    if len(scored) == 0:
        return float("nan")
    return float(scored["correct"].mean())


# ============================================================================ text likelihood


def _text_items(tok: Any, texts: Sequence[str]) -> list[tuple[list[int], list[list[int]]]]:
    items = []
    for t in texts:
        if not isinstance(t, str) or not t.strip():
            raise ValueError(f"Empty or non-string text {t!r}.")
        ids = _encode_prompt(tok, t)
        if len(ids) < 2:
            raise ValueError(f"Text {t!r} is too short to score (needs ≥1 token after <bos>).")
        items.append((ids[:1], [ids[1:]]))
    return items


def text_logprobs(model: Any, texts: Sequence[str], *, tokenizer: Any = None, max_row_tokens: int = 512,
                  batch_tokens: int = 2048, progress: bool = False) -> pd.DataFrame:
    """Log-likelihood of each text (every token after ``<bos>``): columns ``n_tokens``, ``logprob`` (sum)."""
    hf, tok = _resolve(model, tokenizer)
    lps = branch_logprobs(hf, _text_items(tok, texts), max_row_tokens=max_row_tokens,
                          batch_tokens=batch_tokens, progress=progress)
    return pd.DataFrame({"text": list(texts), "n_tokens": [len(lp[0]) for lp in lps],
                         "logprob": [float(lp[0].sum()) for lp in lps]})


def perplexity(model: Any, texts: Sequence[str], *, tokenizer: Any = None, **kwargs: Any) -> float:
    """Token-weighted perplexity exp(−Σ log p / Σ tokens) over ``texts`` (each scored after ``<bos>``)."""
    if len(texts) == 0:
        raise ValueError("No texts for perplexity.")
    return _token_perplexity(text_logprobs(model, texts, tokenizer=tokenizer, **kwargs))


def _token_perplexity(scored: pd.DataFrame) -> float:
    """exp(−Σ logprob / Σ n_tokens) of a :func:`text_logprobs` table."""
    return float(math.exp(-scored["logprob"].sum() / scored["n_tokens"].sum()))


def continuation_logprobs(model: Any, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]],
                          **kwargs: Any) -> list[np.ndarray]:
    """Per-token log p(continuation | prompt) for token-id lists (e.g. scoring generations)."""
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations.")
    lps = branch_logprobs(model, [(list(p), [list(c)]) for p, c in zip(prompts, continuations)], **kwargs)
    return [lp[0] for lp in lps]


# ============================================================================ generation


def _eos_ids(hf: Any, tok: Any) -> list[int]:
    ids = set()
    for src in (getattr(tok, "eos_token_id", None), getattr(getattr(hf, "generation_config", None), "eos_token_id", None)):
        if src is None:
            continue
        ids.update([src] if isinstance(src, int) else list(src))
    return sorted(ids)


def generate_greedy(model: Any, prompts: Sequence[str], *, tokenizer: Any = None, max_new_tokens: int = 16,
                    batch_size: int = 16, no_repeat_ngram_size: int = 0,
                    progress: bool = False) -> tuple[list[list[int]], list[list[int]]]:
    """Greedy continuations of ``prompts`` (batched, left-padded, KV cache). ``no_repeat_ngram_size`` > 0
    forbids repeating any n-gram of the prompt + continuation (still deterministic).

    Returns ``(prompt_ids, new_ids)``: the tokenized prompts (with ``<bos>``) and, per prompt, the
    generated token ids, cut after the first end-of-sequence token (which is kept).
    """
    from transformers import GenerationConfig

    hf, tok = _resolve(model, tokenizer)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be ≥ 1, got {max_new_tokens}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}.")
    device = _device(hf)
    eos = _eos_ids(hf, tok)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (eos[0] if eos else 0)
    gen_cfg = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id,
                               eos_token_id=eos or None, no_repeat_ngram_size=int(no_repeat_ngram_size))
    prompt_ids = [_encode_prompt(tok, p) for p in prompts]
    new_ids: list[list[int]] = [[] for _ in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -len(prompt_ids[i]))  # similar lengths → little padding
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    with _inference(hf):
        for chunk in _progress(chunks, progress, desc="generate"):
            L = max(len(prompt_ids[i]) for i in chunk)
            ids = torch.full((len(chunk), L), pad_id, dtype=torch.long)
            att = torch.zeros((len(chunk), L), dtype=torch.long)
            for r, i in enumerate(chunk):
                p = prompt_ids[i]
                ids[r, L - len(p):] = torch.tensor(p)
                att[r, L - len(p):] = 1
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = hf.generate(input_ids=ids.to(device), attention_mask=att.to(device), generation_config=gen_cfg)
            for r, i in enumerate(chunk):
                seq = out[r, L:].tolist()
                cut = []
                for t in seq:
                    cut.append(t)
                    if t in eos:
                        break
                new_ids[i] = cut
    return prompt_ids, new_ids


# ============================================================================ open questions

_ARTICLES = {"a", "an", "the"}
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


def normalize_answer(text: str) -> str:
    """Lowercase, strip accents, turn punctuation into spaces, drop the articles a/an/the, collapse spaces."""
    text = unicodedata.normalize("NFKD", str(text))
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = "".join(c if c.isalnum() or c.isspace() else " " for c in text)
    return " ".join(w for w in text.split() if w not in _ARTICLES)


_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "st", "jr", "sr", "prof", "mt", "no", "vs", "etc", "gen", "col", "capt",
                  "lt", "sgt", "rev", "hon", "ft", "approx", "ca", "inc", "ltd", "co", "vol"}


def answer_span(generation: str) -> str:
    """The part of a generation that counts as the answer: its first non-empty line, cut after the first
    sentence end (``.``, ``!`` or ``?`` followed by a space or the end of the line) — except after a single
    letter, a dotted initial or a common abbreviation ("J.K. Rowling", "Mr. Weasley", "St. Mungo's")."""
    lines = [ln for ln in str(generation).splitlines() if ln.strip()]
    if not lines:
        return ""
    line = lines[0].strip()
    for m in _SENTENCE_END.finditer(line):
        before = line[:m.start()].split()
        word = before[-1].lstrip("\"'([") if before else ""
        if m.group() == "." and (len(word) <= 1 or "." in word or word.lower() in _ABBREVIATIONS):
            continue
        return line[:m.end()]
    return line


def answer_matches(generation: str, answers: Sequence[str]) -> bool:
    """True if some accepted answer, normalized (:func:`normalize_answer`), occurs as a whole-word sequence
    in the normalized :func:`answer_span` of the generation."""
    span = f" {normalize_answer(answer_span(generation))} "
    if not span.strip():
        return False
    for a in answers:
        na = normalize_answer(a)
        if na and f" {na} " in span:
            return True
    return False


def score_open(model: Any, questions: Any, *, tokenizer: Any = None, prompt_template: str = OPEN_PROMPT_TEMPLATE,
               max_new_tokens: int = 10, batch_size: int = 16, progress: bool = False) -> pd.DataFrame:
    """Greedy answers to open questions (``question``, ``answers`` columns), matched with :func:`answer_matches`.

    Returns one row per question: ``id`` (if present), ``generation``, ``answer_span``, ``correct`` and
    ``token_ids`` (the generated ids).
    """
    hf, tok = _resolve(model, tokenizer)
    df = questions if isinstance(questions, pd.DataFrame) else pd.DataFrame(list(questions))
    if len(df) == 0:
        raise ValueError("No open questions to score.")
    for c in ("question", "answers"):
        if c not in df.columns:
            raise ValueError(f"Open questions need a {c!r} column.")
    prompts = [prompt_template.format(question=q) for q in df["question"]]
    _, new_ids = generate_greedy(hf, prompts, tokenizer=tok, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                 progress=progress)
    gens = [tok.decode(ids, skip_special_tokens=True) for ids in new_ids]
    out = pd.DataFrame({"id": df["id"].values} if "id" in df.columns else {})
    out["generation"] = gens
    out["answer_span"] = [answer_span(g) for g in gens]
    out["correct"] = [answer_matches(g, a) for g, a in zip(gens, df["answers"])]
    out["token_ids"] = [list(ids) for ids in new_ids]
    return out


# ============================================================================ metrics


def normalized_accuracy(acc: float, acc_base: float, chance: float = CHANCE) -> float:
    """(acc − chance) / (acc_base − chance), clipped to [0, 1]; NaN (with a warning) if acc_base ≤ chance."""
    for name, v in (("acc", acc), ("acc_base", acc_base)):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return float("nan")
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {v}.")
    if acc_base - chance <= 0:
        warnings.warn(f"Unedited accuracy {acc_base:.3f} is not above chance {chance}: normalized accuracy undefined.",
                      stacklevel=2)
        return float("nan")
    return float(min(1.0, max(0.0, (acc - chance) / (acc_base - chance))))


def harmonic_mean(*values: float) -> float:
    """Harmonic mean of values in [0, 1]: 0 if any value is 0, NaN if any is NaN."""
    if not values:
        raise ValueError("harmonic_mean needs at least one value.")
    vals = [float(v) for v in values]
    if any(math.isnan(v) for v in vals):
        return float("nan")
    if any(v < 0 for v in vals):
        raise ValueError(f"harmonic_mean needs non-negative values, got {vals}.")
    if any(v == 0 for v in vals):
        return 0.0
    return len(vals) / sum(1.0 / v for v in vals)


def coherence_terms(ppl: float, ppl_base: float, fluency: float, fluency_base: float) -> dict[str, float]:
    """``ppl_term`` = min(1, ppl_base/ppl); ``fluency_term`` = min(1, exp(fluency − fluency_base)) (mean token
    log-likelihoods under the unedited model); ``coherence`` = their harmonic mean."""
    for name, v in (("ppl", ppl), ("ppl_base", ppl_base)):
        if not v > 0:
            raise ValueError(f"{name} must be a positive number, got {v}.")
    ppl_term = min(1.0, ppl_base / ppl)
    flu_term = min(1.0, math.exp(fluency - fluency_base))
    return {"ppl_term": ppl_term, "fluency_term": flu_term, "coherence": harmonic_mean(ppl_term, flu_term)}


def compute_metrics(acc: dict[str, float], base: dict[str, float], chance: float = CHANCE) -> dict[str, float]:
    """EMBER metrics from raw measurements.

    ``acc`` and ``base`` are dicts with ``concept``, ``similar``, ``general`` (MC accuracies), ``perplexity``
    and ``fluency`` (mean token log-likelihood of generations under the unedited model) for the evaluated
    and the unedited model.
    """
    norm = {k: normalized_accuracy(acc[k], base[k], chance) for k in ("concept", "similar", "general")}
    efficacy = 1.0 - norm["concept"]
    specificity = harmonic_mean(norm["general"], norm["similar"])
    coh = coherence_terms(acc["perplexity"], base["perplexity"], acc["fluency"], base["fluency"])
    return {
        "norm_concept": norm["concept"],
        "norm_similar": norm["similar"],
        "norm_general": norm["general"],
        "efficacy": efficacy,
        "specificity": specificity,
        **coh,
        "score": harmonic_mean(efficacy, specificity, coh["coherence"]),
    }


def selection_score(efficacy: float, specificity: float, coherence: float, floor: float = 0.9) -> float:
    """δ-selection score (DESIGN §3.6): 0 if specificity or coherence < ``floor`` (the unedited model has 1 on
    both), else the harmonic mean of the three."""
    if any(math.isnan(v) for v in (efficacy, specificity, coherence)):
        return float("nan")
    if specificity < floor or coherence < floor:
        return 0.0
    return harmonic_mean(efficacy, specificity, coherence)


# ============================================================================ Evaluator


@dataclass
class Measurements:
    """Raw measurements of one model state (before normalization against the unedited model)."""

    name: str
    mc: pd.DataFrame           # score_mc rows + column 'set' (concept / similar / general)
    open: pd.DataFrame         # score_open rows
    perplexity: float          # held-out neutral perplexity
    generations: pd.DataFrame  # id, prompt, generation, n_tokens, token_ids, base_logprob (mean per token, unedited)
    seconds: float
    neutral: pd.DataFrame | None = None  # text_logprobs rows of the neutral sentences (text, n_tokens, logprob)
    #: items actually run through the model per part ('concept', 'similar', 'general', 'open', 'neutral',
    #: 'generations'); fewer than the part's size when unaffected items were reused (Evaluator.evaluate).
    remeasured: dict[str, int] = field(default_factory=dict)

    def accuracy(self, which: str) -> float:
        return mc_accuracy(self.mc[self.mc["set"] == which])

    @property
    def fluency(self) -> float:
        """Mean over prompts of the per-token log-likelihood of the generations under the unedited model."""
        return float(self.generations["base_logprob"].mean())

    def raw(self) -> dict[str, float]:
        return {"concept": self.accuracy("concept"), "similar": self.accuracy("similar"),
                "general": self.accuracy("general"), "open": mc_accuracy(self.open),
                "perplexity": self.perplexity, "fluency": self.fluency}


@dataclass
class EvalResult:
    """One evaluated state: ``metrics`` (flat dict, also the row of :meth:`Evaluator.table`) and the raw
    per-question / per-prompt tables."""

    name: str
    metrics: dict[str, Any]
    measurements: Measurements

    @property
    def mc(self) -> pd.DataFrame:
        return self.measurements.mc

    @property
    def open(self) -> pd.DataFrame:
        return self.measurements.open

    @property
    def generations(self) -> pd.DataFrame:
        return self.measurements.generations

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([self.metrics])


@dataclass(frozen=True)
class _Reuse:
    """What :meth:`Evaluator.evaluate` may copy: the reference measurements and the edited token ids."""

    ref: Measurements
    edited: frozenset[int]


def _enter(state: Any) -> contextlib.AbstractContextManager:
    if state is None:
        return contextlib.nullcontext()
    if hasattr(state, "__enter__") and hasattr(state, "__exit__"):
        return state
    if callable(state):
        cm = state()
        if not (hasattr(cm, "__enter__") and hasattr(cm, "__exit__")):
            raise TypeError(f"State callable {state!r} must return a context manager, got {type(cm).__name__}.")
        return cm
    raise TypeError(f"A model state must be None, a context manager or a zero-argument callable returning one; "
                    f"got {type(state).__name__}.")


def _subsample(df: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    if n is None or len(df) <= n:
        return df.reset_index(drop=True)
    idx = np.sort(np.random.default_rng(seed).choice(len(df), size=n, replace=False))
    return df.iloc[idx].reset_index(drop=True)


class Evaluator:
    """Evaluate model states of one concept against the unedited model (DESIGN §5).

    The unedited baseline is measured once (lazily, on first use) and cached; every :meth:`evaluate` call
    measures one *state* and normalizes it against the baseline, so sweeping δ costs one measurement per δ.

    Args:
        model: the TransformerBridge (or HF causal LM + ``tokenizer``) that the states modify in place.
        concept: a :class:`~ember_utils.data.ConceptData` or a concept slug.
        common: :class:`~ember_utils.data.CommonData` (loaded from ``data/`` when ``None``).
        split: question split for concept / similar-domain / general MC and coherence prompts
            ('train' for choosing δ, 'test' for reporting). Open questions have no split: all are used.
        fast: smoke-test mode: seeded random subsets of the sizes in :data:`FAST_LIMITS` and shorter
            generations. Numbers are noisy; use only to check that a notebook runs.
        base_state: puts the model into its *unedited* state (``None``: the model as it is). Use a
            zero-argument callable returning a fresh context manager, e.g. ``peft_model.disable_adapter``
            when LoRA adapters are active by default. It is entered for the baseline and for scoring the
            generations of every state under the unedited model.
        neutral_split: neutral sentences used for perplexity (held-out 'test' by default).
        open_max_new_tokens / gen_max_new_tokens: greedy tokens for open answers / coherence generations.
        gen_no_repeat_ngram_size: n-gram blocking for the coherence generations (0 = plain greedy).
        limits: override the number of items per set, e.g. ``{"neutral": 100}`` (applies in full mode too).
        seed: seed of the FAST / ``limits`` subsampling.
        progress: tqdm bars.
        measure_open: score the open questions (greedy generation). They are reported but enter none of
            efficacy/specificity/coherence, so the δ sweep switches them off to save time (acc_open is NaN).
        baseline: reuse the unedited result of another Evaluator built with the same concept, split and
            settings (skips re-measuring it).

    Usage::

        ev = Evaluator(bridge, "harry_potter", split="train")
        for delta in grid:
            res = ev.evaluate(edit.applied(delta), name=f"delta={delta}")  # any context manager
        ev.table()   # one row per state, baseline first
    """

    def __init__(self, model: Any, concept: Any, common: Any = None, split: str = "test", fast: bool = False, *,
                 tokenizer: Any = None, base_state: Any = None, neutral_split: str = "test",
                 mc_prompt_template: str = MC_PROMPT_TEMPLATE, mc_option_template: str = MC_OPTION_TEMPLATE,
                 open_prompt_template: str = OPEN_PROMPT_TEMPLATE,
                 coherence_prompt_template: str = COHERENCE_PROMPT_TEMPLATE,
                 open_max_new_tokens: int = 10, gen_max_new_tokens: int = 40, gen_no_repeat_ngram_size: int = 3,
                 limits: dict[str, int] | None = None, seed: int = 0, batch_tokens: int = 2048,
                 progress: bool = False, baseline: EvalResult | None = None, measure_open: bool = True):
        from . import data as _data

        if split not in _data.SPLITS:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
        self.model = model
        self.hf, self.tokenizer = _resolve(model, tokenizer)
        self.concept = _data.load_concept(concept) if isinstance(concept, str) else concept
        self.common = common if common is not None else _data.load_common()
        self.split, self.fast, self.seed = split, fast, seed
        self.base_state = base_state
        self.mc_prompt_template, self.mc_option_template = mc_prompt_template, mc_option_template
        self.open_prompt_template = open_prompt_template
        self.coherence_prompt_template = coherence_prompt_template
        self.open_max_new_tokens = min(open_max_new_tokens, 8) if fast else open_max_new_tokens
        self.gen_max_new_tokens = min(gen_max_new_tokens, FAST_LIMITS["gen_max_new_tokens"]) if fast else gen_max_new_tokens
        self.gen_no_repeat_ngram_size = gen_no_repeat_ngram_size
        self.batch_tokens = batch_tokens
        self.progress = progress
        self.measure_open = measure_open
        lim = dict(FAST_LIMITS) if fast else {}
        lim.update(limits or {})
        self.limits = lim
        c, m = self.concept, self.common
        self.questions = {
            "concept": _subsample(c.split("mc", split), lim.get("mc"), seed),
            "similar": _subsample(c.split("similar_mc", split), lim.get("similar_mc"), seed),
            "general": _subsample(m.general(split), lim.get("general_mc"), seed),
        }
        for k, q in self.questions.items():
            if len(q) == 0:
                raise ValueError(f"No {k} MC questions in split {split!r} for concept {c.slug!r}.")
        self.open_questions = _subsample(c.open, lim.get("open"), seed)
        self.neutral_texts = list(_subsample(_data.select_split(m.neutral, neutral_split), lim.get("neutral"), seed)["text"])
        self.prompts = _subsample(_data.select_split(m.coherence_prompts, split), lim.get("coherence_prompts"), seed)
        if not self.neutral_texts or len(self.prompts) == 0:
            raise ValueError("Need at least one neutral sentence and one coherence prompt.")
        if baseline is not None and not isinstance(baseline, EvalResult):
            raise TypeError(f"baseline must be an EvalResult (e.g. another Evaluator's .baseline), "
                            f"got {type(baseline).__name__}.")
        self._baseline: EvalResult | None = baseline
        self._inputs: dict[str, Any] | None = None
        self.results: list[EvalResult] = []

    # ------------------------------------------------------------------ measuring

    def _input_tokens(self) -> dict[str, Any]:
        """Token ids of every input the evaluator feeds the model (cached): per MC set a set per question,
        per open question / neutral sentence a set, per coherence prompt the id list."""
        if self._inputs is None:
            tok = self.tokenizer
            self._inputs = {
                "mc": {which: [set(p).union(*(set(b) for b in bs))
                               for p, bs in _mc_items(q, tok, self.mc_prompt_template, self.mc_option_template)]
                       for which, q in self.questions.items()},
                "open": [set(_encode_prompt(tok, self.open_prompt_template.format(question=q)))
                         for q in self.open_questions["question"]],
                "neutral": [set(_encode_prompt(tok, t)) for t in self.neutral_texts],
                "coherence": [_encode_prompt(tok, self.coherence_prompt_template.format(prompt=p))
                              for p in self.prompts["prompt"]],
            }
        return self._inputs

    def _score_mc(self, q: pd.DataFrame) -> pd.DataFrame:
        return score_mc(self.hf, q, tokenizer=self.tokenizer, prompt_template=self.mc_prompt_template,
                        option_template=self.mc_option_template, batch_tokens=self.batch_tokens,
                        progress=self.progress)

    def _score_open(self, q: pd.DataFrame) -> pd.DataFrame:
        return score_open(self.hf, q, tokenizer=self.tokenizer, prompt_template=self.open_prompt_template,
                          max_new_tokens=self.open_max_new_tokens, progress=self.progress)

    def _text_logprobs(self, texts: list[str]) -> pd.DataFrame:
        return text_logprobs(self.hf, texts, tokenizer=self.tokenizer, batch_tokens=self.batch_tokens,
                             progress=self.progress)

    @staticmethod
    def _measure_part(score: Any, items: pd.DataFrame | pd.Series, old: pd.DataFrame | None,
                      need: np.ndarray | None) -> tuple[pd.DataFrame, int]:
        """``score(items)`` and the number of items scored; with a reference table ``old``, only the items where
        ``need`` is True are scored, and their rows replace ``old``'s (the rest of ``old`` is kept, in order)."""
        if old is None:
            return score(items), len(items)
        old = old.reset_index(drop=True)
        if not need.any():
            return old, 0
        new = score(items[need].reset_index(drop=True)).copy()
        new.index = np.nonzero(need)[0]
        return pd.concat([old[~need], new]).sort_index(), int(need.sum())

    def _measure_state(self, reuse: "_Reuse | None" = None) -> tuple[Measurements, list[list[int]], list[list[int]]]:
        """Measure the model as it is now. With ``reuse``, only inputs that contain an edited token (or whose
        reference generation does) are run; everything else is copied from the reference measurements."""
        t0 = time.perf_counter()
        ref = reuse.ref if reuse is not None else None
        edited = reuse.edited if reuse is not None else frozenset()
        inputs = self._input_tokens() if reuse is not None else None
        counts: dict[str, int] = {}

        def touched(token_sets: Iterable[set[int]]) -> np.ndarray:
            return np.array([not edited.isdisjoint(t) for t in token_sets], dtype=bool)

        mcs = []
        for which, q in self.questions.items():
            old = ref.mc[ref.mc["set"] == which].drop(columns="set") if ref is not None else None
            need = touched(inputs["mc"][which]) if ref is not None else None
            s, counts[which] = self._measure_part(self._score_mc, q, old, need)
            s.insert(0, "set", which)
            mcs.append(s)
        mc = pd.concat(mcs, ignore_index=True)

        if not self.measure_open:  # not part of efficacy/specificity/coherence: skipped e.g. in the δ sweep
            op = pd.DataFrame(columns=["id", "generation", "answer_span", "correct", "token_ids"])
            counts["open"] = 0
        else:
            reusable = (ref is not None and len(ref.open) == len(self.open_questions)
                        and "token_ids" in ref.open.columns)
            need = (touched(p | set(g[:-1]) for p, g in zip(inputs["open"], ref.open["token_ids"]))
                    if reusable else None)
            op, counts["open"] = self._measure_part(self._score_open, self.open_questions,
                                                    ref.open if reusable else None, need)

        reusable = ref is not None and ref.neutral is not None
        neutral, counts["neutral"] = self._measure_part(
            lambda texts: self._text_logprobs(list(texts)), pd.Series(self.neutral_texts),
            ref.neutral if reusable else None, touched(inputs["neutral"]) if reusable else None)
        ppl = _token_perplexity(neutral)

        prompts = [self.coherence_prompt_template.format(prompt=p) for p in self.prompts["prompt"]]
        gen_kw = dict(tokenizer=self.tokenizer, max_new_tokens=self.gen_max_new_tokens,
                      no_repeat_ngram_size=self.gen_no_repeat_ngram_size, progress=self.progress)
        if ref is None:
            p_ids, g_ids = generate_greedy(self.hf, prompts, **gen_kw)
            counts["generations"] = len(prompts)
        else:
            p_ids = [list(p) for p in inputs["coherence"]]
            g_ids = [list(g) for g in ref.generations["token_ids"]]
            need = touched(set(p) | set(g[:-1]) for p, g in zip(p_ids, g_ids))
            if need.any():
                _, new = generate_greedy(self.hf, [p for p, n in zip(prompts, need) if n], **gen_kw)
                for i, g in zip(np.nonzero(need)[0], new):
                    g_ids[i] = g
            counts["generations"] = int(need.sum())
            self._check_unaffected(reuse, inputs)
        meas = Measurements("", mc, op, ppl, pd.DataFrame(), time.perf_counter() - t0, neutral=neutral,
                            remeasured=counts)
        return meas, p_ids, g_ids

    def _check_unaffected(self, reuse: "_Reuse", inputs: dict[str, Any], atol: float = 1e-3) -> None:
        """Spot check of the reuse promise: re-measure one unaffected question per MC set and one unaffected
        neutral sentence inside the state and compare with the reference (float32 batch effects are ~1e-6)."""
        problems = []
        for which, q in self.questions.items():
            free = [i for i, t in enumerate(inputs["mc"][which]) if reuse.edited.isdisjoint(t)]
            if not free:
                continue
            i = free[0]
            got = self._score_mc(q.iloc[[i]])
            old = reuse.ref.mc[reuse.ref.mc["set"] == which].reset_index(drop=True).iloc[i]
            cols = [c for c in got.columns if c.startswith("score_")]
            diff = float(np.nanmax(np.abs(got[cols].to_numpy(float)[0] - old[cols].to_numpy(float))))
            if diff > atol:
                problems.append(f"{which} MC question {old.get('id', i)!r}: option scores differ by {diff:.3g}")
        free = [i for i, t in enumerate(inputs["neutral"]) if reuse.edited.isdisjoint(t)]
        if free and reuse.ref.neutral is not None:
            i = free[0]
            got = self._text_logprobs([self.neutral_texts[i]]).iloc[0]
            old = reuse.ref.neutral.iloc[i]
            diff = abs(got.logprob - old.logprob) / max(1, int(old.n_tokens))
            if diff > atol:
                problems.append(f"neutral sentence {i}: log-likelihood per token differs by {diff:.3g}")
        if problems:
            raise ValueError("edited_tokens= promised that the state only changes the input embeddings of "
                             f"{len(reuse.edited)} tokens relative to the reference '{reuse.ref.name}', but outputs "
                             "changed on inputs without those tokens (" + "; ".join(problems) + "). Evaluate this "
                             "state without edited_tokens= (e.g. LoRA, or an edit of a model with tied embeddings).")

    def _generation_frame(self, p_ids: list[list[int]], g_ids: list[list[int]],
                          ref: pd.DataFrame | None = None) -> pd.DataFrame:
        """Generations plus their mean per-token log-likelihood under the model as it is now (call it in the
        unedited state). Rows whose tokens equal ``ref``'s keep ``ref``'s score."""
        lps: list[float | None] = [None] * len(g_ids)
        if ref is not None:
            for i, (g, g_ref, lp) in enumerate(zip(g_ids, ref["token_ids"], ref["base_logprob"])):
                if list(g) == list(g_ref):
                    lps[i] = float(lp)
        todo = [i for i, lp in enumerate(lps) if lp is None]
        if todo:
            new = continuation_logprobs(self.hf, [p_ids[i] for i in todo], [g_ids[i] for i in todo],
                                        batch_tokens=self.batch_tokens)
            for i, lp in zip(todo, new):
                lps[i] = float(lp.mean())
        return pd.DataFrame({
            "id": self.prompts["id"].values,
            "prompt": self.prompts["prompt"].values,
            "generation": [self.tokenizer.decode(g, skip_special_tokens=True) for g in g_ids],
            "n_tokens": [len(g) for g in g_ids],
            "token_ids": [list(g) for g in g_ids],
            "base_logprob": lps,
        })

    def _result(self, name: str, meas: Measurements, base: Measurements) -> EvalResult:
        raw, braw = meas.raw(), base.raw()
        metrics = {"name": name, "concept": self.concept.slug, "split": self.split, "fast": self.fast,
                   "n_concept": int((meas.mc["set"] == "concept").sum()),
                   "acc_concept": raw["concept"], "acc_similar": raw["similar"], "acc_general": raw["general"],
                   "acc_open": raw["open"], "perplexity": raw["perplexity"], "fluency_logprob": raw["fluency"]}
        metrics.update(compute_metrics(raw, braw))
        metrics["selection_score"] = selection_score(metrics["efficacy"], metrics["specificity"], metrics["coherence"])
        metrics["seconds"] = meas.seconds
        total = len(meas.mc) + len(self.neutral_texts) + len(self.prompts) + (
            len(self.open_questions) if self.measure_open else 0)
        metrics["remeasured_fraction"] = sum(meas.remeasured.values()) / total if meas.remeasured else 1.0
        return EvalResult(name, metrics, meas)

    def _finish(self, name: str, meas: Measurements, p_ids: list[list[int]], g_ids: list[list[int]],
                ref_generations: pd.DataFrame | None, enter_base: bool = True) -> Measurements:
        """Score the generations under the unedited model (``base_state``, entered here unless the caller is
        already inside it) and name the measurements."""
        t0 = time.perf_counter()
        with _enter(self.base_state) if enter_base else contextlib.nullcontext():
            gens = self._generation_frame(p_ids, g_ids, ref_generations)
        meas.name, meas.generations = name, gens
        meas.seconds += time.perf_counter() - t0
        return meas

    @property
    def baseline(self) -> EvalResult:
        """The unedited model's result (computed on first access under ``base_state``, then cached)."""
        if self._baseline is None:
            with _enter(self.base_state):
                meas, p_ids, g_ids = self._measure_state()
                meas = self._finish("unedited", meas, p_ids, g_ids, None, enter_base=False)
            self._baseline = self._result("unedited", meas, meas)
        return self._baseline

    def _reuse_plan(self, edited_tokens: Any, reference: EvalResult | None) -> "_Reuse":
        ids = edited_tokens.tolist() if hasattr(edited_tokens, "tolist") else list(edited_tokens)
        if not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in ids):
            raise TypeError("edited_tokens must be integer token ids (e.g. edit.token_ids).")
        w_in = self.hf.get_input_embeddings().weight
        n_vocab = w_in.shape[0]
        bad = [int(i) for i in ids if not 0 <= int(i) < n_vocab]
        if bad:
            raise ValueError(f"edited_tokens contains ids outside the vocabulary [0, {n_vocab}): {bad[:5]}.")
        if w_in.data_ptr() == _head(self.hf).weight.data_ptr():
            raise ValueError("The model ties its input and output embeddings, so an embedding edit changes every "
                             "output; reusing unaffected inputs is wrong. Load it untied (load_model does by "
                             "default) or evaluate without edited_tokens=.")
        ref = reference if reference is not None else self.baseline
        if not any(ref is r for r in [self.baseline, *self.results]):
            raise ValueError("reference must be this evaluator's baseline or one of its results (the inputs must "
                             "be the same); got an EvalResult measured elsewhere.")
        return _Reuse(ref.measurements, frozenset(int(i) for i in ids))

    def evaluate(self, state: Any = None, name: str | None = None, *, edited_tokens: Any = None,
                 reference: EvalResult | None = None) -> EvalResult:
        """Measure the model inside ``state`` (a context manager, or a zero-argument callable returning one;
        ``None`` = the model as it is now) and compare it with the cached unedited baseline.

        MC, open answers, perplexity and generation happen inside ``state``; the generations are then scored
        by the unedited model (inside ``base_state``) after ``state`` has been exited.

        ``edited_tokens`` (e.g. ``edit.token_ids``) declares that ``state`` differs from ``reference`` (default:
        the baseline; pass e.g. a LoRA result when the edit is applied on top of LoRA) *only* in the input
        embeddings of these tokens. The model's outputs on an input without any of them are then exactly the
        reference's, so only inputs that contain an edited token — for generations: in the prompt or in the
        reference's generated tokens before the last — are run again; the rest is copied. One unaffected item
        per MC set and one neutral sentence are re-measured as a spot check (ValueError if they changed).
        ``metrics['remeasured_fraction']`` says how much was run.
        """
        if reference is not None and edited_tokens is None:
            raise ValueError("reference= only applies together with edited_tokens=.")
        ctx = _enter(state)  # validate the state before the (possibly long) baseline computation
        base = self.baseline
        reuse = self._reuse_plan(edited_tokens, reference) if edited_tokens is not None else None
        name = name or f"state-{len(self.results) + 1}"
        with ctx:
            meas, p_ids, g_ids = self._measure_state(reuse)
        meas = self._finish(name, meas, p_ids, g_ids, reuse.ref.generations if reuse is not None else None)
        res = self._result(name, meas, base.measurements)
        self.results.append(res)
        return res

    def table(self) -> pd.DataFrame:
        """One row per evaluated state (the unedited baseline first)."""
        return pd.DataFrame([self.baseline.metrics] + [r.metrics for r in self.results])
