"""Exact in-context learners for linear regression prompts, and the error curve they are read with.

Every learner is numpy, vectorised over prompts, and has the same shape contract:
``xs (n, k, d)`` the k in-context inputs of each of n prompts, ``ys (n, k)`` their labels,
``x_query (n, d)`` one query per prompt; the predictor returns ``(n,)`` predictions of the
query's y. With no context (k = 0) every learner predicts 0, except ``dmmse`` (the pool mean's
prediction, which is its Bayes answer). The linear learners also have a ``*_w`` form returning
the fitted ``ŵ (n, d)``; the prediction is ``ŵ·x_query``, so ``ŵ`` is also d(prediction)/d(x_query).
Bad shapes raise ValueError. Task sources: Garg et al. 2022 (least squares, k-NN, averaging,
Lasso, error/d), von Oswald et al. 2023 (one GD step), Raventós et al. 2023 (ridge, dMMSE).
"""
import warnings

import numpy as np

_CHUNK_ELEMS = 1 << 22  # dmmse works through prompts in blocks of about this many floats


def _check(xs, ys, x_query=None):
    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    ok = xs.ndim == 3 and xs.shape[2] >= 1 and ys.shape == xs.shape[:2]
    if x_query is not None:
        x_query = np.asarray(x_query, dtype=float)
        ok = ok and x_query.shape == (xs.shape[0], xs.shape[2])
    if not ok:
        got = f"xs {xs.shape}, ys {ys.shape}" + ("" if x_query is None else f", x_query {x_query.shape}")
        raise ValueError(f"expected xs (n, k, d), ys (n, k), x_query (n, d) with d >= 1; got {got}")
    return xs, ys, x_query


def _predict(w, x_query):
    return np.einsum("nd,nd->n", w, x_query)


# -- least squares and ridge ----------------------------------------------------------------
def least_squares_w(xs, ys) -> np.ndarray:
    """Minimum-norm least squares ``ŵ = X⁺ y`` (Moore–Penrose pseudo-inverse), shape ``(n, d)``.

    For k ≥ d (and X of full rank) the ordinary least-squares solution; for k < d the
    interpolating w of least norm, which for noiseless prompts with ``w ~ N(0, I)`` is the
    posterior mean, hence Bayes-optimal (Garg et al. 2022, §3).
    """
    xs, ys, _ = _check(xs, ys)
    if xs.shape[1] == 0:
        return np.zeros((xs.shape[0], xs.shape[2]))
    rcond = max(xs.shape[1:]) * np.finfo(float).eps  # the same rank cut-off as ridge_w's
    return (np.linalg.pinv(xs, rcond=rcond) @ ys[..., None])[..., 0]


def least_squares(xs, ys, x_query) -> np.ndarray:
    """Predictions ``(n,)`` of minimum-norm least squares; see ``least_squares_w``."""
    xs, ys, x_query = _check(xs, ys, x_query)
    return _predict(least_squares_w(xs, ys), x_query)


def ridge_w(xs, ys, lam: float) -> np.ndarray:
    """Ridge regression ``ŵ = (XᵀX + λI)⁻¹ Xᵀy``, shape ``(n, d)``; computed through the SVD of X.

    With ``λ = σ²/τ²`` (noise variance over prior variance; the task draws ``τ² = 1``, so λ = σ²)
    this is the posterior mean of w under ``w ~ N(0, τ²I)``, ``y = Xw + N(0, σ²)``: the
    Bayes-optimal predictor Raventós et al. 2023 compare with. ``λ → 0`` gives
    ``least_squares_w`` (λ = 0 is exactly the pseudo-inverse). Raises ValueError for λ < 0.
    """
    xs, ys, _ = _check(xs, ys)
    if not (np.isfinite(lam) and lam >= 0):
        raise ValueError(f"lam must be finite and >= 0 (got {lam}); use the noise variance σ²")
    n, k, d = xs.shape
    if k == 0:
        return np.zeros((n, d))
    u, s, vt = np.linalg.svd(xs, full_matrices=False)
    cut = s > s[:, :1] * max(k, d) * np.finfo(float).eps  # the pseudo-inverse's rank cut-off
    filt = np.where(cut, s / np.where(cut, s * s + lam, 1.0), 0.0)
    coef = filt * np.einsum("nkr,nk->nr", u, ys)
    return np.einsum("nrd,nr->nd", vt, coef)


