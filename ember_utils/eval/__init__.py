"""Evaluation of model states: multiple choice, open questions, likelihood, generation and the metrics.

Layers, bottom up: ``packing`` (shared-prefix scoring), ``mc`` / ``likelihood`` / ``generation`` /
``open_qa`` / ``seamlessness`` (the measurements), ``metrics`` (numbers from measurements), ``intervals`` /
``uncertainty`` (bootstrap intervals, McNemar), ``reuse`` (re-run only inputs a state
can change) and ``evaluator`` (one concept's data, any state). Nothing here knows an erasure method.
"""
from .evaluator import COHERENCE_PROMPT_TEMPLATE, PARTS, REQUIRED_PARTS, Evaluator
from .generation import generate_greedy
from .likelihood import continuation_logprobs, perplexity, text_logprobs
from .mc import (
                      MC_OPTION_TEMPLATE,
                      MC_PROMPT_TEMPLATE,
                      mc_accuracy,
                      score_mc,
                      score_mc_naive,
)
from .measurements import EvalResult, Measurements
from .metrics import (
                      CHANCE,
                      GATE,
                      coherence_terms,
                      compute_metrics,
                      harmonic_mean,
                      normalized_accuracy,
                      selection_score,
)
from .open_qa import (
                      OPEN_PROMPT_TEMPLATE,
                      answer_matches,
                      answer_span,
                      normalize_answer,
                      score_open,
)
from .packing import branch_logprobs
from .seamlessness import real_word_share, repetition_rate, score_continuations, score_texts, seamlessness_terms
from .uncertainty import flip_tests, named_breakdown, paired_metric_intervals

__all__ = [
    "CHANCE", "COHERENCE_PROMPT_TEMPLATE", "GATE", "MC_OPTION_TEMPLATE", "MC_PROMPT_TEMPLATE", "OPEN_PROMPT_TEMPLATE",
    "EvalResult", "Evaluator", "Measurements", "answer_matches", "answer_span", "branch_logprobs",
    "coherence_terms", "compute_metrics", "continuation_logprobs", "generate_greedy", "harmonic_mean",
    "mc_accuracy", "normalize_answer", "normalized_accuracy", "perplexity", "score_mc", "score_mc_naive",
    "score_open", "selection_score", "text_logprobs", "PARTS", "REQUIRED_PARTS", "real_word_share",
    "repetition_rate", "score_continuations", "score_texts", "seamlessness_terms", "flip_tests",
    "named_breakdown", "paired_metric_intervals",
]
