"""The :class:`Evaluator`: one concept's questions, neutral text and prompts, measured for any model state.

It measures the unedited baseline once, then each state: multiple choice (concept, similar domain, general),
open questions, held-out neutral perplexity and coherence generations, and turns them into efficacy,
specificity and coherence (``eval.metrics``). Computation goes through the Hugging Face model behind the
bridge (``models.hf_model_of``), which shares its parameters and hook points with the bridge, so embedding
edits, ``peft`` adapters and bridge hooks are all seen.

Prompt formats (all are parameters): MC ``"Question: {question}\nAnswer:"`` then each option as
``" {option}"``; open questions after two fixed neutral worked examples (``eval.open_qa``); coherence
prompts as ``"{prompt}\n"``, greedy with no repeated 3-gram (plain greedy decoding of a small base model
loops, and the unedited model rates its own loops highly, so the fluency term would measure looping).

A state that only changes some input embeddings is measured on the affected inputs only (``eval.reuse``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from ..profiles import run_profile
from ._hf import _encode_prompt, _resolve
from .generation import generate_greedy
from .likelihood import _token_perplexity, continuation_logprobs, text_logprobs
from .mc import MC_OPTION_TEMPLATE, MC_PROMPT_TEMPLATE, _mc_items, score_mc
from .measurements import EvalResult, Measurements
from .metrics import compute_metrics, selection_score
from .open_qa import OPEN_PROMPT_TEMPLATE, score_open
from .reuse import ReusePlan, plan_reuse
from .reuse import touched as _touched

__all__ = ["COHERENCE_PROMPT_TEMPLATE", "Evaluator"]

COHERENCE_PROMPT_TEMPLATE = "{prompt}\n"



# ============================================================================ Evaluator


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
    """Evaluate model states of one concept against the unedited model.

    The unedited baseline is measured once (lazily, on first use) and cached; every :meth:`evaluate` call
    measures one *state* and normalizes it against the baseline, so sweeping δ costs one measurement per δ.

    Args:
        model: the TransformerBridge (or HF causal LM + ``tokenizer``) that the states modify in place.
        concept: a :class:`~ember_utils.data.ConceptData` or a concept slug.
        common: :class:`~ember_utils.data.CommonData` (loaded from ``data/`` when ``None``).
        split: question split for concept / similar-domain / general MC, open questions and coherence prompts
            ('train' for choosing δ, 'test' for reporting).
        fast: smoke-test mode: seeded random subsets of the sizes in ``profiles.FAST.eval_limits`` and shorter
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
            res = ev.evaluate(edit.with_delta(delta), name=f"delta={delta}")  # any ModelState
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
        from .. import data as _data

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
        lim = dict(run_profile(fast).eval_limits)
        lim.update(limits or {})
        self.limits = lim
        self.open_max_new_tokens = min(open_max_new_tokens, lim.get("open_max_new_tokens", open_max_new_tokens))
        self.gen_max_new_tokens = min(gen_max_new_tokens, lim.get("gen_max_new_tokens", gen_max_new_tokens))
        self.gen_no_repeat_ngram_size = gen_no_repeat_ngram_size
        self.batch_tokens = batch_tokens
        self.progress = progress
        self.measure_open = measure_open
        c, m = self.concept, self.common
        self.questions = {
            "concept": _subsample(c.split("mc", split), lim.get("mc"), seed),
            "similar": _subsample(c.split("similar_mc", split), lim.get("similar_mc"), seed),
            "general": _subsample(m.general(split), lim.get("general_mc"), seed),
        }
        for k, q in self.questions.items():
            if len(q) == 0:
                raise ValueError(f"No {k} MC questions in split {split!r} for concept {c.slug!r}.")
        self.open_questions = _subsample(c.split("open", split), lim.get("open"), seed)
        if measure_open and len(self.open_questions) == 0:
            raise ValueError(f"No open questions in split {split!r} for concept {c.slug!r} (or pass "
                             "measure_open=False).")
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

    def _measure_state(self, reuse: ReusePlan | None = None) -> tuple[Measurements, list[list[int]], list[list[int]]]:
        """Measure the model as it is now. With ``reuse``, only inputs that contain an edited token (or whose
        reference generation does) are run; everything else is copied from the reference measurements."""
        t0 = time.perf_counter()
        ref = reuse.ref if reuse is not None else None
        edited = reuse.edited if reuse is not None else frozenset()
        inputs = self._input_tokens() if reuse is not None else None
        counts: dict[str, int] = {}

        def touched(token_sets: Iterable[set[int]]) -> np.ndarray:
            return _touched(edited, token_sets)

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

    def _check_unaffected(self, reuse: ReusePlan, inputs: dict[str, Any], atol: float = 1e-3) -> None:
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
            raise ValueError("The state declared that it only changes the input embeddings of "
                             f"{len(reuse.edited)} tokens relative to the reference '{reuse.ref.name}', but outputs "
                             "changed on inputs without those tokens (" + "; ".join(problems) + "). Its "
                             "touched_tokens are wrong; evaluate it with reuse=False.")

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

    def evaluate(self, state: Any = None, name: str | None = None, *, reuse: bool = True,
                 reference: EvalResult | None = None) -> EvalResult:
        """Measure the model inside ``state`` and compare it with the cached unedited baseline.

        ``state`` is a :class:`~ember_utils.state.ModelState` (applied to this evaluator's model for the
        measurement and reverted after), any other context manager or zero-argument callable returning one,
        or ``None`` (the model as it is now). MC, open answers, perplexity and generation happen inside
        ``state``; the generations are then scored by the unedited model (inside ``base_state``).

        With ``reuse`` (default) a ModelState that only changes the input embeddings of some tokens relative
        to ``reference``'s state (default: the baseline; pass e.g. a LoRA result when an EMBER edit is stacked
        on that LoRA state) has only the inputs that contain one of those tokens — for generations: in the
        prompt or in the reference's generated tokens before the last — run again; the rest is copied. One
        unaffected item per MC set and one neutral sentence are re-measured as a spot check (ValueError if they
        changed). ``metrics['remeasured_fraction']`` says how much was run.
        """
        from ..state import ModelState

        if isinstance(state, ModelState):
            if state.applied:
                raise ValueError(f"{type(state).__name__} is already applied; pass it unapplied (the evaluator "
                                 "applies it to its model for the measurement).")
            ctx = state.applied_to(self.model)
        else:
            ctx = _enter(state)  # validate the state before the (possibly long) baseline computation
        if reference is not None and not reuse:
            raise ValueError("reference= only applies with reuse=True.")
        base = self.baseline
        ref = reference if reference is not None else base
        plan = plan_reuse(self.hf, state, ref, [base, *self.results]) if reuse else None
        name = name or f"state-{len(self.results) + 1}"
        with ctx:
            meas, p_ids, g_ids = self._measure_state(plan)
        meas = self._finish(name, meas, p_ids, g_ids, plan.ref.generations if plan is not None else None)
        res = self._result(name, meas, base.measurements)
        res.state = state if isinstance(state, ModelState) else None
        self.results.append(res)
        return res

    def table(self) -> pd.DataFrame:
        """One row per evaluated state (the unedited baseline first)."""
        return pd.DataFrame([self.baseline.metrics] + [r.metrics for r in self.results])