def ridge(xs, ys, x_query, lam: float) -> np.ndarray:
    """Predictions ``(n,)`` of ridge regression with penalty λ; see ``ridge_w``."""
    xs, ys, x_query = _check(xs, ys, x_query)
    return _predict(ridge_w(xs, ys, lam), x_query)


# -- nearest neighbours, averaging, one step of gradient descent -------------------------------
def knn(xs, ys, x_query, k: int = 3) -> np.ndarray:
    """k-nearest neighbours: the mean y of the k context points nearest x_query (Euclidean), ``(n,)``.

    With fewer than k context points, the mean of all of them; with none, 0. Ties go to the
    earlier point. Garg et al. 2022's 3-NN baseline (uniform weights). Raises ValueError for k < 1.
    """
    xs, ys, x_query = _check(xs, ys, x_query)
    if k < 1:
        raise ValueError(f"k must be >= 1 (got {k})")
    n_ctx = xs.shape[1]
    if n_ctx == 0:
        return np.zeros(xs.shape[0])
    dist2 = ((xs - x_query[:, None, :]) ** 2).sum(axis=2)
    near = np.argsort(dist2, axis=1, kind="stable")[:, : min(k, n_ctx)]
    return np.take_along_axis(ys, near, axis=1).mean(axis=1)


def averaging_w(xs, ys) -> np.ndarray:
    """``ŵ = (1/k) Σ_i y_i x_i`` (Garg et al. 2022's averaging estimator), shape ``(n, d)``; 0 for k = 0.

    Unbiased for ``x ~ N(0, I)`` but noisy: on noiseless Gaussian prompts its error/d is
    ``(d + 1)/k`` (0.6 at d = 5, k = 10), far above least squares.
    """
    xs, ys, _ = _check(xs, ys)
    return np.einsum("nk,nkd->nd", ys, xs) / max(xs.shape[1], 1)


def averaging(xs, ys, x_query) -> np.ndarray:
    """Predictions ``(n,)`` of the averaging estimator; see ``averaging_w``."""
    xs, ys, x_query = _check(xs, ys, x_query)
    return _predict(averaging_w(xs, ys), x_query)


def gd_one_step_w(xs, ys, lr: float) -> np.ndarray:
    """One gradient-descent step from ``w = 0`` on the in-context loss, shape ``(n, d)``.

    Loss ``L(w) = 1/(2k) Σ_i (w·x_i − y_i)²`` (von Oswald et al. 2023's normalisation), so
    ``ŵ = 0 − η ∇L(0) = (η/k) Σ_i y_i x_i = η · averaging_w``. The best η depends on k (for
    ``x, w ~ N(0, I)`` and noise σ it is ``k/(k + d + 1 + σ²)``): fit it per context length
    with ``fit_gd_step_size``. One linear self-attention layer can implement this map.
    """
    if not np.isfinite(lr):
        raise ValueError(f"lr must be finite (got {lr})")
    return lr * averaging_w(xs, ys)


def gd_one_step(xs, ys, x_query, lr: float) -> np.ndarray:
    """Predictions ``(n,)`` after one GD step of size ``lr`` from zero; see ``gd_one_step_w``."""
    xs, ys, x_query = _check(xs, ys, x_query)
    return _predict(gd_one_step_w(xs, ys, lr), x_query)


def fit_gd_step_size(xs, ys, x_query, y_query) -> float:
    """The step size η minimising ``Σ_prompts (gd_one_step(…, η) − y_query)²``, in closed form.

    The prediction is linear in η (``η · p`` with ``p = gd_one_step(…, lr=1)``), so this is
    1-D least squares: ``η* = Σ p·y_query / Σ p²``. Fit on training prompts that all have the
    context length you will evaluate at; ``y_query (n,)``. Returns 0.0 when every p is 0 (e.g.
    k = 0: any η is optimal). Raises ValueError on bad shapes.
    """
    xs, ys, x_query = _check(xs, ys, x_query)
    y_query = np.asarray(y_query, dtype=float)
    if y_query.shape != (xs.shape[0],):
        raise ValueError(f"expected y_query ({xs.shape[0]},); got {y_query.shape}")
    p = gd_one_step(xs, ys, x_query, lr=1.0)
    denom = float(p @ p)
    return float(p @ y_query) / denom if denom > 0 else 0.0


