"""The EMBER sparse factorization of an embedding slice as a scikit-learn-style estimator.

Given token embeddings ``X`` (n_tokens × d_model, rows are tokens) we factorize ``A = Xᵀ`` (d × n) as

    A ≈ F Gᵀ,   F ∈ R^{d×K} dense atoms,   G ∈ R^{n×K} signed codes,

where every column of ``G`` keeps only its top ``k`` entries by magnitude, ``k = floor(ρ·n)``
(``ρ = sparsity``; ``ρ·n < 1`` is an error rather than silently rounding up to one token per atom).
The loss is ``‖A − F Gᵀ‖²_F``; everything reported (``loss_curve_``, ``reconstruction_error_``) is the
*relative* error ``‖A − F Gᵀ‖_F / ‖A‖_F``.

Algorithm (alternating ridge least squares with hard thresholding):

1. ``F₀`` random normal from ``torch.Generator().manual_seed(random_state)`` (drawn on the CPU, so CPU and CUDA
   start from the same point); codes ``G₀ = H(Aᵀ F₀ (F₀ᵀF₀ + λI)⁻¹)`` where ``H`` keeps the top-k
   entries of each column. This pair is iterate 0.
2. Each iteration: ``F ← A G (GᵀG + λI)⁻¹``; rescale so the columns of ``G`` have unit norm, moving the
   scale into ``F`` (only ``F`` is kept: ``G`` is recomputed next); ``G ← H(Aᵀ F (FᵀF + λI)⁻¹)``.
   The iterate of that iteration is the pair ``(F, G)`` that produced ``G`` — so ``transform`` with the
   learned atoms reproduces the learned codes on the training rows.
3. The best iterate (lowest loss) is kept; we stop when the loss has not improved on the last
   significant loss by more than ``tol`` (relative, on the relative error) for ``patience`` iterations,
   or after ``max_iter`` iterations.

Implementation notes (why it is fast):

* No explicit inverses: both K×K systems are solved with a Cholesky factorization. If a factorization
  fails (a singular or badly conditioned system) the ridge is multiplied by 10 and the solve retried; the
  rise is recorded in ``ridge_history_`` and kept for the rest of the fit.
* ``A G`` and ``GᵀG`` use the sparsity of ``G`` (``k·K`` nonzeros): ``G`` is held as a CSR matrix
  (K × n) and ``A G = (Gᵀ X)ᵀ`` costs ``k·K·d`` instead of ``n·K·d``.
* The code update ``G = X W`` (``W = F (FᵀF+λI)⁻¹``) is the one dense ``n·d·K`` product, and it is
  needed only to *find* each atom's top-k tokens. ``screen=True`` (default) skips it whenever that can be
  proven unnecessary: at every dense step we remember ``W_ref``, each atom's top ``m = 1.5k`` tokens
  (the candidates), the k-th largest |code| ``s_k`` and the largest |code| outside the candidates ``b``.
  Since ``|x_i·w − x_i·w_ref| ≤ ‖x_i‖·‖w − w_ref‖``, with ``slack = max‖x_i‖·‖w − w_ref‖`` plus a
  rigorous bound on float rounding of both products, ``b + 2·slack < s_k`` for every atom proves that
  no non-candidate can enter the new top-k; we then compute the codes of the candidates only (a
  sampled dense-dense product, ``m·d·K``) and take their top-k. Otherwise we do the dense step and
  refresh the reference. The result is the same algorithm (same top-k sets; kept values differ from
  the dense product only by float rounding). Once the iteration has settled most steps are
  screened; while the iterate keeps moving they stay dense (a failed check backs off, so the bookkeeping costs
  little; measured in ``benchmarks/README.md``). ``n_dense_steps_`` / ``n_screened_steps_`` report how often each path ran.
* The loss is never formed densely: ``‖A − FGᵀ‖² = ‖A‖² − 2⟨AG, F⟩ + ⟨FᵀF, GᵀG⟩``, and ``AG``, ``GᵀG``
  and ``FᵀF`` are exactly the quantities the next update needs anyway, so the loss check is free. The
  sums are accumulated in float64 to limit cancellation.
* All big buffers are allocated once; the best iterate is copied into preallocated buffers.
* On the CPU a fit is bit-deterministic for a fixed seed (same machine, same thread count).

Space: the factorization works on the rows exactly as given (for the EMBER edit: the raw ``W_E`` rows,
before Gemma's √d_model input scaling; the edit is relative, so the scaling does not matter).
"""
from __future__ import annotations

import logging
import math
import time
import warnings
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

