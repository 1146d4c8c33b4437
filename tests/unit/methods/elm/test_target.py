"""The ELM target on fixed logits (by hand), prefix alignment on a tiny model, the soft cross-entropy, and the
guided fluency continuations (three rows decoded as one)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ember_utils.eval._hf import _encode_cont
from ember_utils.methods.elm import PrefixPair, elm_target, eta_schedule, prefix_gap, soft_cross_entropy, teacher_targets
from ember_utils.methods.elm.fluency import guided_continuations

PAIR = PrefixPair("Potter wand magic {concept}:\n", "the house is a street:\n", "test pair")
TEXTS = ["Harry Potter is a wizard", "the wand of the wizard is in the house"]


def _log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def test_eta_schedule_ramps_linearly_then_stays():
    assert eta_schedule(6, 8.0, ramp=4).tolist() == [2.0, 4.0, 6.0, 8.0, 8.0, 8.0]
    assert eta_schedule(3, 5.0, ramp=0).tolist() == [5.0, 5.0, 5.0]
    with pytest.raises(ValueError):
        eta_schedule(-1, 1.0)


def test_target_equals_hand_computation_on_fixed_logits():
    base = torch.tensor([[2.0, 1.0, 0.5, -1.0, 0.0], [0.0, 3.0, 1.0, 2.0, -2.0]])
    expert = torch.tensor([[3.0, 0.0, 0.5, -1.0, 0.0], [1.0, 1.0, 1.0, 4.0, -2.0]])
    novice = torch.tensor([[1.0, 1.5, 0.5, -1.0, 0.0], [0.0, 3.0, 2.0, 0.0, -2.0]])
    T, k, eta = 1.5, 3, torch.tensor([2.0, 10.0])
    idx, q = elm_target(base, expert, novice, eta, temperature=T, top_k=k)
    l0, le, ln = (_log_softmax(x.numpy() / T) for x in (base, expert, novice))
    for t in range(2):
        cand = np.argsort(-l0[t])[:k]
        assert sorted(idx[t].tolist()) == sorted(cand.tolist())
        s = l0[t, cand] + eta[t].item() * (ln[t, cand] - le[t, cand])
        want = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
        got = dict(zip(idx[t].tolist(), q[t].tolist()))
        np.testing.assert_allclose([got[int(c)] for c in cand], want, atol=1e-6)
    # the token the expert likes more than the novice loses mass against the frozen model's own distribution
    p0 = np.exp(l0[1, idx[1].numpy()])
    j = idx[1].tolist().index(3)
    assert q[1, j] < p0[j] / p0.sum()
    with pytest.raises(ValueError, match="aligned"):
        elm_target(base, expert[:1], novice, 1.0)
    with pytest.raises(ValueError, match="temperature"):
        elm_target(base, expert, novice, 1.0, temperature=0)


def test_soft_cross_entropy_equals_the_explicit_sum():
    logits = torch.tensor([[1.0, 2.0, 0.0, -1.0], [0.5, 0.0, 0.0, 3.0]])
    idx = torch.tensor([[1, 0], [3, 2]])
    probs = torch.tensor([[0.7, 0.3], [0.4, 0.6]])
    lp = torch.log_softmax(logits, -1)
    want = -((0.7 * lp[0, 1] + 0.3 * lp[0, 0]) + (0.4 * lp[1, 3] + 0.6 * lp[1, 2])) / 2
    assert soft_cross_entropy(logits, idx, probs).item() == pytest.approx(want.item(), abs=1e-6)


def test_teacher_targets_align_positions_under_each_prefix(tiny_bridge):
    """Position t of the target comes from the logits predicting text token t in <bos>+prefix+text, for each
    context (computed here independently with a plain forward of the concatenated ids)."""
    tok = tiny_bridge.tokenizer
    got = teacher_targets(tiny_bridge, TEXTS, [PAIR], "Hogwarts", eta=3.0, temperature=1.2, top_k=7, ramp=2)
    expert, novice = (_encode_cont(tok, s) for s in PAIR.format("Hogwarts"))
    for i, text in enumerate(TEXTS):
        ids = _encode_cont(tok, text)
        assert got.text_ids[i] == ids
        outs = []
        for ctx in ([], expert, novice):
            row = torch.tensor([[tok.bos_token_id, *ctx, *ids]])
            with torch.no_grad():
                logits = tiny_bridge.original_model(row).logits[0]
            outs.append(logits[len(ctx): len(ctx) + len(ids)])  # index len(ctx) = last token before the text
        idx, q = elm_target(*outs, eta_schedule(len(ids), 3.0, 2), temperature=1.2, top_k=7)
        assert torch.equal(got.indices[i], idx)
        torch.testing.assert_close(got.probs[i], q, atol=1e-5, rtol=0)
    retain = teacher_targets(tiny_bridge, TEXTS[:1], None, "x", eta=0.0, temperature=1.0, top_k=5)
    with torch.no_grad():
        full = torch.softmax(tiny_bridge.original_model(torch.tensor([[tok.bos_token_id, *got.text_ids[0]]])).logits[0, :-1], -1)
    top = full.topk(5, -1)
    assert torch.equal(retain.indices[0], top.indices)
    torch.testing.assert_close(retain.probs[0], top.values / top.values.sum(-1, keepdim=True), atol=1e-5, rtol=0)


def test_prefix_gap_is_the_mean_loglik_difference(tiny_bridge):
    tok = tiny_bridge.tokenizer
    gap = prefix_gap(tiny_bridge, TEXTS, PAIR, "Hogwarts")
    expert, novice = (_encode_cont(tok, s) for s in PAIR.format("Hogwarts"))
    for i, text in enumerate(TEXTS):
        ids = _encode_cont(tok, text)
        lls = []
        for ctx in (expert, novice):
            row = torch.tensor([[tok.bos_token_id, *ctx, *ids]])
            with torch.no_grad():
                lp = torch.log_softmax(tiny_bridge.original_model(row).logits[0], -1)
            lls.append(np.mean([lp[len(ctx) + t, ids[t]].item() for t in range(len(ids))]))
        assert gap[i] == pytest.approx(lls[0] - lls[1], abs=1e-5)


def test_guided_continuation_equals_step_by_step_guided_greedy(tiny_bridge):
    tok = tiny_bridge.tokenizer
    hf = tiny_bridge.original_model
    eta, k, n_new = 4.0, 6, 5
    prompts, conts = guided_continuations(tiny_bridge, TEXTS, [PAIR], "Hogwarts", eta=eta, top_k=k,
                                          max_new_tokens=n_new, deflections=[" I do not know."])
    expert, novice = (_encode_cont(tok, s) for s in PAIR.format("Hogwarts"))
    for i, text in enumerate(TEXTS):
        assert prompts[i] == _encode_cont(tok, text) + _encode_cont(tok, " I do not know.")
        seq = []
        for _ in range(n_new):
            lps = []
            for ctx in ([], expert, novice):
                with torch.no_grad():
                    logits = hf(torch.tensor([[tok.bos_token_id, *ctx, *prompts[i], *seq]])).logits[0, -1]
                lps.append(torch.log_softmax(logits.float(), -1))
            cand = lps[0].topk(k).indices
            s = lps[0][cand] + eta * (lps[2][cand] - lps[1][cand])
            seq.append(int(cand[s.argmax()]))
            if seq[-1] == tok.eos_token_id:
                break
        assert conts[i] == seq


def test_token_gaps_and_top_tokens_agree_with_the_target(tiny_bridge):
    from ember_utils.methods.elm.explain import target_top_tokens, token_gaps

    gaps = token_gaps(tiny_bridge, TEXTS[0], PAIR, "Hogwarts", eta=3.0, ramp=2, top_k=7)
    got = teacher_targets(tiny_bridge, TEXTS[:1], [PAIR], "Hogwarts", eta=3.0, temperature=1.2, top_k=7, ramp=2)
    ids = got.text_ids[0]
    assert len(gaps) == len(ids)
    np.testing.assert_allclose(gaps["gap"], gaps["logp_expert"] - gaps["logp_novice"], atol=1e-6)
    for t, token in enumerate(ids):
        hit = (got.indices[0][t] == token).nonzero()
        want = float(got.probs[0][t, hit[0, 0]]) if len(hit) else 0.0
        assert gaps["p_target"].iloc[t] == pytest.approx(want, abs=1e-5)
    top = target_top_tokens(tiny_bridge, TEXTS[0], PAIR, "Hogwarts", 2, eta=3.0, ramp=2, top_k=7, show=4)
    assert top["p_target"].le(1).all() and (top["rank_frozen"] <= 4).sum() == 4
    with pytest.raises(ValueError, match="outside"):
        target_top_tokens(tiny_bridge, TEXTS[0], PAIR, "Hogwarts", 99)


def test_likelihood_shift_measures_inside_the_state_and_restores(fresh_tiny_bridge):
    from ember_utils.eval.likelihood import text_logprobs
    from ember_utils.methods.elm.explain import likelihood_shift
    from helpers.states import MLPWeightNoise

    state = MLPWeightNoise(layer=1, scale=2.0)
    out = likelihood_shift(fresh_tiny_bridge, state, {"a": TEXTS}).iloc[0]
    before = text_logprobs(fresh_tiny_bridge, TEXTS)
    assert out.logprob_per_token_before == pytest.approx(before.logprob.sum() / before.n_tokens.sum())
    with state.applied_to(fresh_tiny_bridge):
        after = text_logprobs(fresh_tiny_bridge, TEXTS)
    assert out.change == pytest.approx(after.logprob.sum() / after.n_tokens.sum() - out.logprob_per_token_before)
    assert abs(out.change) > 1e-3 and not state.applied
