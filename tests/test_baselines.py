import ast
import pathlib
import warnings

import numpy as np
import pytest

from minitf import baselines as B
from toy_tasks.regression import RegressionTask

D = 5


@pytest.fixture(scope="module")
def prompts():
    """3000 noiseless d=5 prompts of 11 points, w ~ N(0, I)."""
    return RegressionTask(d=D).sample(np.random.default_rng(0), 3000)


def within(curve, k, value, sds=4.0):
    """The mean at k is within `sds` standard errors of `value` (the 95% half-width is 1.96 se)."""
    lo, hi = curve[k]["ci95"]
    return abs(curve[k]["err"] - value) <= sds * (hi - lo) / (2 * 1.96) + 1e-12


def test_least_squares_is_exact_from_d_points_and_min_norm_before(prompts):
    curve = B.error_curve(B.least_squares, prompts["xs"], prompts["ys"])
    assert sorted(curve) == list(range(11))
    for k in range(D, 11):
        assert curve[k]["err"] < 1e-20
    for k in range(D):  # Bayes-optimal min-norm: E err/d = (d − k)/d
        assert within(curve, k, (D - k) / D), (k, curve[k])


def test_least_squares_ignores_inactive_coordinates():
    b = RegressionTask(d=D).sample(np.random.default_rng(1), 200, active_dims=2)
    for k in (1, 2, 6):
        w = B.least_squares_w(b["xs"][:, :k], b["ys"][:, :k])
        assert np.abs(w[:, 2:]).max() < 1e-12
    np.testing.assert_allclose(B.least_squares_w(b["xs"][:, :2], b["ys"][:, :2])[:, :2], b["ws"][:, :2], atol=1e-8)


def test_ridge_tends_to_least_squares_and_beats_it_under_noise(prompts):
    for k in (2, 5, 9):
        xs, ys = prompts["xs"][:200, :k], prompts["ys"][:200, :k]
        ls = B.least_squares_w(xs, ys)
        np.testing.assert_allclose(B.ridge_w(xs, ys, 0.0), ls, atol=1e-9)
        gap = [np.abs(B.ridge_w(xs, ys, lam) - ls).max() for lam in (1e-1, 1e-3, 1e-5, 1e-7, 1e-12)]
        assert all(a > b for a, b in zip(gap, gap[1:])) and gap[-1] < 1e-6, gap  # O(λ/s_min²)
    # the closed form (XᵀX + λI)⁻¹Xᵀy on one prompt
    x, y = prompts["xs"][0, :3], prompts["ys"][0, :3]
    np.testing.assert_allclose(B.ridge_w(x[None], y[None], 0.7)[0], np.linalg.solve(x.T @ x + 0.7 * np.eye(D), x.T @ y))
    noisy = RegressionTask(d=D, noise_std=0.5).sample(np.random.default_rng(2), 2000)
    ridge = B.error_curve(lambda a, b, q: B.ridge(a, b, q, 0.25), noisy["xs"], noisy["ys"])
    ls = B.error_curve(B.least_squares, noisy["xs"], noisy["ys"])
    assert ridge[D]["err"] < 0.5 * ls[D]["err"]  # least squares blows up at k = d (σ² d/(k−d−1))
    assert all(ridge[k]["err"] <= ls[k]["err"] + 1e-9 for k in range(11))
    with pytest.raises(ValueError, match="lam"):
        B.ridge_w(x[None], y[None], -1.0)


def test_averaging_is_far_from_solved_at_2d(prompts):
    curve = B.error_curve(B.averaging, prompts["xs"], prompts["ys"])
    assert curve[0]["err"] == pytest.approx(np.mean(prompts["ys"][:, 0] ** 2) / D)  # k = 0 predicts 0
    assert curve[2 * D]["err"] >= 0.5 and within(curve, 2 * D, (D + 1) / (2 * D))  # (d+1)/k


def test_gd_one_step_closed_form_and_fitted_step():
    # one prompt, d = 1: x = 2, y = 4 (w = 2), query x = 3, y = 6. Prediction(η) = η·(4·2)·3 = 24η.
    xs, ys, xq, yq = np.array([[[2.0]]]), np.array([[4.0]]), np.array([[3.0]]), np.array([6.0])
    assert B.gd_one_step(xs, ys, xq, lr=1.0)[0] == 24.0
    eta = B.fit_gd_step_size(xs, ys, xq, yq)
    assert eta == pytest.approx(0.25) and B.gd_one_step(xs, ys, xq, eta)[0] == pytest.approx(6.0)
    # two prompts, d = 2, k = 2: ŵ(η) = (η/2) Σ y_i x_i
    xs = np.array([[[1.0, 0.0], [0.0, 2.0]], [[1.0, 1.0], [1.0, -1.0]]])
    ys = np.array([[1.0, 2.0], [3.0, 1.0]])
    xq, yq = np.array([[1.0, 1.0], [2.0, 0.0]]), np.array([3.0, 4.0])
    np.testing.assert_allclose(B.gd_one_step_w(xs, ys, 0.5), [[0.25, 1.0], [1.0, 0.5]])
    p = np.array([1 * 0.5 + 4 * 0.5, 2 * 4 * 0.5])  # predictions at η = 1: [2.5, 4]
    np.testing.assert_allclose(B.gd_one_step(xs, ys, xq, 1.0), p)
    assert B.fit_gd_step_size(xs, ys, xq, yq) == pytest.approx((p @ yq) / (p @ p))
    assert B.fit_gd_step_size(xs[:, :0], ys[:, :0], xq, yq) == 0.0  # k = 0: nothing to fit


