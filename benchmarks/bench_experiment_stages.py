"""Per-stage times of one experiment run next to each stage's compute floor on this machine.

Reads a robustness record (``results/<model>/<concept>/robustness_seed<k>.json``): its stage log has each
stage's seconds and the tokens that went through the model with gradients (training) and without (forward).
Measures, in this process, three rates at batch 1: the full fine-tune rate (the relearning attack's own training
loop, embeddings included, AdamW), the LoRA fine-tune rate (the same loop in LoRA mode) and the forward rate
(no-grad forward of the transformer body, the output layer excluded). A stage's floor = its trained tokens at the
rate of what it trains (full: relearn-full; LoRA: relearn-lora, ELM) + its forward tokens at the forward rate;
``seconds / floor`` says how much of a stage is not that arithmetic. RMU has no floor here: it trains three MLPs
through the first layers only (``stop_at_layer``), cheaper than any of the three rates. Batched MC scoring can beat
the batch-1 forward rate, so a forward-heavy stage may come out below 1.

Usage: .venv/bin/python benchmarks/bench_experiment_stages.py results/gemma-3-270m/harry_potter/robustness_seed0.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

from common import machine, peak_rss_gb, write_result


def measure_rates(model_name: str, paragraphs: int, max_length: int) -> dict[str, float]:
    import torch

    from ember_utils import load_model
    from ember_utils.attacks.relearn import relearn, relearn_config_for
    from ember_utils.data import load_concept
    from ember_utils.models import hf_model_of

    model = load_model(model_name)
    texts = load_concept("harry_potter").relearn_texts
    cfg = relearn_config_for(model_name, n_paragraphs=paragraphs, max_length=max_length, n_evals=1)
    run = relearn(model, texts, cfg, eval_sets={})
    ft_rate = run.timings["tokens"] / run.timings["train_s"]
    lora = relearn(model, texts, cfg.replace(mode="lora"), eval_sets={})
    lora_rate = lora.timings["tokens"] / lora.timings["train_s"]
    hf, tok = hf_model_of(model), model.tokenizer
    body = hf.model if hasattr(hf, "model") else hf.base_model
    n, t = 0, 0.0
    with torch.no_grad():
        for text in texts[:paragraphs]:
            ids = tok(text, return_tensors="pt", truncation=True, max_length=max_length)["input_ids"]
            t0 = time.perf_counter()
            body(input_ids=ids)
            t += time.perf_counter() - t0
            n += ids.numel()
    return {"finetune_tokens_per_s": ft_rate, "lora_tokens_per_s": lora_rate, "forward_tokens_per_s": n / t,
            "finetune_step_s":
            run.timings["train_s"] / max(1, paragraphs), "rate_paragraphs": paragraphs, "rate_max_length": max_length}


#: what each training stage trains (its floor's rate); None: no floor (RMU trains through the first layers only)
TRAINS = {"relearn-full": "finetune", "relearn-lora": "lora", "elm": "lora", "elm-ember": "lora", "rmu": None,
          "rmu-ember": None}


def stage_table(record: dict, rates: dict[str, float]) -> list[dict]:
    agg: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for s in record["stages"]:
        a = agg[s["stage"]]
        a["runs"] += 1
        a["seconds"] += float(s.get("computed_seconds") or s["seconds"])
        for k in ("trained", "forward"):
            a[f"{k}_tokens"] += float((s.get("counts") or {}).get(k, 0))
    rows = []
    for stage, a in agg.items():
        trains = TRAINS.get(stage, "nothing")
        if trains is None:
            floor = None
        else:
            train_rate = rates.get(f"{trains}_tokens_per_s")
            floor = ((a["trained_tokens"] / train_rate if train_rate else 0.0)
                     + a["forward_tokens"] / rates["forward_tokens_per_s"])
        rows.append({"stage": stage, "trains": trains or "partial (no floor)", **{k: v for k, v in a.items()},
                     "floor_s": floor, "time_over_floor": a["seconds"] / floor if floor else None})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("record", type=Path)
    ap.add_argument("--paragraphs", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    record = json.loads(args.record.read_text())
    if not any("counts" in s for s in record.get("stages", [])):
        sys.exit(f"{args.record}: its stage log has no token counts (written before the runner counted tokens); "
                 "re-run the experiment with --redo.")
    rates = measure_rates(record["model"], args.paragraphs, args.max_length)
    rows = stage_table(record, rates)
    for r in sorted(rows, key=lambda r: -r["seconds"]):
        ratio = f"{r['time_over_floor']:.1f}x" if r["time_over_floor"] else "-"
        fl = f"{r['floor_s']:8.1f} s" if r["floor_s"] is not None else "       -  "
        print(f"{r['stage']:14s} {r['runs']:3.0f} runs {r['seconds']:8.1f} s  floor {fl}  {ratio}")
    with_floor = [r for r in rows if r["floor_s"] is not None]
    total, floor = sum(r["seconds"] for r in with_floor), sum(r["floor_s"] for r in with_floor)
    name = f"experiment_stages{'_fast' if record.get('fast') else ''}{args.tag}"
    what = "FAST smoke run" if record.get("fast") else "full run"
    path = write_result(
        name, f"seconds of one experiment ({what}: {record['concept']} seed {record['seed']}, {record['model']}), "
        "sum of its computed stages that have a floor (all but RMU)", total,
        "compute floor (trained tokens at the measured full or LoRA fine-tune rate + "
        "forward tokens at the measured forward rate)", floor, "s",
        f".venv/bin/python benchmarks/bench_experiment_stages.py {args.record}", higher_is_better=False,
        extra={"stages": rows, "rates": rates, "record": str(args.record), "record_seconds": record.get("seconds"),
               "bench_peak_rss_gb": peak_rss_gb(), "measured_on": machine()})
    print(f"total {total:.0f} s, floor {floor:.0f} s -> {path}")


if __name__ == "__main__":
    main()
