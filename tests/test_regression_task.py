import ast
import pathlib

import numpy as np
import pytest

from toy_tasks.regression import (RegressionTask, interleave, prediction_positions,
                                  prompt_for_query)


def draw(task=None, seed=0, n=64, **kw):
    return (task or RegressionTask()).sample(np.random.default_rng(seed), n, **kw)


def test_shapes_defaults_and_noiseless_labels():
    task = RegressionTask()
    assert task.prompt_len == 11 and task.seq_len == 21  # 2d+1 points at d=5
    assert RegressionTask(d=10).prompt_len == 21 and RegressionTask(n_points=4).prompt_len == 4
    b = draw(task, n=7)
    assert b["xs"].shape == b["xs_query"].shape == (7, 11, 5)
    assert b["ys"].shape == b["ys_query"].shape == (7, 11) and b["ws"].shape == (7, 5)
    np.testing.assert_allclose(b["ys"], np.einsum("npd,nd->np", b["xs"], b["ws"]))
    np.testing.assert_array_equal(b["xs"], b["xs_query"])
    assert draw(task, n=0)["xs"].shape == (0, 11, 5)


def test_same_seed_same_prompts_other_seed_other_prompts():
    for task in (RegressionTask(), RegressionTask(n_tasks=8, sparsity=2), RegressionTask(x_distribution="orthant")):
        a, b, c = draw(task, 3), draw(task, 3), draw(task, 4)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
        assert not np.array_equal(a["xs"], c["xs"])


def test_noise_adds_to_the_same_draws():
    clean, noisy = draw(RegressionTask()), draw(RegressionTask(noise_std=0.5))
    np.testing.assert_array_equal(clean["xs"], noisy["xs"])
    resid = noisy["ys"] - clean["ys"]
    assert 0.4 < resid.std() < 0.6 and np.array_equal(resid, noisy["ys_query"] - clean["ys_query"])


def test_pool_is_fixed_by_pool_seed_and_reused():
    task = RegressionTask(n_tasks=4)
    pool = task.task_pool()
    assert pool.shape == (4, 5) and not pool.flags.writeable
    np.testing.assert_array_equal(pool, RegressionTask(n_tasks=4).task_pool())
    assert not np.array_equal(pool, RegressionTask(n_tasks=4, pool_seed=1).task_pool())
    ws = np.concatenate([draw(task, seed=s, n=50)["ws"] for s in range(3)])  # three prompt seeds
    rows = {tuple(w) for w in ws}
    assert rows == {tuple(w) for w in pool}  # only pool members, and all four get used
    with pytest.raises(ValueError, match="no pool"):
        RegressionTask().task_pool()


def test_sparsity_counts():
    for s in (1, 3, 5):
        ws = draw(RegressionTask(sparsity=s), n=200)["ws"]
        assert ((ws != 0).sum(axis=1) == s).all()
        assert ((ws != 0).sum(axis=0) > 0).all()  # the support varies across prompts
    pool = RegressionTask(sparsity=2, n_tasks=30).task_pool()
    assert ((pool != 0).sum(axis=1) == 2).all()
    assert ((draw(n=20)["ws"] != 0).sum(axis=1) == 5).all()  # dense by default


def test_active_dims_zeroes_the_trailing_coordinates():
    for dist in ("gaussian", "orthant", "skewed"):
        b = draw(RegressionTask(x_distribution=dist), active_dims=2)
        assert (b["xs"][..., 2:] == 0).all() and (b["xs_query"][..., 2:] == 0).all()
        assert (b["xs"][..., :2] != 0).all()
        np.testing.assert_allclose(b["ys"], np.einsum("npd,nd->np", b["xs"][..., :2], b["ws"][:, :2]))
    full = draw(active_dims=5)
    np.testing.assert_array_equal(full["xs"], draw()["xs"])
    for bad in (0, 6):
        with pytest.raises(ValueError, match="active_dims"):
            draw(active_dims=bad)


def test_scaled_inputs_are_the_gaussian_draws_times_the_factor():
    base, scaled = draw(), draw(RegressionTask(x_distribution="scaled", x_scale=3.0))
    np.testing.assert_allclose(scaled["xs"], 3.0 * base["xs"])
    np.testing.assert_allclose(scaled["ys"], 3.0 * base["ys"])
    np.testing.assert_array_equal(scaled["ws"], base["ws"])


