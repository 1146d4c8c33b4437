"""Benchmark: EMBER sparse factorization of the Harry Potter vocabulary slice of the default model.

Runs side by side in one process, on the same matrix, same seed and the same stopping rule:

(a) ours: ``ember_utils.methods.ember.factorize.SparseFactorization`` (Cholesky solves, sparse A·G, free loss, screened
    code updates, preallocated buffers);
(b) naive: the same algorithm written straightforwardly (explicit ``torch.linalg.inv``, dense G, dense
    residual ``‖A − FGᵀ‖`` every iteration, ``clone()`` of the best iterate) — see :func:`naive_factorize`;
(c) scikit-learn ``MiniBatchDictionaryLearning`` at the same K and a matched number of nonzeros.

How (c) is matched: scikit-learn factorizes X (tokens × d) ≈ code @ components with a per-*token* sparsity
budget, ours has a per-*atom* budget of k = floor(ρ·n) tokens (K·k nonzeros in all, ≈ ρ·K = 1 per token on
average). So we use OMP with ``transform_n_nonzero_coefs = max(1, round(ρ·K))`` = 1 nonzero per token
(n nonzeros in all vs our K·k ≈ n), K = n_components, ``fit_algorithm='cd'``, batch 256, its own
early stopping (tol 1e-3, 10 batches without improvement), ``random_state`` = seed; the learning penalty
``alpha`` is picked from a small grid by the final OMP reconstruction error (the baseline gets its best
setting; the grid search time is not charged to it — only the chosen fit is timed). The error of every
method is the relative Frobenius error ‖X − X̂‖ / ‖X‖ computed densely.

Timings on a shared 2-core machine are noisy, so (a) and (b) run interleaved ``--repeats`` times and we
report medians (headline), minimum times and per-repeat ratios, plus the CPU pressure (/proc/pressure/cpu).

    .venv/bin/python benchmarks/bench_factorize.py            # writes factorize_hp_slice.json, factorize_hp_vs_sklearn.json
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from common import machine, peak_rss_gb, write_result  # noqa: F401  (adds the repo root to sys.path)

from ember_utils.methods.ember.factorize import SparseFactorization, n_nonzero_per_atom  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONCEPT = ROOT / "data" / "harry_potter" / "sentences.jsonl"
NEUTRAL = ROOT / "data" / "common" / "neutral.jsonl"
COMMAND = ".venv/bin/python benchmarks/bench_factorize.py"


def command(args: argparse.Namespace) -> str:
    return COMMAND + "".join(f" --{k} {v}" for k, v in (("threads", args.threads), ("tag", args.tag)) if v)


def cpu_pressure() -> str:
    try:
        return Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:  # pragma: no cover - not Linux
        return "n/a"


def read_texts(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_slice(seed: int = 0, fallback_size: int = 5000) -> tuple[torch.Tensor, dict]:
    """Rows of W_E for V′ = tokens of the HP sentences ∪ neutral sentences, minus special tokens.

    If the corpora are missing, a random slice of ``fallback_size`` rows is used instead, and the returned
    info says so (``source``)."""
    from ember_utils import load_model

    t0 = time.perf_counter()
    bridge = load_model()
    load_s = time.perf_counter() - t0
    W = bridge.W_E.detach()
    if CONCEPT.exists() and NEUTRAL.exists():
        from ember_utils.methods.ember.vocab import build_vocab_slice

        concept, neutral = read_texts(CONCEPT), read_texts(NEUTRAL)
        vs = build_vocab_slice(bridge.tokenizer, concept, neutral)
        ids = torch.as_tensor(vs.token_ids)
        info = {"source": "harry_potter sentences ∪ common/neutral (ember_utils.methods.ember.vocab.build_vocab_slice)",
                "n_concept_sentences": len(concept), "n_neutral_sentences": len(neutral),
                "labels": {k: int(v) for k, v in vs.summary().items()}}
    else:
        g = torch.Generator().manual_seed(seed)
        ids = torch.randperm(W.shape[0], generator=g)[:fallback_size].sort().values
        info = {"source": f"PLACEHOLDER: random slice of {fallback_size} tokens (corpus files missing)"}
    X = W[ids].clone().float().contiguous()
    info.update(n_tokens=int(X.shape[0]), d_model=int(X.shape[1]), model_load_s=round(load_s, 1))
    del bridge, W
    gc.collect()
    return X, info


# ---------------------------------------------------------------- (b) the straightforward implementation

def naive_factorize(X: torch.Tensor, n_atoms: int, sparsity: float, ridge: float, max_iter: int, tol: float,
                    patience: int, seed: int) -> dict:
    """The same algorithm as SparseFactorization, written the obvious way (same init, iterates, stopping)."""
    A = X.T                                         # d × n
    d, n = A.shape
    k = n_nonzero_per_atom(n, sparsity)
    gen = torch.Generator().manual_seed(seed)
    F = torch.randn(n_atoms, d, generator=gen, dtype=X.dtype).T       # same initial atoms as ours
    eye = torch.eye(n_atoms, dtype=X.dtype)

    def inv(M: torch.Tensor) -> torch.Tensor:
        nonlocal ridge
        while True:
            try:
                return torch.linalg.inv(M + ridge * eye)
            except RuntimeError:                       # singular: raise the ridge, as ours does
                ridge *= 10

    def threshold(G: torch.Tensor) -> torch.Tensor:
        top = torch.topk(G.abs(), k, dim=0).indices
        mask = torch.zeros_like(G, dtype=torch.bool)
        mask.scatter_(0, top, True)
        return G * mask

    norm_a = torch.linalg.norm(A)

    def error(F: torch.Tensor, G: torch.Tensor) -> float:
        return float(torch.linalg.norm(A - F @ G.T) / norm_a)

    with torch.no_grad():
        G = threshold(A.T @ F @ inv(F.T @ F))
        curve = [error(F, G)]
        best_err, best_F, best_G = curve[0], F.clone(), G.clone()
        ref, since, it = curve[0], 0, 0
        for it in range(1, max_iter + 1):  # noqa: B007 - `it` is read after the loop
            F = A @ G @ inv(G.T @ G)
            norms = torch.linalg.norm(G, dim=0)
            norms[norms == 0] = 1.0
            G = G / norms
            F = F * norms
            G = threshold(A.T @ F @ inv(F.T @ F))
            err = error(F, G)
            curve.append(err)
            if err < best_err:
                best_err, best_F, best_G = err, F.clone(), G.clone()
            if err < ref * (1 - tol):
                ref, since = err, 0
            else:
                since += 1
                if since >= patience:
                    break
    return {"error": best_err, "n_iter": it, "best_iter": int(np.argmin(curve)), "atoms": best_F.T, "codes": best_G}


# ---------------------------------------------------------------- (c) scikit-learn

def sklearn_dictionary(X: np.ndarray, n_atoms: int, nnz: int, alpha: float, seed: int) -> dict:
    from sklearn.decomposition import MiniBatchDictionaryLearning
    from sklearn.exceptions import ConvergenceWarning

    warnings.filterwarnings("ignore", category=ConvergenceWarning)  # inner lasso solves, thousands of them

    t0 = time.perf_counter()
    model = MiniBatchDictionaryLearning(n_components=n_atoms, alpha=alpha, batch_size=256, fit_algorithm="cd",
                                        transform_algorithm="omp", transform_n_nonzero_coefs=nnz,
                                        random_state=seed)
    code = model.fit_transform(X)
    seconds = time.perf_counter() - t0
    err = float(np.linalg.norm(X - code @ model.components_) / np.linalg.norm(X))
    return {"seconds": seconds, "error": err, "n_iter": int(model.n_iter_), "n_steps": int(model.n_steps_),
            "nonzeros": int((code != 0).sum()), "alpha": alpha}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-atoms", type=int, default=100)
    ap.add_argument("--sparsity", type=float, default=0.01)
    ap.add_argument("--ridge", type=float, default=1e-4)
    ap.add_argument("--max-iter", type=int, default=20000)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--patience", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=5, help="interleaved (a)/(b) runs; medians are reported")
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.1, 0.3, 1.0],
                    help="grid for the scikit-learn learning penalty")
    ap.add_argument("--no-sklearn", action="store_true")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads for all three methods (default: torch's default)")
    ap.add_argument("--tag", default="", help="suffix for the result names, e.g. _1thread")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    X, info = load_slice(args.seed)
    n = X.shape[0]
    k = n_nonzero_per_atom(n, args.sparsity)
    print(f"slice: {info['source']}: n={n}, d={X.shape[1]}, K={args.n_atoms}, k={k}; threads={torch.get_num_threads()}")
    kw = dict(n_atoms=args.n_atoms, sparsity=args.sparsity, ridge=args.ridge, max_iter=args.max_iter, tol=args.tol,
              patience=args.patience, seed=args.seed)  # naive_factorize takes seed=
    pressure = [cpu_pressure()]
    ours, naive = [], []
    for r in range(args.repeats):
        gc.collect()
        t0 = time.perf_counter()
        m = SparseFactorization(random_state=kw["seed"], **{k: v for k, v in kw.items() if k != "seed"}).fit(X)
        t_ours = time.perf_counter() - t0
        dense_err = float(torch.linalg.norm(X - m.reconstruct()) / torch.linalg.norm(X))
        ours.append({"seconds": t_ours, "error": m.reconstruction_error_, "error_dense_check": dense_err,
                     "n_iter": m.n_iter_, "best_iter": m.best_iter_, "dense_steps": m.n_dense_steps_,
                     "screened_steps": m.n_screened_steps_, "ridge": m.ridge_})
        gc.collect()
        t0 = time.perf_counter()
        nv = naive_factorize(X, **kw)
        t_naive = time.perf_counter() - t0
        naive.append({"seconds": t_naive, "error": nv["error"], "n_iter": nv["n_iter"], "best_iter": nv["best_iter"]})
        pressure.append(cpu_pressure())
        print(f"repeat {r}: ours {t_ours:.2f} s ({m.n_iter_} it, err {m.reconstruction_error_:.6f}, dense check "
              f"{dense_err:.6f}, {m.n_screened_steps_} screened) | naive {t_naive:.2f} s ({nv['n_iter']} it, "
              f"err {nv['error']:.6f}) | ratio {t_naive / t_ours:.2f}x | {pressure[-1]}", flush=True)
        # same algorithm: the two implementations must agree on the fitted codes' support
        same_support = bool(torch.equal(m.codes_ != 0, nv["codes"] != 0))
        ours[-1]["same_support_as_naive"] = same_support

    t_ours = statistics.median(o["seconds"] for o in ours)
    t_naive = statistics.median(o["seconds"] for o in naive)
    ratios = [b["seconds"] / a["seconds"] for a, b in zip(ours, naive)]
    extra = {"slice": info, "K": args.n_atoms, "sparsity": args.sparsity, "k_per_atom": k, "ridge": args.ridge,
             "max_iter": args.max_iter, "tol": args.tol, "patience": args.patience, "seed": args.seed,
             "torch_threads": torch.get_num_threads(), "repeats": args.repeats,
             "ours": ours, "naive": naive, "ratio_per_repeat": ratios, "median_ratio_per_repeat": statistics.median(ratios),
             "min_seconds_ours": min(o["seconds"] for o in ours), "min_seconds_naive": min(o["seconds"] for o in naive),
             "ratio_of_min_times": min(o["seconds"] for o in naive) / min(o["seconds"] for o in ours),
             "error_ours": ours[0]["error_dense_check"], "error_naive": naive[0]["error"],
             "cpu_pressure": pressure, "peak_rss_gb": round(peak_rss_gb(), 2)}
    path = write_result("factorize_hp_slice" + args.tag, "time to converge (same algorithm, seed, stopping rule)", t_ours,
                        "naive dense implementation (torch.linalg.inv, dense residual, cloned best)", t_naive, "s",
                        command(args), extra=extra)
    print(f"ours {t_ours:.2f} s vs naive {t_naive:.2f} s: {t_naive / t_ours:.2f}x (median of per-repeat ratios "
          f"{statistics.median(ratios):.2f}x); errors {ours[0]['error_dense_check']:.6f} vs {naive[0]['error']:.6f}"
          f" -> {path}")

    if args.no_sklearn:
        return
    Xn = X.numpy()
    nnz = max(1, round(args.sparsity * args.n_atoms))
    grid = []
    for alpha in args.alphas:
        res = sklearn_dictionary(Xn, args.n_atoms, nnz, alpha, args.seed)
        grid.append(res)
        print(f"sklearn alpha={alpha}: {res['seconds']:.1f} s, err {res['error']:.6f}, {res['nonzeros']} nonzeros,"
              f" {res['n_iter']} epochs", flush=True)
    chosen = min(grid, key=lambda r: r["error"])
    extra_sk = {"slice": info, "K": args.n_atoms, "ours_nonzeros": args.n_atoms * k, "ours_seconds": t_ours,
                "ours_error": ours[0]["error_dense_check"], "sklearn_seconds": chosen["seconds"],
                "sklearn_error": chosen["error"], "sklearn_nonzeros": chosen["nonzeros"],
                "sklearn_settings": {"class": "MiniBatchDictionaryLearning", "fit_algorithm": "cd", "batch_size": 256,
                                     "transform_algorithm": "omp", "transform_n_nonzero_coefs": nnz,
                                     "alpha": chosen["alpha"], "random_state": args.seed,
                                     "stopping": "sklearn defaults (max_iter=1000 epochs, tol=1e-3, "
                                                 "max_no_improvement=10)"},
                "alpha_grid": grid, "time_ratio_sklearn_over_ours": chosen["seconds"] / t_ours,
                "matching": "per-token OMP budget round(rho*K)=1 nonzero per token (n in all) vs ours k=floor(rho*n) "
                            "per atom (K*k in all); relative Frobenius error computed densely for both"}
    path = write_result("factorize_hp_vs_sklearn" + args.tag, "relative reconstruction error (lower is better)",
                        ours[0]["error_dense_check"], "sklearn MiniBatchDictionaryLearning + OMP (1 nonzero/token)",
                        chosen["error"], "relative Frobenius error", command(args), extra=extra_sk)
    print(f"error ours {ours[0]['error_dense_check']:.6f} vs sklearn {chosen['error']:.6f} (alpha={chosen['alpha']}); "
          f"time ours {t_ours:.1f} s vs sklearn {chosen['seconds']:.1f} s -> {path}")


if __name__ == "__main__":
    sys.exit(main())
