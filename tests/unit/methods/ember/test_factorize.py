"""SparseFactorization: planted recovery, determinism, exact top-k sparsity, screening, errors, sklearn API.

Everything here is synthetic and small (each fit well under a second on 2 CPU cores).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from ember_utils.methods.ember.factorize import SparseFactorization, n_nonzero_per_atom

D, N, K, KEEP = 32, 400, 8, 20          # d_model, tokens, atoms, nonzeros per planted atom
RHO = KEEP / N


def planted(seed: int = 1, noise: float = 0.01, n: int = N):
    """X = (F* G*ᵀ + noise)ᵀ with G* having KEEP random ±(1..2) entries per column."""
    g = torch.Generator().manual_seed(seed)
    F = torch.randn(D, K, generator=g)
    G = torch.zeros(n, K)
    for j in range(K):
        rows = torch.randperm(n, generator=g)[:KEEP]
        G[rows, j] = torch.sign(torch.randn(KEEP, generator=g)) * (1 + torch.rand(KEEP, generator=g))
    A = F @ G.T + noise * torch.randn(D, n, generator=g)
    return A.T.contiguous(), F, G


@pytest.fixture(scope="module")
def data():
    return planted()


@pytest.fixture(scope="module")
def fitted(data):
    X, _, _ = data
    return SparseFactorization(n_atoms=K, sparsity=RHO, max_iter=400, patience=60, random_state=0).fit(X)


def rel_err(X: torch.Tensor, R: torch.Tensor) -> float:
    return float(torch.linalg.norm(X.double() - R.double()) / torch.linalg.norm(X.double()))


# ---------------------------------------------------------------- quality

def test_recovers_planted_factorization(data, fitted):
    X, F_true, G_true = data
    m = fitted
    assert m.reconstruction_error_ < 0.02          # noise floor is ~0.010
    atoms = torch.nn.functional.normalize(m.atoms_, dim=1)
    truth = torch.nn.functional.normalize(F_true.T, dim=1)
    cos = (truth @ atoms.T).abs()                  # (true atom, learned atom), up to sign
    best_cos, match = cos.max(dim=1)
    assert int((best_cos > 0.95).sum()) >= K - 1
    assert len(set(match.tolist())) == K           # a permutation, not K copies of one atom
    # matched atoms use the planted tokens
    overlaps = []
    for j in range(K):
        planted_rows = set(torch.nonzero(G_true[:, j]).flatten().tolist())
        learned_rows = set(m.code_indices_[match[j]].tolist())
        overlaps.append(len(planted_rows & learned_rows) / KEEP)
    assert np.mean(overlaps) > 0.9


def test_cheap_loss_matches_dense_residual(data, fitted):
    X, _, _ = data
    m = fitted
    assert m.reconstruction_error_ == pytest.approx(rel_err(X, m.reconstruct()), rel=2e-3)
    assert m.reconstruction_error_ == min(m.loss_curve_) == m.loss_curve_[m.best_iter_]


def test_loss_curve_best_level_never_increases_and_improves(fitted):
    curve = np.asarray(fitted.loss_curve_)
    assert len(curve) == fitted.n_iter_ + 1        # iterate 0 is the initial one
    best_so_far = np.minimum.accumulate(curve)
    assert np.all(np.diff(best_so_far) <= 0)
    assert best_so_far[-1] < 0.2 * curve[0]        # it actually learned something
    assert fitted.converged_                       # patience rule fired before max_iter


def test_stops_on_patience(data):
    X, _, _ = data
    m = SparseFactorization(n_atoms=K, sparsity=RHO, max_iter=5000, patience=7, tol=1e-4).fit(X)
    curve = m.loss_curve_
    assert m.converged_ and m.n_iter_ < 5000
    # the last `patience` iterates brought no relative improvement > tol over the reference before them
    ref = min(curve[: len(curve) - 7])
    assert min(curve[-7:]) >= ref * (1 - 1e-4)


# ---------------------------------------------------------------- sparsity pattern

def test_each_atom_keeps_exactly_its_top_k(data, fitted):
    X, _, _ = data
    m = fitted
    k = n_nonzero_per_atom(N, RHO)
    assert k == KEEP == m.n_nonzero_per_atom_
    nnz = (m.codes_ != 0).sum(dim=0)
    assert nnz.tolist() == [k] * K
    assert m.code_indices_.shape == m.code_values_.shape == (K, k)
    assert torch.all(m.code_indices_[:, 1:] > m.code_indices_[:, :-1])      # sorted, unique
    # the kept tokens are exactly the top-k by |code| of the unthresholded codes of the learned atoms
    full = m.transform(X)                                                    # ridge LS, not sparsified
    top = torch.topk(full.abs(), k, dim=0).indices
    for j in range(K):
        assert set(top[:, j].tolist()) == set(m.code_indices_[j].tolist())


@pytest.mark.parametrize("n,rho,k", [(401, 0.05, 20), (100, 0.01, 1), (300, 0.01, 3), (10, 1.0, 10), (199, 0.5, 99)])
def test_nonzeros_per_atom_is_floor(n, rho, k):
    assert n_nonzero_per_atom(n, rho) == k


def test_transform_reproduces_training_codes(data, fitted):
    X, _, _ = data
    m = fitted
    sparse = m.transform(X, sparsify=True)
    assert torch.allclose(sparse, m.codes_, atol=1e-4, rtol=1e-4)
    assert torch.equal(sparse != 0, m.codes_ != 0)
    # new rows: shape and type; numpy in -> numpy out
    out = m.transform(X[:5].numpy())
    assert isinstance(out, np.ndarray) and out.shape == (5, K)
    assert m.inverse_transform(m.codes_).shape == X.shape
    assert torch.allclose(m.inverse_transform(m.codes_), m.reconstruct())
    assert m.codes_sparse_.to_dense().equal(m.codes_)
    rows, vals = m.top_tokens(0, n=3)
    assert vals.abs().tolist() == sorted(vals.abs().tolist(), reverse=True)
    assert set(rows.tolist()) <= set(m.code_indices_[0].tolist())


# ---------------------------------------------------------------- determinism and screening

def test_deterministic_for_a_seed_and_seed_matters(data):
    X, _, _ = data
    kw = dict(n_atoms=K, sparsity=RHO, max_iter=60, patience=20)
    a = SparseFactorization(random_state=3, **kw).fit(X)
    b = SparseFactorization(random_state=3, **kw).fit(X)
    c = SparseFactorization(random_state=4, **kw).fit(X)
    assert torch.equal(a.atoms_, b.atoms_) and torch.equal(a.codes_, b.codes_)
    assert a.loss_curve_ == b.loss_curve_
    assert not torch.equal(a.atoms_, c.atoms_)


def test_screening_is_exercised_and_matches_dense_path(data):
    X, _, _ = data
    kw = dict(n_atoms=K, sparsity=RHO, max_iter=150, patience=150, random_state=2)
    fast = SparseFactorization(screen=True, **kw).fit(X)
    slow = SparseFactorization(screen=False, **kw).fit(X)
    assert fast.n_screened_steps_ > 50 and slow.n_screened_steps_ == 0
    assert slow.n_dense_steps_ == slow.n_iter_ + 1
    assert torch.equal(fast.code_indices_, slow.code_indices_)              # same top-k sets
    assert fast.reconstruction_error_ == pytest.approx(slow.reconstruction_error_, rel=1e-3)
    assert torch.allclose(fast.atoms_, slow.atoms_, atol=1e-3, rtol=1e-3)


def test_screening_on_structured_data_changes_nothing():
    # low-rank, non-planted data: supports keep moving for a while, so both paths really are exercised
    g = torch.Generator().manual_seed(5)
    X = (torch.randn(600, 6, generator=g) @ torch.randn(6, 24, generator=g) + 0.3 * torch.randn(600, 24, generator=g))
    kw = dict(n_atoms=10, sparsity=0.05, max_iter=120, patience=1000, random_state=0)
    fast = SparseFactorization(screen=True, **kw).fit(X)
    slow = SparseFactorization(screen=False, **kw).fit(X)
    assert fast.n_dense_steps_ > 1 and fast.n_screened_steps_ > 1
    np.testing.assert_allclose(fast.loss_curve_, slow.loss_curve_, rtol=1e-4)


# ---------------------------------------------------------------- robustness

def test_singular_system_raises_the_ridge_and_records_it():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(60, 4, generator=g)          # K=8 > d=4: FᵀF is rank-deficient, ridge 0 cannot work
    m = SparseFactorization(n_atoms=8, sparsity=0.2, ridge=0.0, max_iter=20, patience=5).fit(X)
    assert m.ridge_history_ and m.ridge_ > 0
    assert m.ridge_history_[0][1] == pytest.approx(1e-8)
    assert np.isfinite(m.reconstruction_error_)


def test_numpy_float64_and_max_iter_zero(data):
    X, _, _ = data
    codes = SparseFactorization(n_atoms=K, sparsity=RHO, max_iter=30, dtype=torch.float64).fit_transform(
        X.double().numpy())
    assert isinstance(codes, np.ndarray) and codes.dtype == np.float64 and codes.shape == (N, K)
    m0 = SparseFactorization(n_atoms=K, sparsity=RHO, max_iter=0).fit(X)
    assert m0.n_iter_ == 0 and len(m0.loss_curve_) == 1


def test_does_not_modify_input_or_need_grad(data):
    X, _, _ = data
    Xp = torch.nn.Parameter(X.clone())
    before = Xp.detach().clone()
    SparseFactorization(n_atoms=K, sparsity=RHO, max_iter=5).fit(Xp)
    assert torch.equal(Xp.detach(), before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(data):
    X, _, _ = data
    kw = dict(n_atoms=K, sparsity=RHO, max_iter=100, patience=30, random_state=0)
    cpu = SparseFactorization(**kw).fit(X)
    gpu = SparseFactorization(device="cuda", **kw).fit(X)
    assert gpu.atoms_.device.type == "cuda"
    assert gpu.reconstruction_error_ == pytest.approx(cpu.reconstruction_error_, rel=1e-3)


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("X,kwargs,match", [
    (torch.randn(5, 3), dict(n_atoms=6, sparsity=1.0), "larger than the number of tokens"),
    (torch.randn(50, 3), dict(n_atoms=2, sparsity=0.01), "< 1"),
    (torch.randn(50, 3), dict(n_atoms=2, sparsity=0.0), r"\(0, 1\]"),
    (torch.randn(50, 3), dict(n_atoms=2, sparsity=1.5), r"\(0, 1\]"),
    (torch.randn(50, 3), dict(n_atoms=2, sparsity=0.5, ridge=-1e-4), "ridge"),
    (torch.randn(50), dict(n_atoms=2, sparsity=0.5), "2-D"),
    (torch.randn(4, 50, 3), dict(n_atoms=2, sparsity=0.5), "2-D"),
    (torch.tensor([[1.0, float("nan")], [0.0, 1.0], [1.0, 1.0]]), dict(n_atoms=1, sparsity=0.5), "NaN or inf"),
    (np.array([[1.0, np.inf], [0.0, 1.0], [1.0, 1.0]]), dict(n_atoms=1, sparsity=0.5), "NaN or inf"),
    (torch.zeros(10, 3), dict(n_atoms=2, sparsity=0.5), "all zeros"),
    (torch.randn(50, 3), dict(n_atoms=0, sparsity=0.5), "n_atoms"),
    (torch.randn(50, 3), dict(n_atoms=2, sparsity=0.5, patience=0), "patience"),
    (torch.randn(50, 3), dict(n_atoms=2, sparsity=0.5, dtype=torch.float16), "dtype"),
])
def test_clear_errors(X, kwargs, match):
    with pytest.raises(ValueError, match=match):
        SparseFactorization(**kwargs).fit(X)


def test_transform_errors(fitted):
    with pytest.raises(ValueError, match="columns"):
        fitted.transform(torch.randn(3, D + 1))
    with pytest.raises(ValueError, match="NaN"):
        fitted.transform(torch.full((2, D), float("nan")))
    with pytest.raises(NotFittedError, match="not fitted"):
        SparseFactorization().transform(torch.randn(3, D))
    with pytest.raises(NotFittedError):
        check_is_fitted(SparseFactorization())
    check_is_fitted(fitted)


def test_saved_model_transforms_exactly_as_the_fitted_one(fitted, data, tmp_path):
    X = data[0] if isinstance(data, tuple) else data
    loaded = SparseFactorization.load(fitted.save(tmp_path / "f.safetensors"))
    assert torch.equal(loaded.thresholds_, fitted.thresholds_)
    X_new = X[:7] + 0.01 * torch.randn(7, X.shape[1], generator=torch.Generator().manual_seed(0))
    for sparsify in (False, True):
        assert torch.equal(loaded.transform(X_new, sparsify=sparsify), fitted.transform(X_new, sparsify=sparsify))


# ---------------------------------------------------------------- sklearn API

def test_sklearn_get_params_and_clone(fitted):
    params = fitted.get_params()
    assert params["n_atoms"] == K and params["sparsity"] == RHO and params["dtype"] is torch.float32
    assert set(params) == {"n_atoms", "sparsity", "ridge", "max_iter", "tol", "patience", "random_state", "device",
                           "dtype", "verbose", "screen"}
    twin = clone(fitted)
    assert twin.get_params() == params and not hasattr(twin, "atoms_")
    twin.set_params(n_atoms=3)
    assert twin.n_atoms == 3 and fitted.n_atoms == K
    assert "SparseFactorization(" in repr(fitted)
