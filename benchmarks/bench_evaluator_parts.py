"""Benchmark: one evaluation of an EMBER edit by today's evaluator (every part: indirect questions, other-sense
questions and sentences, seamlessness, intervals, McNemar) versus the evaluator before those parts were added.

The earlier evaluator is the package at ``--baseline-rev`` (a git worktree in a temporary folder, run in a
subprocess on the same machine, one after the other); both evaluate the same saved edit (chapter 4's Harry
Potter edit) on the test split with reuse of unaffected inputs, for each δ of ``--deltas``. The target is
now ≤ 1.5 × before.

Metric: seconds per evaluated δ (mean over ``--deltas``); baseline: the evaluator at ``--baseline-rev``.

Usage: ``python benchmarks/bench_evaluator_parts.py [--deltas 10 100] [--threads 2] [--baseline-rev 866fb9e]``
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

#: Run inside the worktree of the earlier revision: time its Evaluator on the saved edit.
_EARLIER = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, sys.argv[1])
    import torch
    torch.set_num_threads(int(sys.argv[3]))
    import ember_utils
    assert ember_utils.__file__.startswith(sys.argv[1]), ember_utils.__file__
    from ember_utils.eval import Evaluator
    from ember_utils.methods.ember.edit import EmbeddingEdit
    model = ember_utils.load_model()
    edit = EmbeddingEdit.load(sys.argv[2])
    ev = Evaluator(model, "harry_potter", split="test")
    t = time.perf_counter(); ev.baseline; base = time.perf_counter() - t
    secs = []
    for delta in json.loads(sys.argv[4]):
        t = time.perf_counter(); ev.evaluate(edit.with_delta(delta)); secs.append(time.perf_counter() - t)
    print("RESULT " + json.dumps({"unedited": base, "seconds": secs}))
""")


def _earlier_seconds(rev: str, edit_path: Path, threads: int, deltas: list[float]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "earlier"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), rev], check=True,
                       capture_output=True)
        try:
            out = subprocess.run([sys.executable, "-c", _EARLIER, str(tree), str(edit_path), str(threads),
                                  json.dumps(deltas)], check=True, capture_output=True, text=True, cwd=tree)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False,
                           capture_output=True)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--deltas", type=float, nargs="+", default=[10.0, 100.0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--baseline-rev", default="866fb9e", help="git revision of the earlier evaluator")
    args = ap.parse_args()
    command = " ".join(["python benchmarks/bench_evaluator_parts.py", *sys.argv[1:]])

    import torch

    import ember_utils
    from ember_utils.data import load_common, load_concept
    from ember_utils.eval import Evaluator
    from ember_utils.methods.ember.pipeline import fit_concept_atoms

    torch.set_num_threads(args.threads)
    model = ember_utils.load_model()
    concept, common = load_concept("harry_potter"), load_common()
    atoms = fit_concept_atoms(model, concept.sentences, common.neutral_texts("train"), "harry_potter", seed=0)
    edit = atoms.edit(atoms=atoms.atoms_to_edit()[0], tokenizer=model.tokenizer)
    with tempfile.TemporaryDirectory() as tmp:
        path = edit.save(Path(tmp) / "edit.safetensors")
        earlier = _earlier_seconds(args.baseline_rev, path, args.threads, args.deltas)
    print(f"earlier evaluator ({args.baseline_rev}): unedited {earlier['unedited']:.1f}s, per δ "
          f"{[round(s, 1) for s in earlier['seconds']]}", flush=True)
    ev = Evaluator(model, concept, common, split="test")
    t = time.perf_counter()
    ev.baseline  # noqa: B018 - the unedited measurement (timed)
    base_now = time.perf_counter() - t
    now, remeasured = [], []
    for delta in args.deltas:
        t = time.perf_counter()
        res = ev.evaluate(edit.with_delta(delta))
        now.append(time.perf_counter() - t)
        remeasured.append(dict(res.measurements.remeasured))
        print(f"δ={delta:g}: now {now[-1]:.1f}s; re-run: {remeasured[-1]}", flush=True)
    ours, theirs = sum(now) / len(now), sum(earlier["seconds"]) / len(earlier["seconds"])
    print(f"mean per δ: now {ours:.1f}s vs earlier {theirs:.1f}s -> now/earlier = {ours / theirs:.2f} (target ≤ 1.5); "
          f"unedited: now {base_now:.1f}s vs earlier {earlier['unedited']:.1f}s")
    write_result("evaluator_all_parts", f"seconds per evaluated edit (δ ∈ {args.deltas}), harry_potter, test split, "
                 f"reuse on, {args.threads} thread(s)", ours, f"the evaluator at {args.baseline_rev} (before "
                 "seamlessness, collateral, indirect questions and intervals)", theirs, "s", command,
                 extra={"now_over_earlier": ours / theirs, "deltas": args.deltas, "now_seconds": now,
                        "earlier_seconds": earlier["seconds"], "unedited_now_seconds": base_now,
                        "unedited_earlier_seconds": earlier["unedited"], "n_edit_tokens": len(edit),
                        "remeasured_items_now": remeasured, "parts_now": list(ev.parts),
                        "model": "gemma-3-270m (offline, float32, CPU)"})


if __name__ == "__main__":
    main()