def gd_steps_w(xs, ys, lr: float, steps: int) -> np.ndarray:
    """``steps`` gradient-descent steps of size ``lr`` from ``w = 0`` on the in-context loss
    ``L(w) = 1/(2k) Σ_i (w·x_i − y_i)²``, shape ``(n, d)``; ``steps = 1`` is ``gd_one_step_w``.
    von Oswald et al. 2023: K layers of linear self-attention can implement K such steps.
    k = 0 gives w = 0. Raises ValueError for a non-finite ``lr`` or ``steps < 1``."""
    xs, ys, _ = _check(xs, ys)
    if not np.isfinite(lr) or steps < 1:
        raise ValueError(f"lr must be finite and steps >= 1 (got {lr}, {steps})")
    w = np.zeros((xs.shape[0], xs.shape[2]))
    k = xs.shape[1]
    if k == 0:
        return w
    for _ in range(steps):
        resid = np.einsum("nkd,nd->nk", xs, w) - ys
        w = w - lr / k * np.einsum("nk,nkd->nd", resid, xs)
    return w


def gd_steps(xs, ys, x_query, lr: float, steps: int) -> np.ndarray:
    """Predictions ``(n,)`` after ``steps`` GD steps of size ``lr``; see ``gd_steps_w``."""
    xs, ys, x_query = _check(xs, ys, x_query)
    return _predict(gd_steps_w(xs, ys, lr, steps), x_query)


def fit_gd_steps_size(xs, ys, x_query, y_query, steps: int) -> float:
    """The one step size η (shared by the ``steps`` steps) minimising the query's mean squared
    error, found numerically: a log grid over [1e-3, 4] then golden-section refinement around
    the best grid point (the K-step prediction is a degree-K polynomial in η, not linear, so
    there is no closed form for K > 1). Returns 0.0 when k = 0."""
    xs, ys, x_query = _check(xs, ys, x_query)
    if xs.shape[1] == 0:
        return 0.0
    y_query = np.asarray(y_query, dtype=float)

    def loss(log_lr):
        return float(np.mean((gd_steps(xs, ys, x_query, float(np.exp(log_lr)), steps) - y_query) ** 2))

    grid = np.linspace(np.log(1e-3), np.log(4.0), 41)
    i = int(np.argmin([loss(g) for g in grid]))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(40):
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        if loss(c) < loss(d):
            b = d
        else:
            a = c
    return float(np.exp((a + b) / 2))