def test_fitted_gd_step_matches_the_gaussian_theory(prompts):
    k = 2 * D
    eta = B.fit_gd_step_size(prompts["xs"][:, :k], prompts["ys"][:, :k], prompts["xs"][:, k], prompts["ys"][:, k])
    assert eta == pytest.approx(k / (k + D + 1), abs=0.05)  # E[p y]/E[p²] for x, w ~ N(0, I)
    np.testing.assert_allclose(B.gd_one_step_w(prompts["xs"][:5, :k], prompts["ys"][:5, :k], eta),
                               eta * B.averaging_w(prompts["xs"][:5, :k], prompts["ys"][:5, :k]))


def test_knn_uses_neighbours_duplicates_and_all_points_when_few():
    x0, far = np.array([1.0, -1.0]), np.array([9.0, 9.0])
    xs = np.stack([x0, far, x0, far + 1, x0])[None]
    ys = np.array([[7.0, 100.0, 7.0, -100.0, 7.0]])
    assert B.knn(xs, ys, x0[None])[0] == 7.0  # three copies of the query point, all y = 7
    assert B.knn(xs, ys, x0[None], k=4)[0] == pytest.approx((21 + 100) / 4)
    assert B.knn(xs[:, :2], ys[:, :2], x0[None])[0] == pytest.approx(53.5)  # fewer than 3: all of them
    assert B.knn(xs[:, :0], ys[:, :0], x0[None])[0] == 0.0
    with pytest.raises(ValueError, match="k must"):
        B.knn(xs, ys, x0[None], k=0)


def test_dmmse_identifies_the_pool_member():
    task = RegressionTask(d=D, n_tasks=16)
    pool, b = task.task_pool(), task.sample(np.random.default_rng(3), 400)
    member = np.array([np.flatnonzero((pool == w).all(axis=1))[0] for w in b["ws"]])
    for k in (2, 5, 10):  # noiseless: even 2 points pin one of 16 vectors down
        w = B.dmmse_w(b["xs"][:, :k], b["ys"][:, :k], pool, noise_std=0.0)
        np.testing.assert_allclose(w, pool[member], atol=1e-8)
    np.testing.assert_allclose(B.dmmse_w(b["xs"][:, :0], b["ys"][:, :0], pool, 0.0), np.tile(pool.mean(0), (400, 1)))
    curve = B.error_curve(lambda a, c, q: B.dmmse(a, c, q, pool, 0.0), b["xs"], b["ys"])
    assert max(curve[k]["err"] for k in range(2, 11)) < 1e-12


def test_dmmse_posterior_formula_and_blocking(monkeypatch):
    rng = np.random.default_rng(4)
    pool, xs, ys = rng.standard_normal((6, 3)), rng.standard_normal((5, 4, 3)), rng.standard_normal((5, 4))
    sse = ((ys[:, None, :] - np.einsum("nkd,md->nmk", xs, pool)) ** 2).sum(axis=2)
    post = np.exp(-sse / (2 * 0.8 ** 2))
    expected = (post / post.sum(axis=1, keepdims=True)) @ pool
    np.testing.assert_allclose(B.dmmse_w(xs, ys, pool, 0.8), expected, rtol=1e-10)
    monkeypatch.setattr(B, "_CHUNK_ELEMS", 1)  # one prompt per block
    np.testing.assert_allclose(B.dmmse_w(xs, ys, pool, 0.8), expected, rtol=1e-10)
    with pytest.raises(ValueError, match="pool"):
        B.dmmse_w(xs, ys, pool[:, :2], 0.8)


def lasso_kkt_violation(xs, ys, w, alpha):
    k = xs.shape[1]
    grad = np.einsum("nkd,nk->nd", xs, ys - np.einsum("nkd,nd->nk", xs, w)) / k
    return np.where(w != 0, np.abs(grad - alpha * np.sign(w)), np.maximum(np.abs(grad) - alpha, 0)).max()


