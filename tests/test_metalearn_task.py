"""toy_tasks.metalearn: every family's labels follow its stated rule (checked independently,
point by point), seeds reproduce, shifts scale only what they say, bad input raises."""
import numpy as np
import pytest

from toy_tasks.metalearn import FAMILIES, MetaLearnTask, pairwise_normal, tokens


def draw(family, seed=0, n=40, task=None, **kw):
    return (task or MetaLearnTask()).sample(np.random.default_rng(seed), n, family, **kw)


def points(b):
    return np.concatenate([b["xs"], b["xq"][:, None]], axis=1), np.concatenate([b["ys"], b["yq"][:, None]], axis=1)


def test_shapes_and_both_labels():
    task = MetaLearnTask(d=3, n_support=7)
    for fam in FAMILIES + ("unknown", "mixture"):
        b = draw(fam, task=task, n=200)
        assert b["xs"].shape == (200, 7, 3) and b["ys"].shape == (200, 7)
        assert b["xq"].shape == (200, 3) and b["yq"].shape == (200,) and b["ys"].dtype == np.int64
        assert 0.35 < b["ys"].mean() < 0.65, fam  # roughly balanced classes
    assert draw("prototype", n=0)["xs"].shape == (0, 30, 2)


def test_pairwise_label_is_the_class_with_the_larger_cosine_sum_or_max():
    for rule in ("sum", "max"):
        task = MetaLearnTask(d=3, pairwise_rule=rule)
        b = draw("pairwise", task=task, n=10)
        x, y = points(b)
        for i in range(10):
            for j in range(x.shape[1]):
                cos = [[p @ x[i, j] / (np.linalg.norm(p) * np.linalg.norm(x[i, j])) for p in b["protos"][i, c]]
                       for c in (0, 1)]
                score = [sum(c) if rule == "sum" else max(c) for c in cos]
                assert y[i, j] == int(score[1] > score[0])
    b = draw("pairwise", task=MetaLearnTask(d=5), n=50)
    x, y = points(b)
    np.testing.assert_array_equal(y, (np.einsum("nmd,nd->nm", x, pairwise_normal(b["protos"])) > 0).astype(int))


def test_prototype_label_is_the_nearest_centre():
    b = draw("prototype", n=10)
    x, y = points(b)
    for i in range(10):
        for j in range(x.shape[1]):
            dist = [np.linalg.norm(x[i, j] - c) for c in b["centres"][i]]
            assert y[i, j] == int(np.argmin(dist))
    spread = (x - b["centres"].mean(1, keepdims=True))  # points sit around one centre or the other
    assert np.abs(spread).max() < 10


def test_amortization_and_unknown_rules():
    b = draw("amortization", n=10, task=MetaLearnTask(d=4, point_std=0.5))
    x, y = points(b)
    np.testing.assert_array_equal(y, ((x - b["w"][:, None]).sum(-1) > 0).astype(int))
    assert 0.4 < (x - b["w"][:, None]).std() < 0.6  # σ = point_std
    b = draw("unknown", n=10)
    x, y = points(b)
    np.testing.assert_array_equal(y, (np.linalg.norm(x, axis=-1) > b["radius"][:, None]).astype(int))


def test_seeds_reproduce_and_differ():
    for fam in FAMILIES + ("unknown", "mixture"):
        a, b, c = draw(fam, seed=3), draw(fam, seed=3), draw(fam, seed=4)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
        assert not np.array_equal(a["xs"], c["xs"])


def test_mixture_draws_every_family_with_its_own_rule():
    b = draw("mixture", n=300)
    assert set(b["family"]) == {0, 1, 2}
    rows = b["family"] == 2  # amortization rows follow the amortization rule
    np.testing.assert_array_equal(b["ys"][rows], ((b["xs"][rows] - b["w"][rows][:, None]).sum(-1) > 0).astype(int))


def test_shift_scales_the_spread_of_the_chosen_inputs_only():
    task = MetaLearnTask(shift_scale=3.0)
    base, shifted = draw("amortization", n=500), draw("amortization", n=500, task=task, shift=True)
    np.testing.assert_array_equal(base["w"], shifted["w"])  # same task parameters
    np.testing.assert_allclose(shifted["xs"] - shifted["w"][:, None], 3.0 * (base["xs"] - base["w"][:, None]))
    q = draw("prototype", n=500, task=MetaLearnTask(shift_on="query", shift_scale=3.0), shift=True)
    p = draw("prototype", n=500)
    np.testing.assert_array_equal(q["xs"], p["xs"])
    assert not np.array_equal(q["xq"], p["xq"])
    s = draw("pairwise", n=50, task=task, shift=True)
    np.testing.assert_allclose(s["xs"], 3.0 * draw("pairwise", n=50)["xs"])


def test_tokens_layout():
    b = draw("prototype", n=4)
    t = tokens(b["xs"][:, :3], b["ys"][:, :3], b["xq"])
    assert t.shape == (4, 4, 4)
    np.testing.assert_array_equal(t[:, :3, 2] + t[:, :3, 3], 1.0)  # one-hot labels
    np.testing.assert_array_equal(t[:, :3, 3], b["ys"][:, :3])
    np.testing.assert_array_equal(t[:, 3, 2:], 0.0)  # the query carries no label
    np.testing.assert_array_equal(t[:, 3, :2], b["xq"])
    assert tokens(b["xs"][:, :0], b["ys"][:, :0], b["xq"]).shape == (4, 1, 4)


@pytest.mark.parametrize("kw, msg", [(dict(d=0), "d must"), (dict(n_support=0), "n_support"),
                                     (dict(n_protos=0), "n_protos"), (dict(pairwise_rule="mean"), "pairwise_rule"),
                                     (dict(point_std=0.0), "point_std"), (dict(shift_scale=float("nan")), "shift_scale"),
                                     (dict(shift_on="all"), "shift_on")])
def test_bad_config_names_the_field(kw, msg):
    with pytest.raises(ValueError, match=msg):
        MetaLearnTask(**kw).validate()


def test_bad_sample_arguments():
    task = MetaLearnTask()
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="family must be"):
        task.sample(rng, 4, "halfspace")
    with pytest.raises(ValueError, match="n must"):
        task.sample(rng, -1, "prototype")
    for fam in ("unknown", "mixture"):
        with pytest.raises(ValueError, match="shift"):
            task.sample(rng, 4, fam, shift=True)
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        tokens(np.zeros((1, 2, 2)), np.array([[0, 2]]), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="need xs"):
        tokens(np.zeros((1, 2, 2)), np.zeros((1, 3)), np.zeros((1, 2)))