__all__ = ["SparseFactorization", "n_nonzero_per_atom"]

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_MAX_RIDGE_RAISES = 30
_SAVE_FORMAT = "ember-sparse-factorization-v2"
_SCREEN_CANDIDATES = 1.5   # candidates per atom for the screened code update, in units of k


def n_nonzero_per_atom(n_tokens: int, sparsity: float) -> int:
    """Nonzeros kept per atom (column of G): ``floor(sparsity · n_tokens)``; raises if that is < 1.

    ``floor`` never exceeds the ρ·n budget; a tiny epsilon absorbs float error (0.01 · 300 = 3.0000000000000004).
    """
    if not (isinstance(sparsity, (int, float, np.floating, np.integer)) and not isinstance(sparsity, bool)):
        raise ValueError(f"sparsity must be a number in (0, 1], got {sparsity!r}.")
    sparsity = float(sparsity)
    if not (0.0 < sparsity <= 1.0) or math.isnan(sparsity):
        raise ValueError(f"sparsity must be in (0, 1] (fraction of tokens kept per atom), got {sparsity}.")
    k = int(math.floor(sparsity * n_tokens + 1e-9))
    if k < 1:
        raise ValueError(
            f"sparsity·n_tokens = {sparsity}·{n_tokens} = {sparsity * n_tokens:.3g} < 1: every atom would keep "
            f"no token. Use sparsity >= {1.0 / n_tokens:.3g} for {n_tokens} tokens, or more tokens."
        )
    return k


