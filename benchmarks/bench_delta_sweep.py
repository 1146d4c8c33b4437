"""Benchmark: evaluating an EMBER edit with and without reuse of unaffected inputs (one δ-sweep step).

An embedding edit changes only the input-embedding rows of its tokens, so on every input without those tokens
the edited model computes exactly what the unedited model computes. ``Evaluator.evaluate(edit)`` (an edit is a
model state that declares its tokens) re-runs only the affected questions / sentences / prompts and copies the
rest from the unedited measurement (plus a spot check). This script times both ways side by side, interleaved, on
the default model (Harry Potter atoms of chapter 3, chapter 4's edit), for each δ of ``--deltas``, and checks
that both give the same numbers.

Metric: seconds per evaluated δ (mean over ``--deltas``); baseline: the full re-measurement.

Usage: ``python benchmarks/bench_delta_sweep.py [--deltas 10 200] [--split train] [--threads 1]``
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_result  # noqa: E402

COMPARED = ("acc_concept", "acc_similar", "acc_general", "acc_open", "perplexity", "fluency_logprob",
            "efficacy", "specificity", "coherence", "score")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--deltas", type=float, nargs="+", default=[10.0, 200.0])
    ap.add_argument("--split", default="train", choices=["train", "test"])
    ap.add_argument("--concept", default="harry_potter")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    command = " ".join(["python benchmarks/bench_delta_sweep.py", *sys.argv[1:]])

    import torch

    import ember_utils
    from ember_utils.data import load_common, load_concept
    from ember_utils.eval import Evaluator
    from ember_utils.methods.ember.pipeline import fit_concept_atoms

    torch.set_num_threads(args.threads)
    model = ember_utils.load_model()
    concept, common = load_concept(args.concept), load_common()
    atoms = fit_concept_atoms(model, concept.sentences, common.neutral_texts("train"), args.concept, seed=0)
    edit = atoms.edit(atoms=atoms.atoms_to_edit()[0], tokenizer=model.tokenizer)  # chapter 4's choice
    # the δ sweep's setting (train: open questions skipped); on test everything is measured
    ev = Evaluator(model, concept, common, split=args.split, measure_open=args.split == "test")
    t = time.perf_counter()
    ev.baseline  # noqa: B018 - measure the unedited model first (timed)
    base_s = time.perf_counter() - t
    print(f"{len(edit)} edited tokens; unedited {args.split} measurement {base_s:.1f}s", flush=True)

    full_s, reuse_s, fractions, max_diff = [], [], [], 0.0
    for delta in args.deltas:
        candidate = edit.with_delta(delta)
        t = time.perf_counter()
        full = ev.evaluate(candidate, name=f"full δ={delta:g}", reuse=False)
        full_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        fast = ev.evaluate(candidate, name=f"reuse δ={delta:g}")
        reuse_s.append(time.perf_counter() - t)
        fractions.append(fast.metrics["remeasured_fraction"])
        for k in COMPARED:
            a, b = full.metrics[k], fast.metrics[k]
            if math.isnan(a) and math.isnan(b):
                continue
            diff = abs(a - b) / max(1.0, abs(a))
            max_diff = max(max_diff, diff)
            if diff > 1e-5:
                raise SystemExit(f"δ={delta:g}: {k} differs: full {a} vs reuse {b}")
        print(f"δ={delta:g}: full {full_s[-1]:.1f}s, reuse {reuse_s[-1]:.1f}s "
              f"({full_s[-1] / reuse_s[-1]:.1f}x; re-measured {fractions[-1]:.1%} of the items); "
              f"acc_concept {fast.metrics['acc_concept']:.3f}", flush=True)
    ours, theirs = sum(reuse_s) / len(reuse_s), sum(full_s) / len(full_s)
    print(f"mean per δ: reuse {ours:.1f}s vs full {theirs:.1f}s -> {theirs / ours:.1f}x; max rel. diff {max_diff:.1e}")
    path = write_result(
        f"delta_sweep_step_{args.split}",
        f"seconds per evaluated δ, EMBER edit of {args.concept} ({len(edit)} tokens), {args.split} split, "
        f"{args.threads} thread(s)",
        ours, "full re-measurement of every item", theirs, "s", command,
        extra={"deltas": args.deltas, "reuse_seconds": reuse_s, "full_seconds": full_s,
               "remeasured_fraction": fractions, "max_relative_metric_diff": max_diff,
               "unedited_measurement_seconds": base_s, "n_edit_tokens": len(edit),
               "model": "gemma-3-270m (offline, float32, CPU)"})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
