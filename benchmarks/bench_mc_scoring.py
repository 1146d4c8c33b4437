"""Benchmark: multiple-choice scoring throughput and evaluation memory on the default model.

1. ``mc_scoring_throughput``: questions/s of the packed, prefix-sharing scorer (``score_mc``) vs the naive
   reference loop (``score_mc_naive``: one full-logits forward of question+option per option, one
   question at a time), side by side on the same questions (default: the first 60 Harry Potter test
   questions). Both must give the same predictions (and scores within 1e-4). After a warm-up, the naive
   loop runs in ``--repeats`` chunks interleaved with ``--repeats`` + 1 full runs of the fast scorer, so both
   see the same (shared, fluctuating) machine load; fast time = median of its runs, naive time = sum of
   its chunks.
2. ``mc_eval_memory``: peak resident memory (sampled every 20 ms, plus ``ru_maxrss``) during one full
   (non-FAST) ``Evaluator`` baseline pass of a concept (MC concept/similar/general, open questions,
   neutral perplexity, coherence generations and their scoring), vs the RSS right after loading the model.

Threads: default ``--threads 1``. On the shared 2-core development machine two torch threads competing
with other processes were several times slower than one, and timings swung wildly; one thread gives
stable numbers. Use ``--threads 2`` on an idle machine.

Usage: ``python benchmarks/bench_mc_scoring.py [--n 60] [--concept harry_potter] [--threads 1]
[--skip-memory] [--skip-throughput]``
"""
from __future__ import annotations

import argparse
import resource
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_result  # noqa: E402


class _RssSampler:
    """Background thread recording the maximum RSS of this process."""

    def __init__(self, interval: float = 0.02):
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=60, help="number of test questions")
    ap.add_argument("--concept", default="harry_potter")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="naive loop chunks (fast scorer runs = repeats + 1)")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    args = ap.parse_args()
    command = " ".join(["python benchmarks/bench_mc_scoring.py", *sys.argv[1:]])

    import psutil
    import torch

    import ember_utils
    from ember_utils import eval as E
    from ember_utils.data import load_common, load_concept

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    bridge = ember_utils.load_model()
    load_s = time.perf_counter() - t0
    rss_loaded = psutil.Process().memory_info().rss / 2**30
    concept = load_concept(args.concept)
    qs = concept.split("mc", "test").head(args.n)
    n = len(qs)
    print(f"model loaded in {load_s:.1f}s, RSS {rss_loaded:.2f} GiB; {n} {args.concept} test questions; "
          f"{args.threads} thread(s)", flush=True)

    if not args.skip_throughput:
        _throughput(bridge, E, qs, args, command)
    if not args.skip_memory:
        _memory(bridge, E, concept, load_common(), rss_loaded, args, command)


def _throughput(bridge, E, qs, args, command: str) -> None:
    import numpy as np
    import pandas as pd

    n = len(qs)
    # warm-up (allocator, lazy init) on a few questions
    E.score_mc(bridge, qs.head(4))
    E.score_mc_naive(bridge, qs.head(1))

    # Interleave: fast(all) | naive(chunk 1) | fast(all) | naive(chunk 2) | ... | fast(all), so that both
    # scorers see the same (shared, fluctuating) machine load.
    fast_times: list[float] = []
    naive_parts = []
    naive_s = 0.0
    chunks = np.array_split(np.arange(n), args.repeats)

    def run_fast():
        t = time.perf_counter()
        out = E.score_mc(bridge, qs)
        fast_times.append(time.perf_counter() - t)
        print(f"  fast scorer, {n} questions: {fast_times[-1]:.2f}s", flush=True)
        return out

    for idx in chunks:
        fast = run_fast()
        t = time.perf_counter()
        naive_parts.append(E.score_mc_naive(bridge, qs.iloc[idx]))
        naive_s += time.perf_counter() - t
        print(f"  naive loop, {len(idx)} questions: {time.perf_counter() - t:.2f}s", flush=True)
    fast = run_fast()
    naive = pd.concat(naive_parts, ignore_index=True)

    cols = [f"score_{k}" for k in range(4)]
    max_diff = float(np.abs(fast[cols].values - naive[cols].values).max())
    same_pred = bool((fast["predicted"] == naive["predicted"]).all())
    if not same_pred or max_diff > 1e-4:
        raise SystemExit(f"fast and naive scorers disagree: same predictions={same_pred}, max |Δscore|={max_diff:.2e}")
    fast_s = float(np.median(fast_times))  # median: the fast runs are short, so one lucky run would flatter us
    fast_qps, naive_qps = n / fast_s, n / naive_s
    acc = float(fast["correct"].mean())
    print(f"fast {fast_qps:.2f} q/s vs naive {naive_qps:.2f} q/s -> {fast_qps / naive_qps:.1f}x; "
          f"max |Δscore| {max_diff:.1e}; accuracy {acc:.3f}", flush=True)
    path = write_result(
        "mc_scoring_throughput", f"MC scoring throughput, {n} {args.concept} test questions (4 options)",
        fast_qps, "naive loop: full-logits forward per option, one question at a time", naive_qps, "questions/s",
        command, higher_is_better=True,
        extra={"threads": args.threads, "fast_seconds_runs": fast_times, "naive_seconds": naive_s,
               "max_abs_score_diff": max_diff, "same_predictions": same_pred, "accuracy": acc,
               "model": "gemma-3-270m (offline, float32, CPU)"})
    print(f"wrote {path}", flush=True)


def _memory(bridge, E, concept, common, rss_loaded: float, args, command: str) -> None:
    ev = E.Evaluator(bridge, concept, common, split="test", fast=False)
    t = time.perf_counter()
    with _RssSampler() as sampler:
        base = ev.baseline
    eval_s = time.perf_counter() - t
    peak = max(sampler.peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**30
    sizes = {k: len(v) for k, v in ev.questions.items()}
    sizes.update(open=len(ev.open_questions), neutral=len(ev.neutral_texts), coherence_prompts=len(ev.prompts))
    print(f"full evaluation pass: {eval_s:.1f}s, peak RSS {peak:.2f} GiB (after load {rss_loaded:.2f} GiB); {sizes}",
          flush=True)
    path = write_result(
        "mc_eval_memory", f"peak RSS of one full evaluation pass ({args.concept}, test split, unedited model)",
        peak, "RSS right after loading the model", rss_loaded, "GiB", command, higher_is_better=False,
        extra={"threads": args.threads, "eval_seconds": eval_s, "items": sizes,
               "ratio_note": "ratio = RSS after load / peak during evaluation (1.0 = no extra memory)",
               "metrics": {k: base.metrics[k] for k in ("acc_concept", "acc_similar", "acc_general", "acc_open",
                                                         "perplexity", "fluency_logprob")}})
    print(f"wrote {path}", flush=True)


if __name__ == "__main__":
    main()