# -- Lasso --------------------------------------------------------------------------------------
def lasso_w(xs, ys, alpha: float, max_steps: int = 0) -> np.ndarray:
    """Lasso ``ŵ = argmin_w 1/(2k) ‖y − Xw‖² + α‖w‖₁``, shape ``(n, d)``, solved exactly.

    The objective is scikit-learn's ``Lasso(alpha, fit_intercept=False)``, the one Garg et al.
    2022 use for sparse tasks (they report the best α on a grid). Solver: the Lasso homotopy
    (LARS with the Lasso modification; Osborne et al. 2000, Efron et al. 2004), run on all
    prompts at once: start from ŵ = 0 at ``λ = max_j |X_jᵀy|`` and follow the piecewise-linear
    solution path, adding the coordinate whose correlation reaches λ and dropping one whose
    weight crosses 0, down to ``λ = αk``; the last piece is re-solved on its support so the
    result meets the KKT conditions ``(1/k) X_jᵀ(y − Xŵ) = α·sign(ŵ_j)`` where ŵ_j ≠ 0 and
    ``|…| ≤ α`` where ŵ_j = 0 to rounding. At most ``max_steps`` path pieces (0: 20·d), then a
    RuntimeWarning. Raises ValueError for α ≤ 0.
    """
    xs, ys, _ = _check(xs, ys)
    if not (np.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be finite and > 0 (got {alpha}); for α → 0 use least_squares")
    n, k, d = xs.shape
    w = np.zeros((n, d))
    if k == 0 or n == 0:
        return w
    gram, xty = np.einsum("nkd,nke->nde", xs, xs), np.einsum("nkd,nk->nd", xs, ys)
    target = alpha * k  # the path runs in λ = αk: 1/2 ‖y − Xw‖² + λ‖w‖₁
    lam = np.abs(xty).max(axis=1)
    live = lam > target  # prompts whose solution is not 0
    act = np.zeros((n, d), dtype=bool)
    sign = np.zeros((n, d))
    first = np.abs(xty).argmax(axis=1)
    act[live, first[live]] = True
    sign[act] = np.sign(xty[act])
    rows = np.arange(n)
    for _ in range(max_steps or 20 * d):
        if not live.any():
            break
        corr = xty - np.einsum("nde,ne->nd", gram, w)
        dw = _solve_on(gram, act, sign)  # dŵ/d(−λ) on the active set
        a = np.einsum("nde,ne->nd", gram, dw)
        tiny = 1e-12 * np.maximum(lam, 1.0)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            joins = np.stack([(lam[:, None] - corr) / (1 - a), (lam[:, None] + corr) / (1 + a)])
            joins = np.where((joins > tiny) & ~act, joins, np.inf).min(axis=0)
            leaves = np.where(act & (-w / dw > tiny), -w / dw, np.inf)
        g_join, g_leave, g_end = joins.min(axis=1), leaves.min(axis=1), lam - target
        step = np.where(live, np.minimum(np.minimum(g_join, g_leave), g_end), 0.0)
        w += step[:, None] * dw
        lam = lam - step
        ending = live & (g_end <= np.minimum(g_join, g_leave))
        joining = live & ~ending & (g_join <= g_leave)
        leaving = live & ~ending & ~joining
        j = joins.argmin(axis=1)[joining]
        act[rows[joining], j] = True
        sign[rows[joining], j] = np.sign((corr - step[:, None] * a)[rows[joining], j])
        j = leaves.argmin(axis=1)[leaving]
        act[rows[leaving], j], sign[rows[leaving], j], w[rows[leaving], j] = False, 0.0, 0.0
        live &= ~ending
    else:
        if live.any():
            warnings.warn(f"lasso_w: {int(live.sum())} prompts did not reach α on the path in "
                          f"{max_steps or 20 * d} steps", RuntimeWarning)
    done = (lam <= target * (1 + 1e-12)) & act.any(axis=1)
    exact = _solve_on(gram, act, xty - target * sign)
    return np.where(done[:, None], exact, w)


def _solve_on(gram, act, rhs):
    """Solve ``gram[A, A] v_A = rhs_A`` per prompt (v = 0 off the active set A).

    A relative 1e-13 on the diagonal keeps a degenerate active set (collinear columns, which
    generic data never gives) from raising; it moves a solution by about that much.
    """
    d = gram.shape[1]
    a = np.where(act[:, :, None] & act[:, None, :], gram, 0.0) + np.eye(d) * (~act)[:, :, None]
    a += np.eye(d) * 1e-13 * np.einsum("ndd->n", gram)[:, None, None]
    return np.linalg.solve(a, np.where(act, rhs, 0.0)[..., None])[..., 0]


def lasso(xs, ys, x_query, alpha: float, max_steps: int = 0) -> np.ndarray:
    """Predictions ``(n,)`` of the Lasso with penalty α; see ``lasso_w``."""
    xs, ys, x_query = _check(xs, ys, x_query)
    return _predict(lasso_w(xs, ys, alpha, max_steps), x_query)


# -- Bayes over a discrete task pool -----------------------------------------------------------
def dmmse_w(xs, ys, pool, noise_std: float, min_noise_std: float = 1e-3) -> np.ndarray:
    """The discrete-prior posterior mean ``ŵ = Σ_m p(m | context) w_m``, shape ``(n, d)``.

    Raventós et al. 2023's dMMSE: the Bayes estimator when pretraining draws w uniformly from
    ``pool (M, d)`` and ``y = w·x + N(0, σ²)``: ``p(m | ctx) ∝ exp(−Σ_i (y_i − w_m·x_i)² / (2σ²))``.
    σ = ``max(noise_std, min_noise_std)``: a noiseless task (σ = 0) makes the exact posterior
    uniform over the pool members that fit the context exactly, which the small floor approximates
    (weights computed stably, max log-weight subtracted) without dividing by zero. With k = 0 the
    posterior is uniform and ŵ is the pool mean. Raises ValueError on a pool of the wrong width,
    an empty pool, or a negative σ.
    """
    xs, ys, _ = _check(xs, ys)
    pool = np.asarray(pool, dtype=float)
    n, k, d = xs.shape
    if pool.ndim != 2 or pool.shape[1] != d or len(pool) == 0:
        raise ValueError(f"expected pool (M, d={d}) with M >= 1; got {pool.shape}")
    if not (noise_std >= 0 and min_noise_std > 0):
        raise ValueError(f"need noise_std >= 0 and min_noise_std > 0 (got {noise_std}, {min_noise_std})")
    sigma2 = max(noise_std, min_noise_std) ** 2
    out = np.empty((n, d))
    block = max(1, _CHUNK_ELEMS // (len(pool) * max(k, 1) * d))
    for lo in range(0, n, block):
        sl = slice(lo, lo + block)
        resid = ys[sl, None, :] - np.einsum("nkd,md->nmk", xs[sl], pool)  # (b, M, k)
        logp = -(resid ** 2).sum(axis=2) / (2 * sigma2)
        p = np.exp(logp - logp.max(axis=1, keepdims=True))
        out[sl] = (p @ pool) / p.sum(axis=1, keepdims=True)
    return out


def dmmse(xs, ys, x_query, pool, noise_std: float, min_noise_std: float = 1e-3) -> np.ndarray:
    """Predictions ``(n,)`` of the Bayes estimator over a discrete task pool; see ``dmmse_w``."""
    xs, ys, x_query = _check(xs, ys, x_query)
    return _predict(dmmse_w(xs, ys, pool, noise_std, min_noise_std), x_query)


# -- the error curve ---------------------------------------------------------------------------
def curve_from_squared_errors(sq_err, d: int) -> dict:
    """``{k: {"err": mean, "ci95": [lo, hi]}}`` from squared errors ``(n_prompts, K)`` (column k = k
    in-context examples), each divided by d (Garg et al. 2022's error/d: 1 is the error of
    predicting 0 for a unit-variance w). The interval is the normal approximation over
    prompts, ``mean ± 1.96·sd/√n`` (sd with ddof = 1). Raises ValueError for fewer than 2
    prompts or a non-2-D array.
    """
    sq_err = np.asarray(sq_err, dtype=float)
    if sq_err.ndim != 2 or sq_err.shape[0] < 2 or d < 1:
        raise ValueError(f"expected squared errors (n_prompts >= 2, K) and d >= 1; got {sq_err.shape}, d={d}")
    e = sq_err / d
    mean, half = e.mean(axis=0), 1.96 * e.std(axis=0, ddof=1) / np.sqrt(len(e))
    return {k: {"err": float(mean[k]), "ci95": [float(mean[k] - half[k]), float(mean[k] + half[k])]}
            for k in range(e.shape[1])}


def error_curve(predict, xs, ys, xs_query=None, ys_query=None) -> dict:
    """The error/d of ``predict`` at each k = 0 … n_points − 1, with a 95% interval over prompts.

    At k, ``predict(xs[:, :k], ys[:, :k], xs_query[:, k])`` must return ``(n,)`` predictions of
    ``ys_query[:, k]``: point k predicted from the k points before it. ``xs (n, P, d)``,
    ``ys (n, P)``; the query arrays default to ``xs``/``ys`` (they differ only for orthant
    prompts, see ``toy_tasks.regression``). Noisy ys are the targets, so the noise variance
    over d is the floor. Returns ``curve_from_squared_errors``'s dict (int keys). Raises
    ValueError on bad shapes or a prediction that is not ``(n,)``.
    """
    xs, ys, _ = _check(xs, ys)
    xq = xs if xs_query is None else np.asarray(xs_query, dtype=float)
    yq = ys if ys_query is None else np.asarray(ys_query, dtype=float)
    if xq.shape != xs.shape or yq.shape != ys.shape:
        raise ValueError(f"xs_query/ys_query must match xs {xs.shape}/ys {ys.shape}; got {xq.shape}, {yq.shape}")
    n, n_points, d = xs.shape
    sq = np.empty((n, n_points))
    for k in range(n_points):
        pred = np.asarray(predict(xs[:, :k], ys[:, :k], xq[:, k]), dtype=float)
        if pred.shape != (n,):
            raise ValueError(f"predict must return ({n},) predictions; got {pred.shape} at k={k}")
        sq[:, k] = (pred - yq[:, k]) ** 2
    return curve_from_squared_errors(sq, d)
