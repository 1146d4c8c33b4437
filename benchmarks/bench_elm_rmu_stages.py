"""Benchmark: per-stage times of one ELM and one RMU run on the default model (CPU settings), what share of an
ELM student step the 262,144-token output layer takes, and each saving measured against the naive way, side by
side in one process:

* teacher pass: ours applies the output layer only at the positions that predict the text's tokens and gathers
  the k candidates (no full-vocabulary log-softmax); baseline: full logits of every position of the prefixed row,
  full log-softmax, then the same target;
* student loss: gather + logsumexp vs a materialized full-vocabulary log-softmax;
* RMU step: the bridge stops after the read-out layer (``stop_at_layer``) vs a full forward with the same hook.

Usage: ``python benchmarks/bench_elm_rmu_stages.py [--steps 10] [--threads 2]``
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_result  # noqa: E402


def _timed(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    import ember_utils
    from ember_utils.data import load_common, load_concept
    from ember_utils.eval._hf import _body, _encode_cont, _head
    from ember_utils.methods.elm import ELM_PRESETS, elm_target, eta_schedule, teacher_targets, train_elm
    from ember_utils.methods.elm._positions import context_rows, span_logits
    from ember_utils.methods.elm.target import soft_cross_entropy
    from ember_utils.methods.lora import LoraAdapter
    from ember_utils.methods.rmu import RMU_PRESETS, _batch, layer_activations, train_rmu

    command = "python benchmarks/bench_elm_rmu_stages.py " + " ".join(sys.argv[1:])
    model = ember_utils.load_model()
    hf, tok = model.original_model, model.tokenizer
    c, common = load_concept("harry_potter"), load_common()
    forget, retain = list(c.sentences), common.neutral_texts("train")
    cfg = ELM_PRESETS["gemma-3-270m"]

    # -- one short ELM run: per-stage seconds (the full run scales the step time by cfg.steps)
    short = cfg.replace(steps=args.steps)
    t = time.perf_counter()
    res = train_elm(model, forget, retain, c.name, short)
    elm_wall = time.perf_counter() - t
    n_forget = min(len(forget), cfg.steps * cfg.batch_forget)
    teacher_per_text = res.timings["teacher_forget_s"] / min(len(forget), args.steps * cfg.batch_forget)
    projected = (teacher_per_text * n_forget + res.timings["teacher_retain_s"] * cfg.steps / args.steps
                 + res.timings["fluency_generation_s"] + res.timings["step_s"] * cfg.steps)

    # -- output-layer share of one student step (forget batch, LoRA applied)
    texts = forget[:cfg.batch_forget]
    ids = [_encode_cont(tok, x)[:cfg.max_length] for x in texts]
    rows = context_rows(tok, [], ids)
    adapter = LoraAdapter(cfg.lora)
    with adapter.applied_to(model):
        targets = teacher_targets(model, texts, cfg.prefixes, c.name, eta=cfg.eta, temperature=cfg.temperature,
                                  top_k=cfg.top_k, ramp=cfg.eta_ramp, max_length=cfg.max_length)
        idx, q = torch.cat(targets.indices), torch.cat(targets.probs)

        def full_step():
            loss = soft_cross_entropy(span_logits(hf, rows), idx, q)
            loss.backward()

        L = max(len(r.ids) for r in rows)
        inp = torch.zeros((len(rows), L), dtype=torch.long)
        att = torch.zeros_like(inp)
        for i, r in enumerate(rows):
            inp[i, :len(r.ids)], att[i, :len(r.ids)] = torch.tensor(r.ids), 1
        with torch.no_grad():
            hidden = _body(hf)(input_ids=inp, attention_mask=att).last_hidden_state
        picked = torch.cat([hidden[i, r.start:r.start + r.length] for i, r in enumerate(rows)])

        def head_only():
            h = picked.detach().requires_grad_(True)
            loss = soft_cross_entropy(_head(hf)(h), idx, q)
            loss.backward()

        def head_only_full_logsoftmax():
            h = picked.detach().requires_grad_(True)
            lp = torch.log_softmax(_head(hf)(h).float(), dim=-1)
            loss = -(q * lp.gather(-1, idx)).sum(-1).mean()
            loss.backward()

        with torch.enable_grad():
            step_s = _timed(full_step)
            head_s = _timed(head_only)
            head_full_s = _timed(head_only_full_logsoftmax)
    n_tokens = sum(r.length for r in rows)

    # -- teacher pass, ours vs naive, on 16 texts
    sample = forget[:16]

    def teacher_ours():
        teacher_targets(model, sample, cfg.prefixes, c.name, eta=cfg.eta, temperature=cfg.temperature,
                        top_k=cfg.top_k, ramp=cfg.eta_ramp, max_length=cfg.max_length)

    def teacher_naive():
        with torch.no_grad():
            for i, text in enumerate(sample):
                pair = cfg.prefixes[i % len(cfg.prefixes)]
                x = _encode_cont(tok, text)[:cfg.max_length]
                outs = []
                for ctx in ([], *(_encode_cont(tok, s) for s in pair.format(c.name))):
                    row = torch.tensor([[tok.bos_token_id, *ctx, *x]])
                    lp = torch.log_softmax(hf(row).logits[0].float() / cfg.temperature, dim=-1)
                    outs.append(lp[len(ctx): len(ctx) + len(x)])
                elm_target(*outs, eta_schedule(len(x), cfg.eta, cfg.eta_ramp), 1.0, cfg.top_k)

    teacher_ours_s, teacher_naive_s = _timed(teacher_ours, 2), _timed(teacher_naive, 2)

    # -- RMU: a short run, and stop_at_layer vs a full forward
    rcfg = RMU_PRESETS["gemma-3-270m"]
    t = time.perf_counter()
    rres = train_rmu(model, forget, retain, rcfg.replace(steps=args.steps))
    rmu_short = time.perf_counter() - t
    rmu_projected = rres.timings["frozen_activations_s"] * rcfg.steps / args.steps + rres.timings["step_s"] * rcfg.steps
    b_ids, b_att = _batch(tok, forget[:rcfg.batch_forget], rcfg.max_length)

    def rmu_stop():
        with torch.no_grad():
            layer_activations(model, b_ids, b_att, rcfg.layer)

    def rmu_full():
        got = {}
        with torch.no_grad():
            model.run_with_hooks(b_ids, fwd_hooks=[(f"blocks.{rcfg.layer}.hook_resid_post",
                                                    lambda x, hook: got.setdefault("h", x))], attention_mask=b_att)

    rmu_stop_s, rmu_full_s = _timed(rmu_stop), _timed(rmu_full)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    common_extra = {"threads": args.threads, "peak_rss_gib": rss}
    write_result("elm_stages", "projected seconds of one ELM run with the CPU preset (per-stage times of a "
                 f"{args.steps}-step run scaled to {cfg.steps} steps)", projected, "budget", 600.0, "s", command,
                 extra={**common_extra, "short_run_wall_s": elm_wall, "timings_short_run": res.timings,
                        "teacher_s_per_forget_text": teacher_per_text, "n_forget_texts_full_run": n_forget,
                        "student_step_s": res.timings["step_s"],
                        "output_layer_share_of_step": head_s / step_s, "step_forget_only_s": step_s,
                        "output_layer_fwd_bwd_s": head_s, "output_layer_full_logsoftmax_s": head_full_s,
                        "forget_tokens_in_step": n_tokens})
    write_result("elm_teacher_pass", "seconds for the ELM targets of 16 Harry Potter sentences (3 contexts each)",
                 teacher_ours_s, "full logits at every position + full log-softmax, one row at a time",
                 teacher_naive_s, "s", command, extra=common_extra)
    write_result("elm_student_loss", "seconds, output layer + loss forward and backward for one forget batch",
                 head_s, "materialized full-vocabulary log-softmax", head_full_s, "s", command, extra=common_extra)
    write_result("rmu_stages", f"projected seconds of one RMU run with the CPU preset ({rcfg.steps} steps)",
                 rmu_projected, "budget", 300.0, "s", command,
                 extra={**common_extra, "short_run_wall_s": rmu_short, "timings_short_run": rres.timings,
                        "forward_to_layer_s": rmu_stop_s, "full_forward_s": rmu_full_s,
                        "stop_at_layer_speedup": rmu_full_s / rmu_stop_s})
    print(f"ELM projected {projected:.0f} s (teacher/text {teacher_per_text:.2f} s, step {res.timings['step_s']:.2f} s, "
          f"fluency {res.timings['fluency_generation_s']:.0f} s); output layer {head_s / step_s:.0%} of a forget step; "
          f"teacher ours {teacher_ours_s:.1f} s vs naive {teacher_naive_s:.1f} s; loss head {head_s:.2f} vs "
          f"{head_full_s:.2f} s; RMU projected {rmu_projected:.0f} s, stop-at-layer {rmu_full_s / rmu_stop_s:.1f}x; "
          f"peak RSS {rss:.2f} GiB")


if __name__ == "__main__":
    main()