def test_skewed_covariance_has_the_stated_spectrum():
    task = RegressionTask(x_distribution="skewed")
    cov = task.skew_covariance()
    eig = np.sort(np.linalg.eigvalsh(cov))[::-1]
    np.testing.assert_allclose(eig, 5 * (1 / np.arange(1, 6) ** 2) / (1 / np.arange(1, 6) ** 2).sum())
    assert np.isclose(np.trace(cov), 5.0)
    assert not np.allclose(cov, np.diag(np.diag(cov)))  # a rotated basis, not the axes
    xs = draw(task, n=4000)["xs"].reshape(-1, 5)
    np.testing.assert_allclose(xs.T @ xs / len(xs), cov, atol=0.05)
    flat = RegressionTask(x_distribution="skewed", skew_power=0.0).skew_covariance()
    np.testing.assert_allclose(flat, np.eye(5), atol=1e-12)


def test_orthant_context_shares_one_orthant_and_query_leaves_it():
    garg = draw(RegressionTask(x_distribution="orthant"), n=400)
    signs = np.sign(garg["xs"])
    assert (signs == signs[:, :1]).all()  # every context x of a prompt in one orthant
    assert len({tuple(s) for s in signs[:, 0]}) > 20  # the orthant is random per prompt
    np.testing.assert_allclose(np.abs(garg["xs_query"]), np.abs(garg["xs"]))
    same = (np.sign(garg["xs_query"]) == signs).all(axis=2).mean()
    assert same < 0.1  # Garg's query is a plain N(0, I) draw: in the context orthant w.p. 2^-5
    np.testing.assert_allclose(garg["ys_query"], np.einsum("npd,nd->np", garg["xs_query"], garg["ws"]))
    opp = draw(RegressionTask(x_distribution="orthant", orthant_query="opposite"))
    np.testing.assert_array_equal(np.sign(opp["xs_query"]), -np.sign(opp["xs"]))


def test_prompt_for_query_mixes_context_and_query_versions():
    b = draw(RegressionTask(x_distribution="orthant"), n=3)
    xs, ys = prompt_for_query(b, 4)
    np.testing.assert_array_equal(xs[:, :4], b["xs"][:, :4])
    np.testing.assert_array_equal(xs[:, 4:], b["xs_query"][:, 4:])
    np.testing.assert_array_equal(ys[:, 4], b["ys_query"][:, 4])
    with pytest.raises(ValueError):
        prompt_for_query(b, 11)


def test_interleave_layout_and_prediction_positions():
    xs = np.arange(2 * 3 * 2, dtype=float).reshape(2, 3, 2) + 1
    ys = -np.arange(6, dtype=float).reshape(2, 3) - 1
    tok = interleave(xs, ys)
    assert tok.shape == (2, 5, 3)
    pos = prediction_positions(3)
    np.testing.assert_array_equal(pos, [0, 2, 4])
    np.testing.assert_array_equal(tok[:, pos, :2], xs)  # x tokens (x, 0)
    assert (tok[:, pos, 2] == 0).all()
    np.testing.assert_array_equal(tok[:, 1::2, 2], ys[:, :2])  # y tokens (0, 0, y); the last y left out
    assert (tok[:, 1::2, :2] == 0).all()
    with pytest.raises(ValueError, match="xs"):
        interleave(xs, ys[:, :2])


@pytest.mark.parametrize("kwargs, match", [
    (dict(d=0), "d must"), (dict(n_points=-1), "n_points"), (dict(noise_std=-0.1), "noise_std"),
    (dict(sparsity=6), "sparsity"), (dict(n_tasks=-1), "n_tasks"), (dict(x_distribution="cauchy"), "x_distribution"),
    (dict(x_distribution="scaled", x_scale=0.0), "x_scale"), (dict(x_scale=2.0), "x_distribution='scaled'"),
    (dict(skew_power=1.0), "x_distribution='skewed'"), (dict(orthant_query="opposite"), "x_distribution='orthant'"),
    (dict(x_distribution="orthant", orthant_query="same"), "orthant_query"),
    (dict(x_distribution="skewed", skew_power=-1.0), "skew_power"),
])
def test_validate_names_the_bad_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RegressionTask(**kwargs).validate()


def test_toy_tasks_never_import_torch_or_minitf():
    for path in pathlib.Path(__file__).resolve().parents[1].joinpath("toy_tasks").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] in ("torch", "minitf") for n in names), path