def test_lasso_is_exact_and_recovers_sparse_vectors():
    b = RegressionTask(d=10, sparsity=2).sample(np.random.default_rng(5), 300)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for k in (1, 4, 7, 15):
            for alpha in (1.0, 1e-2, 1e-4):
                w = B.lasso_w(b["xs"][:, :k], b["ys"][:, :k], alpha)
                assert lasso_kkt_violation(b["xs"][:, :k], b["ys"][:, :k], w, alpha) < 1e-9, (k, alpha)
    k = 8  # fewer points than d = 10: least squares cannot, ℓ1 can (2-sparse)
    lasso = B.lasso(b["xs"][:, :k], b["ys"][:, :k], b["xs"][:, k], alpha=1e-4)
    ls = B.least_squares(b["xs"][:, :k], b["ys"][:, :k], b["xs"][:, k])
    err = lambda p: np.mean((p - b["ys"][:, k]) ** 2)  # noqa: E731
    assert err(lasso) < 0.1 * err(ls)
    big = B.lasso_w(b["xs"][:, :5], b["ys"][:, :5], alpha=1e6)
    assert (big == 0).all()  # α above max|Xᵀy|/k: the zero vector
    with pytest.raises(ValueError, match="alpha"):
        B.lasso_w(b["xs"], b["ys"], 0.0)


def test_lasso_agrees_with_scikit_learn():
    linear_model = pytest.importorskip("sklearn.linear_model")
    b = RegressionTask(d=6, sparsity=3).sample(np.random.default_rng(6), 20)
    ours = B.lasso_w(b["xs"][:, :9], b["ys"][:, :9], 0.05)
    for i in range(20):
        ref = linear_model.Lasso(alpha=0.05, fit_intercept=False, tol=1e-12, max_iter=100000)
        np.testing.assert_allclose(ours[i], ref.fit(b["xs"][i, :9], b["ys"][i, :9]).coef_, atol=1e-6)


def test_every_learner_predicts_zero_without_context(prompts):
    xs, ys, xq = prompts["xs"][:4, :0], prompts["ys"][:4, :0], prompts["xs"][:4, 0]
    for f in (B.least_squares, B.averaging, B.knn, lambda *a: B.ridge(*a, 0.1),
              lambda *a: B.gd_one_step(*a, 0.5), lambda *a: B.lasso(*a, 0.1)):
        np.testing.assert_array_equal(f(xs, ys, xq), np.zeros(4))


def test_error_curve_interval_and_query_arrays():
    xs = np.zeros((4, 2, 3))
    ys = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 0.0]])
    curve = B.error_curve(lambda a, b, q: np.zeros(len(q)), xs, ys)
    e = ys[:, 0] ** 2 / 3
    half = 1.96 * e.std(ddof=1) / 2
    assert curve[0]["err"] == pytest.approx(e.mean())
    assert curve[0]["ci95"] == pytest.approx([e.mean() - half, e.mean() + half])
    assert curve[1] == {"err": 0.0, "ci95": [0.0, 0.0]}
    other = B.error_curve(lambda a, b, q: np.zeros(len(q)), xs, ys, xs, ys + 1)
    assert other[1]["err"] == pytest.approx(1 / 3)  # targets come from ys_query


def test_bad_shapes_raise_one_clear_error(prompts):
    xs, ys, xq = prompts["xs"][:4, :3], prompts["ys"][:4, :3], prompts["xs"][:4, 3]
    bad = [(xs[0], ys, xq), (xs, ys[:, :2], xq), (xs, ys, xq[:, :2]), (xs, ys, xq[:3]), (xs, ys[:3], xq)]
    for f in (B.least_squares, B.averaging, B.knn, lambda *a: B.ridge(*a, 0.1), lambda *a: B.lasso(*a, 0.1),
              lambda *a: B.gd_one_step(*a, 0.1), lambda *a: B.dmmse(*a, np.ones((2, D)), 0.1)):
        for args in bad:
            with pytest.raises(ValueError, match=r"expected xs \(n, k, d\)"):
                f(*args)
    with pytest.raises(ValueError, match="predict must return"):
        B.error_curve(lambda a, b, q: np.zeros((len(q), 1)), xs, ys)
    with pytest.raises(ValueError, match="n_prompts >= 2"):
        B.curve_from_squared_errors(np.ones((1, 3)), D)
    with pytest.raises(ValueError, match="y_query"):
        B.fit_gd_step_size(xs, ys, xq, np.ones(3))


def test_baselines_import_nothing_from_the_experiments():
    tree = ast.parse(pathlib.Path(B.__file__).read_text())
    mods = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    mods += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not any(m.startswith(("minitf", "torch")) for m in mods), mods
