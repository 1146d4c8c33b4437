"""The :class:`Evaluator`: one concept's questions, texts and prompts, measured for any model state.

It measures the unedited baseline once, then each state, on every part of :data:`PARTS`: multiple choice
(concept, its facts without its names = indirect, similar domain, the concept's words in other senses,
general knowledge), open questions, held-out neutral perplexity, other-sense sentence perplexity, greedy
generations on neutral coherence prompts and seamlessness continuations of concept prompts; then efficacy,
specificity and coherence (``eval.metrics``) with paired bootstrap intervals and McNemar's test
(``eval.uncertainty``). Computation goes through the Hugging Face model behind the bridge
(``models.hf_model_of``), which shares its parameters and hook points with the bridge, so embedding edits,
``peft`` adapters and bridge hooks are all seen.

Prompt formats (all are parameters): MC ``"Question: {question}\nAnswer:"`` then each option as
``" {option}"``; open questions after two fixed neutral worked examples (``eval.open_qa``); coherence
prompts as ``"{prompt}\n"``, greedy with no repeated 3-gram (plain greedy decoding of a small base model
loops, and the unedited model rates its own loops highly, so the fluency term would measure looping);
seamlessness prompts as they are, plain greedy (loops are what its repetition term looks for).

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
from .open_qa import OPEN_PROMPT_TEMPLATE, open_answers
from .reuse import ReusePlan, plan_reuse
from .reuse import touched as _touched
from .seamlessness import score_continuations
from .uncertainty import flip_tests, named_breakdown, paired_metric_intervals

__all__ = ["COHERENCE_PROMPT_TEMPLATE", "Evaluator", "PARTS", "REQUIRED_PARTS"]

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


#: Every part an evaluation can measure; ``REQUIRED_PARTS`` cannot be left out.
PARTS = ("concept", "indirect", "similar", "other_sense", "general", "open", "neutral", "other_sense_text",
         "coherence", "seamlessness")
REQUIRED_PARTS = ("concept", "similar", "general", "neutral", "coherence")
#: MC parts: (part, concept table or None for the shared general questions, FAST/limits key)
_MC_PARTS = (("concept", "mc", "mc"), ("indirect", "indirect_mc", "indirect_mc"), ("similar", "similar_mc", "similar_mc"),
             ("other_sense", "collateral_mc", "collateral_mc"), ("general", None, "general_mc"))


class Evaluator:
    """Evaluate model states of one concept against the unedited model.

    The unedited baseline is measured once (lazily, on first use) and cached; every :meth:`evaluate` call
    measures one *state* and normalizes it against the baseline, so sweeping δ costs one measurement per δ.

    Args:
        model: the TransformerBridge (or HF causal LM + ``tokenizer``) that the states modify in place.
        concept: a :class:`~ember_utils.data.ConceptData` or a concept slug.
        common: :class:`~ember_utils.data.CommonData` (loaded from ``data/`` when ``None``).
        split: split of every concept-specific and prompt set ('train' for choosing δ, 'test' for reporting).
        fast: smoke-test mode: seeded random subsets of the sizes in ``profiles.FAST.eval_limits`` and shorter
            generations. Numbers are noisy; use only to check that a notebook runs.
        parts: the parts to measure (default: every part of :data:`PARTS` that has items in ``split``; a part
            named here that has none is an error). :data:`REQUIRED_PARTS` are always measured.
        base_state: puts the model into its *unedited* state (``None``: the model as it is). Use a
            zero-argument callable returning a fresh context manager, e.g. ``peft_model.disable_adapter``
            when LoRA adapters are active by default. It is entered for the baseline and for scoring the
            generations of every state under the unedited model.
        neutral_split: neutral sentences used for perplexity (default: 'validation' when ``split`` is
            'train', else 'test'; the sweep that chooses δ never reads a test split).
        open_max_new_tokens / gen_max_new_tokens / seamless_max_new_tokens: greedy tokens for open answers /
            coherence generations / seamlessness continuations.
        gen_no_repeat_ngram_size: n-gram blocking for the coherence generations (0 = plain greedy).
        limits: override the number of items per set, e.g. ``{"neutral": 100}`` (applies in full mode too).
        seed: seed of the FAST / ``limits`` subsampling and of the bootstrap.
        n_boot: bootstrap draws for the intervals (0: no intervals).
        progress: tqdm bars.
        measure_open: ``False`` leaves out the open questions (same as omitting "open" from ``parts``): they
            enter none of efficacy/specificity/coherence, so the δ sweep skips them (acc_open is NaN).
        baseline: reuse the unedited result of another Evaluator built with the same concept, split and
            settings (skips re-measuring it).

    Usage::

        ev = Evaluator(bridge, "harry_potter", split="train")
        for delta in grid:
            res = ev.evaluate(edit.with_delta(delta), name=f"delta={delta}")  # any ModelState
        ev.table()   # one row per state, baseline first
    """

    def __init__(self, model: Any, concept: Any, common: Any = None, split: str = "test", fast: bool = False, *,
                 parts: Iterable[str] | None = None, tokenizer: Any = None, base_state: Any = None,
                 neutral_split: str | None = None,
                 mc_prompt_template: str = MC_PROMPT_TEMPLATE, mc_option_template: str = MC_OPTION_TEMPLATE,
                 open_prompt_template: str = OPEN_PROMPT_TEMPLATE,
                 coherence_prompt_template: str = COHERENCE_PROMPT_TEMPLATE,
                 open_max_new_tokens: int = 10, gen_max_new_tokens: int = 40, seamless_max_new_tokens: int = 16,
                 gen_no_repeat_ngram_size: int = 3, limits: dict[str, int] | None = None, seed: int = 0,
                 n_boot: int = 2000, batch_tokens: int = 2048, progress: bool = False,
                 baseline: EvalResult | None = None, measure_open: bool = True):
        from .. import data as _data

        if split not in _data.SPLITS:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
        neutral_split = neutral_split or ("validation" if split == "train" else "test")
        if neutral_split not in _data.NEUTRAL_SPLITS:
            raise ValueError(f"neutral_split must be one of {list(_data.NEUTRAL_SPLITS)}, got {neutral_split!r}.")
        self.model = model
        self.hf, self.tokenizer = _resolve(model, tokenizer)
        self.concept = _data.load_concept(concept) if isinstance(concept, str) else concept
        self.common = common if common is not None else _data.load_common()
        self.split, self.fast, self.seed, self.n_boot = split, fast, seed, n_boot
        self.base_state = base_state
        self.mc_prompt_template, self.mc_option_template = mc_prompt_template, mc_option_template
        self.open_prompt_template = open_prompt_template
        self.coherence_prompt_template = coherence_prompt_template
        lim = dict(run_profile(fast).eval_limits)
        lim.update(limits or {})
        self.limits = lim
        self.open_max_new_tokens = min(open_max_new_tokens, lim.get("open_max_new_tokens", open_max_new_tokens))
        self.gen_max_new_tokens = min(gen_max_new_tokens, lim.get("gen_max_new_tokens", gen_max_new_tokens))
        self.seamless_max_new_tokens = min(seamless_max_new_tokens,
                                           lim.get("seamless_max_new_tokens", seamless_max_new_tokens))
        self.gen_no_repeat_ngram_size = gen_no_repeat_ngram_size
        self.batch_tokens = batch_tokens
        self.progress = progress
        c, m = self.concept, self.common
        explicit = parts is not None
        wanted = list(PARTS if parts is None else parts)
        unknown = sorted(set(wanted) - set(PARTS))
        if unknown:
            raise ValueError(f"Unknown evaluation parts {unknown}; use some of {list(PARTS)}.")
        if not measure_open and "open" in wanted:
            wanted.remove("open")
        tables = {
            **{part: (c.split(table, split) if table else m.general(split)) for part, table, _ in _MC_PARTS},
            "open": c.split("open", split), "other_sense_text": c.split("collateral_sentences", split),
            "seamlessness": c.split("prompts", split),
            "coherence": _data.select_split(m.coherence_prompts, split),
            "neutral": _data.select_split(m.neutral, neutral_split),
        }
        limit_key = {**{part: key for part, _, key in _MC_PARTS}, "open": "open", "neutral": "neutral",
                     "other_sense_text": "collateral_sentences", "seamlessness": "prompts",
                     "coherence": "coherence_prompts"}
        self.parts: tuple[str, ...] = tuple(p for p in PARTS if p in set(wanted) | set(REQUIRED_PARTS))
        empty = [p for p in self.parts if len(tables[p]) == 0]
        hard = [p for p in empty if p in REQUIRED_PARTS or explicit or p == "open"]
        if hard:
            hint = " (or pass measure_open=False)" if hard == ["open"] else ""
            where = f"split {split!r}" if "neutral" not in hard else f"split {split!r} (neutral: {neutral_split!r})"
            raise ValueError(f"No items for evaluation part(s) {hard} in {where} for concept {c.slug!r}"
                             f"{hint}; parts available: {[p for p in PARTS if len(tables[p])]}.")
        self.parts = tuple(p for p in self.parts if p not in empty)
        sub = {p: _subsample(tables[p], lim.get(limit_key[p]), seed) for p in self.parts}
        self.questions = {p: sub[p] for p, _, _ in _MC_PARTS if p in self.parts}
        self.open_questions = sub.get("open", tables["open"].iloc[:0])
        self.measure_open = "open" in self.parts
        self.neutral_texts = list(sub["neutral"]["text"])
        self.collateral_texts = list(sub["other_sense_text"]["text"]) if "other_sense_text" in sub else []
        self.prompts = sub["coherence"]
        self.seamless_prompts = sub.get("seamlessness")
        #: the data split each part reads (the δ sweep checks that none is 'test')
        self.splits = {p: (neutral_split if p == "neutral" else split) for p in self.parts}
        if baseline is not None and not isinstance(baseline, EvalResult):
            raise TypeError(f"baseline must be an EvalResult (e.g. another Evaluator's .baseline), "
                            f"got {type(baseline).__name__}.")
        self._baseline: EvalResult | None = baseline
        self._inputs: dict[str, Any] | None = None
        self.results: list[EvalResult] = []

    # ------------------------------------------------------------------ measuring

    def _input_tokens(self) -> dict[str, Any]:
        """Token ids of every input the evaluator feeds the model (cached): per MC set a set per question,
        per sentence a set, per generation prompt (open, coherence, seamlessness) the id list."""
        if self._inputs is None:
            tok = self.tokenizer
            self._inputs = {
                "mc": {which: [set(p).union(*(set(b) for b in bs))
                               for p, bs in _mc_items(q, tok, self.mc_prompt_template, self.mc_option_template)]
                       for which, q in self.questions.items()},
                "neutral": [set(_encode_prompt(tok, t)) for t in self.neutral_texts],
                "collateral": [set(_encode_prompt(tok, t)) for t in self.collateral_texts],
                **{part: [_encode_prompt(tok, p) for p in self._generation_prompts(part)]
                   for part in ("open", "coherence", "seamlessness")},
            }
        return self._inputs

    def _generation_prompts(self, part: str) -> list[str]:
        """The prompt texts of a generation part ('open', 'coherence' or 'seamlessness')."""
        if part == "open":
            return [self.open_prompt_template.format(question=q) for q in self.open_questions["question"]]
        if part == "coherence":
            return [self.coherence_prompt_template.format(prompt=p) for p in self.prompts["prompt"]]
        return [] if self.seamless_prompts is None else list(self.seamless_prompts["prompt"])

    def _score_mc(self, q: pd.DataFrame) -> pd.DataFrame:
        return score_mc(self.hf, q, tokenizer=self.tokenizer, prompt_template=self.mc_prompt_template,
                        option_template=self.mc_option_template, batch_tokens=self.batch_tokens,
                        progress=self.progress)

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

    def _generation_settings(self) -> dict[str, tuple[int, int]]:
        """Per generation part: (max new tokens, no-repeat n-gram size)."""
        out = {"coherence": (self.gen_max_new_tokens, self.gen_no_repeat_ngram_size)}
        if self.measure_open:
            out["open"] = (self.open_max_new_tokens, 0)
        if self.seamless_prompts is not None:
            out["seamlessness"] = (self.seamless_max_new_tokens, 0)
        return out

    def _generate_all(self, ref: Measurements | None, edited: frozenset[int],
                      counts: dict[str, int]) -> dict[str, tuple[list[list[int]], list[list[int]]]]:
        """Greedy generations of every generation part: (prompt ids, generated ids) per part. With a reference,
        only prompts whose tokens (or whose reference generation before its last token) contain an edited token
        are generated again. Parts with the same n-gram setting share one batched call (a decoding step costs
        about the same for 8 rows as for 40 on a CPU), each row cut to its part's length afterwards (greedy
        tokens do not depend on how many more are generated)."""
        settings = self._generation_settings()
        prompts = {part: self._generation_prompts(part) for part in settings}
        p_ids = {part: self._input_tokens()[part] for part in settings}
        ref_rows = {"coherence": ref.generations if ref is not None else None,
                    "seamlessness": ref.seamless if ref is not None else None,
                    "open": ref.open if ref is not None and len(ref.open) == len(self.open_questions) else None}
        g_ids: dict[str, list[list[int]]] = {}
        todo: dict[int, list[tuple[str, int]]] = {}
        for part, (_, ngram) in settings.items():
            old = ref_rows[part]
            if old is None or "token_ids" not in old.columns:
                g_ids[part] = [[] for _ in prompts[part]]
                need = np.ones(len(prompts[part]), dtype=bool)
            else:
                g_ids[part] = [list(g) for g in old["token_ids"]]
                need = _touched(edited, (set(p) | set(g[:-1]) for p, g in zip(p_ids[part], g_ids[part])))
            counts[part] = int(need.sum())
            todo.setdefault(ngram, []).extend((part, int(i)) for i in np.nonzero(need)[0])
        for ngram, rows in todo.items():
            if not rows:
                continue
            longest = max(settings[part][0] for part, _ in rows)
            _, new = generate_greedy(self.hf, [prompts[part][i] for part, i in rows], tokenizer=self.tokenizer,
                                     max_new_tokens=longest, no_repeat_ngram_size=ngram, batch_size=64,
                                     progress=self.progress)
            for (part, i), g in zip(rows, new):
                g_ids[part][i] = list(g[:settings[part][0]])
        return {part: ([list(p) for p in p_ids[part]], g_ids[part]) for part in settings}

    def _measure_state(self, reuse: ReusePlan | None = None) -> tuple[Measurements, dict[str, tuple]]:
        """Measure the model as it is now. With ``reuse``, only inputs that contain an edited token (or whose
        reference generation does) are run; everything else is copied from the reference measurements.
        Returns the measurements and, per generation part, (prompt ids, generated ids) to be scored."""
        t0 = time.perf_counter()
        ref = reuse.ref if reuse is not None else None
        edited = reuse.edited if reuse is not None else frozenset()
        inputs = self._input_tokens()
        counts: dict[str, int] = {}

        def touched(token_sets: Iterable[set[int]]) -> np.ndarray:
            return _touched(edited, token_sets)

        # every MC set in one packed scoring call
        sets = list(self.questions)
        need = {w: (touched(inputs["mc"][w]) if ref is not None else np.ones(len(self.questions[w]), dtype=bool))
                for w in sets}
        todo = [self.questions[w][need[w]].assign(set=w) for w in sets if need[w].any()]
        scored = self._score_mc(pd.concat(todo, ignore_index=True)) if todo else None
        mcs, start = [], 0
        for w in sets:
            counts[w] = n = int(need[w].sum())
            new = scored.iloc[start:start + n].copy() if n else None
            start += n
            if n:  # identity columns from this set's own table (the joint call fills others' with NaN)
                q = self.questions[w][need[w]]
                new = new.drop(columns=[c for c in ("id", "split", "subject") if c in new.columns])
                ident = pd.DataFrame({c: q[c].values for c in ("id", "split", "subject") if c in q.columns},
                                     index=new.index)
                new = pd.concat([ident, new], axis=1)
            if ref is None:
                s = new.reset_index(drop=True)
            else:
                s = ref.mc[ref.mc["set"] == w].drop(columns="set").dropna(axis=1, how="all").reset_index(drop=True)
                if n:
                    new.index = np.nonzero(need[w])[0]
                    s = pd.concat([s[~need[w]], new[s.columns]]).sort_index()
            s = s.reset_index(drop=True)
            s.insert(0, "set", w)
            mcs.append(s)
        mc = pd.concat(mcs, ignore_index=True)

        def texts_part(texts: list[str], old: pd.DataFrame | None, key: str) -> pd.DataFrame:
            scored, counts[key] = self._measure_part(lambda t: self._text_logprobs(list(t)), pd.Series(texts), old,
                                                     touched(inputs[key]) if old is not None else None)
            return scored

        neutral = texts_part(self.neutral_texts, ref.neutral if ref is not None else None, "neutral")
        collateral = (texts_part(self.collateral_texts, ref.collateral if ref is not None else None, "collateral")
                      if self.collateral_texts else None)
        gens = self._generate_all(ref, edited, counts)
        if self.measure_open:
            op = open_answers(self.open_questions, gens.pop("open")[1], self.tokenizer)
        else:  # not part of efficacy/specificity/coherence: skipped e.g. in the δ sweep
            op = pd.DataFrame(columns=["id", "generation", "answer_span", "correct", "token_ids"])
            counts["open"] = 0
        if reuse is not None:
            self._check_unaffected(reuse, inputs)
        meas = Measurements("", mc, op, _token_perplexity(neutral), pd.DataFrame(), time.perf_counter() - t0,
                            neutral=neutral, remeasured=counts, collateral=collateral)
        return meas, gens

    def _check_unaffected(self, reuse: ReusePlan, inputs: dict[str, Any], atol: float = 1e-3) -> None:
        """Spot check of the reuse promise: re-measure one unaffected question per MC set and one unaffected
        neutral sentence inside the state and compare with the reference (float32 batch effects are ~1e-6)."""
        problems = []
        picks = []  # (set, index) of the first unaffected question of every MC set, scored in one call
        for which in self.questions:
            free = [i for i, t in enumerate(inputs["mc"][which]) if reuse.edited.isdisjoint(t)]
            if free:
                picks.append((which, free[0]))
        if picks:
            got = self._score_mc(pd.concat([self.questions[w].iloc[[i]] for w, i in picks], ignore_index=True))
            cols = [c for c in got.columns if c.startswith("score_")]
            for r, (which, i) in enumerate(picks):
                old = reuse.ref.mc[reuse.ref.mc["set"] == which].reset_index(drop=True).iloc[i]
                diff = float(np.nanmax(np.abs(got[cols].to_numpy(float)[r] - old[cols].to_numpy(float))))
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
        """Coherence generations plus their mean per-token log-likelihood under the model as it is now (call it
        in the unedited state). Rows whose tokens equal ``ref``'s keep ``ref``'s score."""
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

    def _seamless_frame(self, g_ids: list[list[int]], ref: pd.DataFrame | None = None) -> pd.DataFrame:
        """Seamlessness scores of the continuations (call it in the unedited state); rows whose tokens equal
        ``ref``'s keep ``ref``'s scores."""
        cols = ["generation", "n_tokens", "fluency", "repetition", "word_share"]
        same = ([list(g) == list(r) for g, r in zip(g_ids, ref["token_ids"])] if ref is not None
                else [False] * len(g_ids))
        scored = pd.DataFrame(index=range(len(g_ids)), columns=cols)
        todo = [i for i, s in enumerate(same) if not s]
        if todo:
            new = score_continuations(self.hf, [g_ids[i] for i in todo], tokenizer=self.tokenizer,
                                      batch_tokens=self.batch_tokens)
            new.index = todo
            scored.loc[todo, cols] = new[cols]
        keep = [i for i, s in enumerate(same) if s]
        if keep:
            scored.loc[keep, cols] = ref.iloc[keep][cols].to_numpy()
        out = pd.DataFrame({"id": self.seamless_prompts["id"].values, "prompt": self.seamless_prompts["prompt"].values})
        for c in cols:
            out[c] = scored[c].to_numpy()
        out = out.astype({"n_tokens": int, "fluency": float, "repetition": float, "word_share": float})
        out["token_ids"] = [list(g) for g in g_ids]
        return out

    def _edited_ids(self, state: Any) -> frozenset[int] | None:
        from ..state import ModelState

        return state.touched_tokens if isinstance(state, ModelState) else None

    def _result(self, name: str, meas: Measurements, base: Measurements, edited: frozenset[int] | None = None
                ) -> EvalResult:
        raw, braw = meas.raw(), base.raw()
        metrics = {"name": name, "concept": self.concept.slug, "split": self.split, "fast": self.fast,
                   "parts": "+".join(self.parts),
                   **{f"n_{which}": int((meas.mc["set"] == which).sum()) for which in self.questions},
                   **{f"acc_{which}": raw[which] for which in self.questions},
                   "acc_open": raw["open"], "perplexity": raw["perplexity"], "fluency_logprob": raw["fluency"]}
        for key in ("other_sense_perplexity", "seamless_fluency", "seamless_repetition", "seamless_word_share"):
            if key in raw:
                metrics[key] = raw[key]
        metrics.update(compute_metrics(raw, braw))
        metrics["selection_score"] = selection_score(metrics["efficacy"], metrics["specificity"], metrics["coherence"])
        if self.n_boot:
            metrics.update(paired_metric_intervals(meas, base, n_boot=self.n_boot, seed=self.seed))
        metrics.update(flip_tests(meas, base))
        if edited:  # accuracy on questions with and without an edited token
            inputs = self._input_tokens()["mc"]
            for which in ("concept", "indirect"):
                if which in self.questions:
                    named = _touched(edited, inputs[which])
                    metrics.update(named_breakdown(meas.mc.loc[meas.mc["set"] == which, "correct"],
                                                   base.mc.loc[base.mc["set"] == which, "correct"], named, which))
        metrics["seconds"] = meas.seconds
        total = (len(meas.mc) + len(self.neutral_texts) + len(self.collateral_texts) + len(self.prompts)
                 + (len(self.seamless_prompts) if self.seamless_prompts is not None else 0)
                 + (len(self.open_questions) if self.measure_open else 0))
        metrics["remeasured_fraction"] = sum(meas.remeasured.values()) / total if meas.remeasured else 1.0
        return EvalResult(name, metrics, meas)

    def _finish(self, name: str, meas: Measurements, gens: dict[str, tuple], ref: Measurements | None,
                enter_base: bool = True) -> Measurements:
        """Score the generations under the unedited model (``base_state``, entered here unless the caller is
        already inside it) and name the measurements."""
        t0 = time.perf_counter()
        with _enter(self.base_state) if enter_base else contextlib.nullcontext():
            p_ids, g_ids = gens["coherence"]
            meas.generations = self._generation_frame(p_ids, g_ids, ref.generations if ref is not None else None)
            if "seamlessness" in gens:
                meas.seamless = self._seamless_frame(gens["seamlessness"][1], ref.seamless if ref is not None else None)
        meas.name = name
        meas.seconds += time.perf_counter() - t0
        return meas

    @property
    def baseline(self) -> EvalResult:
        """The unedited model's result (computed on first access under ``base_state``, then cached)."""
        if self._baseline is None:
            with _enter(self.base_state):
                meas, gens = self._measure_state()
                meas = self._finish("unedited", meas, gens, None, enter_base=False)
            self._baseline = self._result("unedited", meas, meas)
        return self._baseline

    def evaluate(self, state: Any = None, name: str | None = None, *, reuse: bool = True,
                 reference: EvalResult | None = None) -> EvalResult:
        """Measure the model inside ``state`` and compare it with the cached unedited baseline.

        ``state`` is a :class:`~ember_utils.state.ModelState` (applied to this evaluator's model for the
        measurement and reverted after), any other context manager or zero-argument callable returning one,
        or ``None`` (the model as it is now). Every part is measured inside ``state``; the generations are then
        scored by the unedited model (inside ``base_state``).

        With ``reuse`` (default) a ModelState that only changes the input embeddings of some tokens relative
        to ``reference``'s state (default: the baseline; pass e.g. a LoRA result when an EMBER edit is stacked
        on that LoRA state) has only the inputs that contain one of those tokens — for generations: in the
        prompt or in the reference's generated tokens before the last — run again; the rest is copied. One
        unaffected item per MC set and one neutral sentence are re-measured as a spot check (ValueError if they
        changed). ``metrics['remeasured_fraction']`` says how much was run. For a state with edited tokens the
        concept and indirect accuracies are also broken down by whether a question contains one of them.
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
            meas, gens = self._measure_state(plan)
        meas = self._finish(name, meas, gens, plan.ref if plan is not None else None)
        res = self._result(name, meas, base.measurements, self._edited_ids(state))
        res.state = state if isinstance(state, ModelState) else None
        self.results.append(res)
        return res

    def table(self) -> pd.DataFrame:
        """One row per evaluated state (the unedited baseline first)."""
        return pd.DataFrame([self.baseline.metrics] + [r.metrics for r in self.results])