class SparseFactorization(BaseEstimator):
    """Sparse factorization ``Xᵀ ≈ F Gᵀ`` with ``k = floor(sparsity·n)`` nonzeros per code column.

    Args:
        n_atoms: K, the number of atoms (columns of F). Must be ≤ the number of rows of ``X``.
        sparsity: ρ in (0, 1]: each atom keeps its top ``floor(ρ·n)`` tokens by |code|.
        ridge: λ ≥ 0 added to both K×K normal equations (raised ×10 when a Cholesky solve fails;
            a ridge of 0 is first raised to 1e-8).
        max_iter: maximum number of alternating iterations (≥ 0; 0 returns the initial iterate).
        tol: relative improvement of the relative error that counts as progress (≥ 0).
        patience: stop after this many iterations without such progress (≥ 1).
        random_state: integer seed of the ``torch.Generator`` for the random normal initial atoms.
        device: ``None`` = the device of the input tensor (CPU for numpy input); or ``'cpu'``/``'cuda'``.
        dtype: ``torch.float32`` (default) or ``torch.float64`` (or their names).
        verbose: show a tqdm progress bar with the current relative error.
        screen: skip the dense code update when a bound proves the top-k sets cannot change beyond each
            atom's 1.5k candidates (exact; see the module docstring). ``False`` = always dense.

    Learned attributes (torch tensors on ``device_``):
        atoms_: (K, d) atom directions, row k = column k of F (not unit norm: the scale lives in F).
        codes_: (n, K) dense G with exactly k nonzeros per column.
        code_indices_: (K, k) token (row) indices of each atom's nonzero codes, ascending.
        code_values_: (K, k) the matching code values.
        thresholds_: (K,) keep-threshold of each atom for ``transform(..., sparsify=True)``: halfway between
            the k-th and (k+1)-th largest |code| of that atom on the training rows.
        loss_curve_: list of relative errors ``‖A−FGᵀ‖_F/‖A‖_F``, one per iterate (index 0 = initial).
        reconstruction_error_: the best relative error (the returned iterate's).
        best_iter_: the iteration of the returned iterate; n_iter_: iterations run.
        converged_: True when stopped by the patience rule, False when ``max_iter`` was hit.
        ridge_: the ridge in use at the end; ridge_history_: list of (iteration, new ridge) raises.
        n_dense_steps_, n_screened_steps_: how many code updates ran dense / screened.
        n_nonzero_per_atom_, n_features_in_, n_samples_fit_, fit_time_ (s), device_.
    """

    def __init__(self, n_atoms: int = 100, sparsity: float = 0.01, ridge: float = 1e-4, max_iter: int = 20000,
                 tol: float = 1e-4, patience: int = 500, random_state: int = 0, device: Any = None,
                 dtype: Any = torch.float32, verbose: bool = False, screen: bool = True):
        self.n_atoms = n_atoms
        self.sparsity = sparsity
        self.ridge = ridge
        self.max_iter = max_iter
        self.tol = tol
        self.patience = patience
        self.random_state = random_state
        self.device = device
        self.dtype = dtype
        self.verbose = verbose
        self.screen = screen

    # ------------------------------------------------------------------ validation
    def _resolve_dtype(self) -> torch.dtype:
        dt = self.dtype
        if isinstance(dt, str):
            dt = _DTYPES.get(dt.replace("torch.", ""))
        if dt not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64 (or their names), got {self.dtype!r}.")
        return dt

    def _check_params(self) -> None:
        def is_int(v: Any) -> bool:
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

        def is_num(v: Any) -> bool:
            return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)

        if not is_int(self.n_atoms) or self.n_atoms < 1:
            raise ValueError(f"n_atoms must be a positive integer, got {self.n_atoms!r}.")
        if not is_num(self.ridge) or not math.isfinite(self.ridge) or self.ridge < 0:
            raise ValueError(f"ridge must be a finite number >= 0, got {self.ridge!r}.")
        if not is_int(self.max_iter) or self.max_iter < 0:
            raise ValueError(f"max_iter must be an integer >= 0, got {self.max_iter!r}.")
        if not is_num(self.tol) or not math.isfinite(self.tol) or self.tol < 0:
            raise ValueError(f"tol must be a finite number >= 0, got {self.tol!r}.")
        if not is_int(self.patience) or self.patience < 1:
            raise ValueError(f"patience must be an integer >= 1, got {self.patience!r}.")
        if not is_int(self.random_state):
            raise ValueError(f"random_state must be an integer seed, got {self.random_state!r}.")
        if not is_num(self.sparsity) or not (0.0 < float(self.sparsity) <= 1.0):
            raise ValueError(f"sparsity must be in (0, 1] (fraction of tokens kept per atom), got {self.sparsity!r}.")

    def _resolve_device(self, X: Any) -> torch.device:
        if self.device is not None:
            try:
                dev = torch.device(self.device)
            except (RuntimeError, TypeError) as exc:
                raise ValueError(f"Invalid device {self.device!r}: use 'cpu', 'cuda' or 'cuda:N'.") from exc
            if dev.type == "cuda" and not torch.cuda.is_available():
                raise ValueError(f"device {self.device!r} requested but CUDA is not available; use 'cpu'.")
            return dev
        return X.device if isinstance(X, torch.Tensor) else torch.device("cpu")

    @staticmethod
    def _as_matrix(X: Any, name: str, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        if isinstance(X, torch.Tensor):
            t = X.detach()
        else:
            try:
                arr = np.asarray(X)
            except Exception as exc:  # pragma: no cover - exotic inputs
                raise ValueError(f"{name} must be a 2-D torch tensor or numpy array, got {type(X).__name__}.") from exc
            if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
                raise ValueError(f"{name} must be a numeric 2-D array, got dtype {arr.dtype}.")
            t = torch.from_numpy(np.ascontiguousarray(arr))
        if t.ndim != 2:
            raise ValueError(f"{name} must be 2-D (n_tokens, d_model) with one token embedding per row, "
                             f"got shape {tuple(t.shape)}.")
        if t.is_complex():
            raise ValueError(f"{name} must be real-valued, got {t.dtype}.")
        if t.shape[0] == 0 or t.shape[1] == 0:
            raise ValueError(f"{name} is empty (shape {tuple(t.shape)}).")
        t = t.to(device=device, dtype=dtype).contiguous()
        if not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).any(dim=1).sum())
            raise ValueError(f"{name} contains NaN or inf values (in {bad} of {t.shape[0]} rows); "
                             f"only finite embeddings can be factorized.")
        return t

    # ------------------------------------------------------------------ numerics
    @staticmethod
    def _sq_norm(X: torch.Tensor, chunk: int = 16384) -> float:
        total = 0.0
        for s in range(0, X.shape[0], chunk):
            total += float(torch.linalg.vector_norm(X[s:s + chunk].double()) ** 2)
        return total

    def _chol(self, sys_buf: torch.Tensor, gram: torch.Tensor, it: int) -> torch.Tensor:
        """Cholesky factor of ``gram + ridge·I`` (into ``sys_buf``), raising the ridge on failure."""
        for _ in range(_MAX_RIDGE_RAISES + 1):
            sys_buf.copy_(gram)
            sys_buf.diagonal().add_(self._ridge)
            L, info = torch.linalg.cholesky_ex(sys_buf)
            if int(info) == 0:   # LAPACK potrf also reports NaN pivots through info
                return L
            old = self._ridge
            self._ridge = old * 10.0 if old > 0 else 1e-8
            self.ridge_history_.append((it, self._ridge))
            logger.warning("Cholesky solve failed at iteration %d with ridge %.3g; raising ridge to %.3g", it, old,
                           self._ridge)
        raise RuntimeError(f"Cholesky solve still failing at iteration {it} after raising the ridge to "
                           f"{self._ridge:.3g}; the input is probably degenerate (e.g. constant rows).")

    def fit(self, X: Any, y: Any = None) -> "SparseFactorization":
        """Fit atoms and codes to ``X`` (n_tokens × d_model, rows = token embeddings)."""
        self._check_params()
        dtype = self._resolve_dtype()
        device = self._resolve_device(X)
        Xt = self._as_matrix(X, "X", device, dtype)
        n, d = Xt.shape
        K = int(self.n_atoms)
        if K > n:
            raise ValueError(f"n_atoms={K} is larger than the number of tokens n={n}: use n_atoms <= {n} "
                             f"(each atom needs its own tokens).")
        k = n_nonzero_per_atom(n, self.sparsity)
        norm_a2 = self._sq_norm(Xt)
        if norm_a2 == 0.0:
            raise ValueError("X is all zeros: the relative reconstruction error is undefined.")
        t0 = time.perf_counter()
        with torch.no_grad():
            self._fit(Xt, n, d, K, k, norm_a2, dtype, device)
        self.fit_time_ = time.perf_counter() - t0
        self.n_nonzero_per_atom_ = k
        self.n_features_in_ = d
        self.n_samples_fit_ = n
        self.device_ = device
        return self

    def _fit(self, X: torch.Tensor, n: int, d: int, K: int, k: int, norm_a2: float, dtype: torch.dtype,
             device: torch.device) -> None:
        self._ridge = float(self.ridge)
        self.ridge_history_: list[tuple[int, float]] = []
        self.n_dense_steps_ = 0
        self.n_screened_steps_ = 0
        self.loss_curve_: list[float] = []
        solver = _AlternatingSolver(self, X, K, k, norm_a2, screen=bool(self.screen) and 4 * k <= n)
        it, converged = solver.run()
        self._set_learned_attributes(solver, X, it, converged)
        logger.info("SparseFactorization: %d iterations (%s), best relative error %.5f at iteration %d", it,
                    "converged" if converged else "max_iter reached", self.reconstruction_error_, self.best_iter_)

    def _set_learned_attributes(self, solver: "_AlternatingSolver", X: torch.Tensor, it: int, converged: bool) -> None:
        """The best iterate as learned attributes, the transform matrix and the keep-thresholds."""
        K, k, n = solver.K, solver.k, solver.n
        self.n_iter_ = it
        self.converged_ = converged
        self.best_iter_ = int(solver.best_iter)
        self.reconstruction_error_ = float(solver.best_loss)
        self.ridge_ = self._ridge
        self._ridge_at_best = float(solver.best_ridge)
        self.atoms_ = solver.best_Ft
        self.code_indices_ = solver.best_idx
        self.code_values_ = solver.best_vals
        codes = solver.G_dense  # reuse the buffer
        codes.zero_()
        codes.scatter_(0, solver.best_idx.T, solver.best_vals.T)
        self.codes_ = codes
        FtF_best = solver.best_Ft @ solver.best_Ft.T
        FtF_best.diagonal().add_(self._ridge_at_best)
        # (K, d), row-major like the saved copy, so a loaded model multiplies in the same layout (same rounding)
        self._transform_matrix = torch.cholesky_solve(solver.best_Ft, torch.linalg.cholesky(FtF_best)).contiguous()
        # keep-thresholds for transform(sparsify=True): halfway between each atom's k-th and (k+1)-th largest
        # |code| on the training rows (one dense product), so rounding cannot flip the training pattern
        if k < n:
            torch.mm(self._transform_matrix, X.T, out=solver.dense)
            torch.abs(solver.dense, out=solver.absbuf)
            kth = torch.topk(solver.absbuf, k + 1, dim=1, largest=True, sorted=True).values
            self.thresholds_ = 0.5 * (kth[:, k - 1] + kth[:, k])
        else:
            self.thresholds_ = torch.zeros(K, device=X.device, dtype=X.dtype)

    # ------------------------------------------------------------------ public API
    def _check_fitted(self) -> None:
        check_is_fitted(self, ["atoms_", "thresholds_"])

    @staticmethod
    def _like_input(t: torch.Tensor, ref: Any) -> Any:
        return t.cpu().numpy() if not isinstance(ref, torch.Tensor) else t

    def fit_transform(self, X: Any, y: Any = None) -> Any:
        """Fit, then return the learned codes (n × K); numpy in → numpy out, tensor in → tensor out."""
        self.fit(X)
        return self._like_input(self.codes_, X)

    def transform(self, X_new: Any, sparsify: bool = False) -> Any:
        """Codes of new rows on the learned atoms: ridge least squares ``X_new F (FᵀF + λI)⁻¹``.

        With ``sparsify=True`` every entry whose magnitude is below its atom's fitted keep-threshold
        (``thresholds_``: halfway between the atom's k-th and (k+1)-th largest |code| on the training rows)
        is set to zero; on the training rows this reproduces the sparsity pattern of ``codes_`` and its values
        up to float rounding. On new rows the number of nonzeros per atom is not fixed.
        numpy in → numpy out, tensor in → tensor out.
        """
        self._check_fitted()
        Xn = self._as_matrix(X_new, "X_new", self.device_, self.atoms_.dtype)
        if Xn.shape[1] != self.n_features_in_:
            raise ValueError(f"X_new has {Xn.shape[1]} columns but the model was fitted on d_model="
                             f"{self.n_features_in_}.")
        with torch.no_grad():
            codes = Xn @ self._transform_matrix.T
            if sparsify:
                codes = codes.masked_fill(codes.abs() < self.thresholds_.unsqueeze(0), 0.0)
        return self._like_input(codes, X_new)

    def inverse_transform(self, codes: Any) -> Any:
        """Rows reconstructed from codes: ``codes @ atoms_`` (m × d). numpy in → numpy out."""
        self._check_fitted()
        C = self._as_matrix(codes, "codes", self.device_, self.atoms_.dtype)
        if C.shape[1] != self.atoms_.shape[0]:
            raise ValueError(f"codes must have n_atoms={self.atoms_.shape[0]} columns, got {C.shape[1]}.")
        with torch.no_grad():
            return self._like_input(C @ self.atoms_, codes)

    def reconstruct(self) -> torch.Tensor:
        """The reconstruction of the training rows, ``(F Gᵀ)ᵀ = codes_ @ atoms_`` (n × d)."""
        self._check_fitted()
        with torch.no_grad():
            return self.codes_ @ self.atoms_

    @property
    def codes_sparse_(self) -> torch.Tensor:
        """``codes_`` as a coalesced sparse COO tensor (n × K)."""
        self._check_fitted()
        K, k = self.code_indices_.shape
        rows = self.code_indices_.reshape(-1)
        cols = torch.arange(K, device=rows.device).repeat_interleave(k)
        return torch.sparse_coo_tensor(torch.stack([rows, cols]), self.code_values_.reshape(-1),
                                       (self.n_samples_fit_, K), check_invariants=True).coalesce()

    def top_tokens(self, atom: int, n: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
        """Row indices and codes of the ``n`` largest-|code| tokens of one atom (descending |code|)."""
        self._check_fitted()
        if not 0 <= int(atom) < self.atoms_.shape[0]:
            raise ValueError(f"atom must be in [0, {self.atoms_.shape[0]}), got {atom}.")
        v = self.code_values_[atom]
        order = torch.argsort(v.abs(), descending=True, stable=True)[:n]
        return self.code_indices_[atom][order], v[order]

    # ------------------------------------------------------------------ persistence
    _SCALARS = ("n_iter_", "best_iter_", "reconstruction_error_", "ridge_", "_ridge_at_best", "converged_",
                "n_nonzero_per_atom_", "n_features_in_", "n_samples_fit_", "fit_time_")

    def save(self, path: Any) -> Any:
        """Write the fitted state (atoms, sparse codes, curves, parameters) to one safetensors file, atomically."""
        import json
        from pathlib import Path

        from safetensors.torch import save as st_save

        from ...io import atomic_write_bytes

        self._check_fitted()
        params = {k: (str(v) if isinstance(v, torch.dtype) or k == "device" else v) for k, v in self.get_params().items()}
        meta = {"format": _SAVE_FORMAT, "params": json.dumps(params),
                "scalars": json.dumps({k: getattr(self, k) for k in self._SCALARS}),
                "loss_curve": json.dumps(self.loss_curve_),
                "ridge_history": json.dumps(getattr(self, "ridge_history_", []))}
        blob = st_save({"atoms": self.atoms_.detach().cpu().contiguous(),
                        "code_indices": self.code_indices_.detach().cpu().contiguous(),
                        "code_values": self.code_values_.detach().cpu().contiguous(),
                        "thresholds": self.thresholds_.detach().cpu().contiguous(),
                        "transform_matrix": self._transform_matrix.detach().cpu().contiguous()}, metadata=meta)
        return atomic_write_bytes(Path(path), blob)

    @classmethod
    def load(cls, path: Any, device: Any = None) -> "SparseFactorization":
        """Restore an estimator written by :meth:`save` (``transform`` and ``codes_`` work as after ``fit``)."""
        import json

        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != _SAVE_FORMAT:
                raise ValueError(f"{path} is not a saved SparseFactorization (format={meta.get('format')!r}).")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        params = json.loads(meta["params"])
        params["dtype"] = getattr(torch, params["dtype"].replace("torch.", ""))
        params["device"] = None if params["device"] in (None, "None") else params["device"]
        est = cls(**params)
        dev = torch.device(device) if device is not None else torch.device("cpu")
        for k, v in json.loads(meta["scalars"]).items():
            setattr(est, k, v)
        est.loss_curve_ = json.loads(meta["loss_curve"])
        est.ridge_history_ = [tuple(x) for x in json.loads(meta["ridge_history"])]
        est.device_ = dev
        est.atoms_ = tensors["atoms"].to(dev)
        est.code_indices_ = tensors["code_indices"].to(dev)
        est.code_values_ = tensors["code_values"].to(dev)
        est.thresholds_ = tensors["thresholds"].to(dev)
        K = est.atoms_.shape[0]
        codes = torch.zeros(est.n_samples_fit_, K, dtype=est.atoms_.dtype, device=dev)
        codes.scatter_(0, est.code_indices_.T, est.code_values_.T)
        est.codes_ = codes
        est._transform_matrix = tensors["transform_matrix"].to(dev)  # saved: transform is exactly the fitted one
        return est


class _AlternatingSolver:
    """The alternating iteration of :class:`SparseFactorization` on preallocated buffers (one fit).

    ``g_step`` is the thresholded code update (screened when a bound proves it exact, see the module
    docstring), ``f_step`` the atom update, ``evaluate`` the free loss of the current iterate and ``record``
    keeps the best one. The estimator ``est`` owns the ridge (raised by its ``_chol``) and the counters.
    """

    def __init__(self, est: SparseFactorization, X: torch.Tensor, K: int, k: int, norm_a2: float, screen: bool):
        self.est, self.X, self.K, self.k, self.norm_a2, self.screen = est, X, K, k, norm_a2, screen
        n, d = X.shape
        self.n, self.d = n, d
        device, dtype = X.device, X.dtype
        opts = {"device": device, "dtype": dtype}
        gen = torch.Generator(device="cpu").manual_seed(int(est.random_state))
        self.Ft = torch.randn(K, d, generator=gen, dtype=dtype).to(device)   # atoms as rows (Fᵀ)
        self.FtF = torch.empty(K, K, **opts)
        self.sys_buf = torch.empty(K, K, **opts)
        self.W = torch.empty(K, d, **opts)                                     # (FᵀF+λI)⁻¹ Fᵀ
        self.dense = torch.empty(K, n, **opts)                                 # unthresholded Gᵀ
        self.absbuf = torch.empty(K, n, **opts)
        self.top_vals = torch.empty(K, k, **opts)
        self.top_idx = torch.empty(K, k, dtype=torch.long, device=device)
        self.idx = torch.empty(K, k, dtype=torch.long, device=device)           # sorted support
        self.perm = torch.empty(K, k, dtype=torch.long, device=device)
        self.vals = torch.empty(K, k, **opts)
        self.G_dense = torch.zeros(n, K, **opts)                               # thresholded G (for GᵀG)
        self.old_idx = torch.empty_like(self.idx)
        self.crow = torch.arange(0, K * k + 1, k, dtype=torch.long, device=device)
        self.norms = torch.empty(K, **opts)
        self.best_Ft, self.best_idx = torch.empty_like(self.Ft), torch.empty_like(self.idx)
        self.best_vals = torch.empty_like(self.vals)
        self.best_loss, self.best_iter, self.best_ridge = math.inf, 0, est._ridge
        self.has_support = False
        # has_ref: a screening reference exists; skip/backoff: after a failed check, the next `skip` dense
        # steps do not prepare a new reference (backoff doubles up to 8) — preparing one costs a larger
        # top-k, which matters at full-vocabulary size while the iterate is still moving
        self.has_ref, self.has_T, self.skip, self.backoff = False, False, 0, 1
        if screen:
            self._init_screening(opts, device, dtype)

    def _init_screening(self, opts: dict, device: torch.device, dtype: torch.dtype) -> None:
        """Buffers of the screened code update: candidates = each atom's top-m tokens at the last dense step."""
        K, d = self.K, self.d
        m = self.m = int(_SCREEN_CANDIDATES * self.k)
        self.ref_W = torch.empty(K, d, **opts)
        self.ref_margin = torch.empty(K, **opts)   # allowed ‖w − w_ref‖ + γ‖w‖ (see try_screened)
        self.cand = torch.empty(K, m, dtype=torch.long, device=device)
        self.sorted_vals = torch.empty(K, m + 1, **opts)
        self.sorted_idx = torch.empty(K, m + 1, dtype=torch.long, device=device)
        # the candidates' codes are computed token-major (pattern n × K, each X row read once) and
        # scattered back to atom-major (K × m) order through `order`
        self.cand_atom = torch.arange(K, device=device).repeat_interleave(m)
        self.zeros_m = torch.zeros(K * m, **opts)
        self.cvals = torch.empty(K, m, **opts)
        self.ref_T: dict[str, torch.Tensor] = {}
        self.eps = torch.empty(K, **opts)
        self.wnorm = torch.empty(K, **opts)
        self.diff = torch.empty(K, d, **opts)
        self.pos = torch.empty(K, self.k, dtype=torch.long, device=device)
        self.r_max = float(torch.linalg.vector_norm(self.X, dim=1).max())
        self.gamma = d * torch.finfo(dtype).eps                             # bound on dot-product rounding

    # ------------------------------------------------------------------ code update
    def set_support(self, vals_src: torch.Tensor, order_src: torch.Tensor) -> None:
        """idx ← sorted(order_src); vals ← vals_src in the same order; update the dense copy of G."""
        torch.sort(order_src, dim=1, out=(self.idx, self.perm))
        torch.gather(vals_src, 1, self.perm, out=self.vals)
        if self.has_support:
            self.G_dense.scatter_(0, self.old_idx.T, 0.0)   # clear only the previous support
        self.G_dense.scatter_(0, self.idx.T, self.vals.T)
        self.old_idx.copy_(self.idx)
        self.has_support = True

    def try_screened(self) -> bool:
        if not self.has_ref:
            return False
        # |G_ij(new) − G_ij(ref)| ≤ ‖x_i‖ ε_j + rounding of both products (ε_j = ‖w_j − w_ref_j‖), so
        # with slack_j = r_max (ε_j + γ(‖w_j‖ + ‖w_ref_j‖)) the condition b_j + 2 slack_j < s_k,j proves
        # that no non-candidate can enter atom j's new top-k. With ‖w_j‖ ≤ ‖w_ref_j‖ + ε_j it suffices that
        # ε_j (1 + γ) < (s_k,j − b_j) / (2 r_max) − 2γ‖w_ref_j‖, i.e. ε_j < ref_margin_j (precomputed).
        torch.sub(self.W, self.ref_W, out=self.diff)
        torch.linalg.vector_norm(self.diff, dim=1, out=self.eps)
        if not bool((self.eps < self.ref_margin).all()):
            self.has_ref, self.skip, self.backoff = False, self.backoff, min(2 * self.backoff, 8)
            return False
        self.backoff = 1
        if not self.has_T:
            self.build_token_major()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            T = self.ref_T
            pattern = torch.sparse_csr_tensor(T["crow"], T["col"], self.zeros_m, (self.n, self.K),
                                              check_invariants=False)
            self.cvals.view(-1)[T["order"]] = torch.sparse.sampled_addmm(pattern, self.X, self.W.T, beta=0.0).values()
        torch.topk(self.cvals.abs(), self.k, dim=1, largest=True, sorted=False, out=(self.top_vals, self.pos))
        torch.gather(self.cand, 1, self.pos, out=self.top_idx)
        self.set_support(torch.gather(self.cvals, 1, self.pos), self.top_idx)
        self.est.n_screened_steps_ += 1
        return True

    def build_token_major(self) -> None:
        tokens = self.cand.view(-1)
        order = torch.argsort(tokens * self.K + self.cand_atom)          # token-major, atoms ascending per token
        counts = torch.bincount(tokens, minlength=self.n)
        crow_t = torch.zeros(self.n + 1, dtype=torch.long, device=self.X.device)
        torch.cumsum(counts, 0, out=crow_t[1:])
        self.ref_T.update(order=order, col=self.cand_atom[order].contiguous(), crow=crow_t)
        self.has_T = True

    def g_step(self, it: int) -> None:
        """G ← top-k of Aᵀ F (FᵀF + λI)⁻¹ per atom (screened when provably exact)."""
        k = self.k
        torch.mm(self.Ft, self.Ft.T, out=self.FtF)
        L = self.est._chol(self.sys_buf, self.FtF, it)
        torch.cholesky_solve(self.Ft, L, out=self.W)
        if self.screen and self.try_screened():
            return
        torch.mm(self.W, self.X.T, out=self.dense)
        torch.abs(self.dense, out=self.absbuf)
        self.est.n_dense_steps_ += 1
        prepare_ref = self.screen and self.skip == 0
        if self.screen and not prepare_ref:
            self.skip -= 1
        if not prepare_ref:
            torch.topk(self.absbuf, k, dim=1, largest=True, sorted=False, out=(self.top_vals, self.top_idx))
            self.set_support(torch.gather(self.dense, 1, self.top_idx), self.top_idx)
            return
        m = self.m
        torch.topk(self.absbuf, m + 1, dim=1, largest=True, sorted=True, out=(self.sorted_vals, self.sorted_idx))
        self.top_idx.copy_(self.sorted_idx[:, :k])
        self.set_support(torch.gather(self.dense, 1, self.top_idx), self.top_idx)
        self.ref_W.copy_(self.W)
        torch.linalg.vector_norm(self.W, dim=1, out=self.wnorm)
        torch.sub(self.sorted_vals[:, k - 1], self.sorted_vals[:, m], out=self.ref_margin)   # s_k − b
        self.ref_margin.div_(2.0 * max(self.r_max, 1e-30)).sub_(2.0 * self.gamma * self.wnorm).div_(1.0 + self.gamma)
        self.cand.copy_(self.sorted_idx[:, :m])
        self.has_ref, self.has_T = True, False

    # ------------------------------------------------------------------ atom update, loss, best iterate
    def f_step(self, it: int, AGt: torch.Tensor, GtG: torch.Tensor) -> None:
        """Fᵀ = (GᵀG + λI)⁻¹ (AG)ᵀ, then unit-norm code columns with the scale moved into the atoms."""
        L = self.est._chol(self.sys_buf, GtG, it)
        torch.cholesky_solve(AGt, L, out=self.Ft)
        torch.linalg.vector_norm(self.vals, dim=1, out=self.norms)
        self.norms.masked_fill_(self.norms == 0, 1.0)
        self.Ft.mul_(self.norms.unsqueeze(1))

    def evaluate(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(AG)ᵀ, GᵀG and the relative error of the current iterate (no dense residual)."""
        K, n = self.K, self.n
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            Gt = torch.sparse_csr_tensor(self.crow, self.idx.view(-1), self.vals.view(-1), (K, n),
                                         check_invariants=False)
            AGt = Gt @ self.X            # (K, d) = (A G)ᵀ
            GtG = Gt @ self.G_dense      # (K, K) = Gᵀ G
        cross = float(torch.sum(AGt * self.Ft, dtype=torch.float64))
        quad = float(torch.sum(self.FtF * GtG, dtype=torch.float64))
        loss2 = self.norm_a2 - 2.0 * cross + quad
        rel = math.sqrt(max(loss2, 0.0) / self.norm_a2)
        if not math.isfinite(rel):
            raise RuntimeError("The factorization diverged (non-finite loss); check the input scale or raise the "
                               "ridge.")
        return AGt, GtG, rel

    def record(self, it: int, rel: float) -> None:
        self.est.loss_curve_.append(rel)
        if rel < self.best_loss:
            self.best_loss, self.best_iter, self.best_ridge = rel, it, self.est._ridge
            self.best_Ft.copy_(self.Ft)
            self.best_idx.copy_(self.idx)
            self.best_vals.copy_(self.vals)

    def run(self) -> tuple[int, bool]:
        """Iterate until the patience rule or ``max_iter``; returns (iterations run, converged)."""
        est = self.est
        self.g_step(0)
        AGt, GtG, rel = self.evaluate()
        self.record(0, rel)
        ref, since, it = rel, 0, 0
        converged = False
        bar = None
        if est.verbose:  # tqdm.auto imports IPython when present (slow): only when asked for
            from tqdm.auto import tqdm

            bar = tqdm(total=est.max_iter, desc="SparseFactorization", leave=False)
        for it in range(1, est.max_iter + 1):
            self.f_step(it, AGt, GtG)
            self.g_step(it)
            AGt, GtG, rel = self.evaluate()
            self.record(it, rel)
            if bar is not None:
                bar.update(1)
                if it % 20 == 0:
                    bar.set_postfix(rel_err=f"{rel:.5f}", best=f"{self.best_loss:.5f}")
            if rel < ref * (1.0 - est.tol):
                ref, since = rel, 0
            else:
                since += 1
                if since >= est.patience:
                    converged = True
                    break
        if bar is not None:
            bar.close()
        return it, converged
