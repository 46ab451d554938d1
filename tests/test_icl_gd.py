"""icl_gd's measurement: a hand-built linear self-attention layer that IS one GD step scores
pred_rel_diff 0 and sensitivity cosine 1 (von Oswald et al. 2023's construction)."""
import dataclasses
import math

import numpy as np
import pytest
import torch

from minitf import baselines
from minitf.experiments.regression.icl_gd import ICLGDExperiment, concat_tokens, gd_equivalence, to_batch
from minitf.model import Transformer


def gd_layer(d: int, k: int, lr: float) -> Transformer:
    exp = ICLGDExperiment()
    cfg = dataclasses.replace(exp.default_model(exp.default_task()), d_model=d + 1, n_heads=1, d_head=d + 1)
    model = Transformer(cfg)
    n = d + 1
    px, py = torch.diag(torch.tensor([1.0] * d + [0.0])), torch.diag(torch.tensor([0.0] * d + [1.0]))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.read_in.weight.copy_(torch.eye(n))
        model.blocks[0].attn.qkv.weight.copy_(torch.cat([math.sqrt(n) * px, px, py]))  # q·k/√n = x_q·x_j
        model.blocks[0].attn.out.weight.copy_(torch.eye(n))
        model.read_out.weight[0, -1] = lr / k  # pred = (η/k) Σ_j y_j x_j·x_q
    return model


def test_hand_built_gd_layer_is_gd():
    d, k, lr = 10, 10, 0.5
    batch = ICLGDExperiment().default_task().sample(np.random.default_rng(0), 200)
    out = gd_equivalence(gd_layer(d, k, lr).eval(), batch, lr)
    assert out["pred_rel_diff"] < 1e-5 and out["sensitivity_cosine"] > 0.99999
    want = baselines.gd_one_step(batch["xs"][:, :k], batch["ys"][:, :k], batch["xs"][:, k], lr)
    got = gd_layer(d, k, lr)(concat_tokens(batch["xs"], batch["ys"]))[:, -1, 0]
    np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-4, atol=1e-4)


def test_concat_layout_hides_the_query_label():
    b = ICLGDExperiment().default_task().sample(np.random.default_rng(1), 3)
    batch = to_batch(b["xs"], b["ys"])
    assert batch.inputs.shape == (3, 11, 11) and bool((batch.inputs[:, -1, -1] == 0).all())
    torch.testing.assert_close(batch.inputs[:, :-1, -1], torch.from_numpy(b["ys"][:, :-1]).float())
    assert batch.mask.sum() == 3 and batch.mask[:, -1].eq(1).all()
    torch.testing.assert_close(batch.targets[:, -1], torch.from_numpy(b["ys"][:, -1]).float())
    assert pytest.approx(0.0) == float(batch.targets[:, :-1].abs().sum())


def test_depth_sweep_settings():
    from minitf.config import apply_overrides
    from minitf.experiments.regression.icl_gd import ICLGDSettings, spd

    def settings(text):  # the way --set depth_sweep=TEXT reaches the experiment
        return apply_overrides([ICLGDSettings()], [f"depth_sweep={text}"])[0].validate()

    assert settings("1, 2,4").depths() == [1, 2, 4]
    assert ICLGDSettings().depths() == [] and settings("").depths() == []
    for bad in ("1,x", "0,1", "2,2"):
        with pytest.raises(ValueError, match="depth_sweep"):
            settings(bad)
    assert spd(np.array([1.0, 3.0]), np.array([0.0, 0.0]), d=5) == pytest.approx(1.0)


def test_k_step_gd_and_its_fitted_step_size():
    """K GD steps from zero: one step equals gd_one_step; many steps with a small enough step
    converge to least squares (k > d); the numerical fit recovers the closed-form one-step η."""
    from toy_tasks.regression import RegressionTask

    b = RegressionTask(d=5, n_points=11).sample(np.random.default_rng(0), 3000)
    xs, ys, xq, yq = b["xs"][:, :8], b["ys"][:, :8], b["xs_query"][:, 8], b["ys_query"][:, 8]
    np.testing.assert_allclose(baselines.gd_steps(xs, ys, xq, 0.3, 1), baselines.gd_one_step(xs, ys, xq, 0.3))
    many = baselines.gd_steps(xs[:50], ys[:50], xq[:50], 0.2, 20000)
    np.testing.assert_allclose(many, baselines.least_squares(xs[:50], ys[:50], xq[:50]), atol=1e-2)
    closed = baselines.fit_gd_step_size(xs, ys, xq, yq)
    assert baselines.fit_gd_steps_size(xs, ys, xq, yq, 1) == pytest.approx(closed, rel=1e-3)
    errs = [np.mean((baselines.gd_steps(xs, ys, xq, baselines.fit_gd_steps_size(xs, ys, xq, yq, K), K) - yq) ** 2)
            for K in (1, 2, 3)]
    assert errs[0] > errs[1] > errs[2]  # each fitted extra step helps at k > d
    assert baselines.fit_gd_steps_size(xs[:, :0], ys[:, :0], xq, yq, 2) == 0.0
    with pytest.raises(ValueError, match="steps"):
        baselines.gd_steps(xs, ys, xq, 0.1, 0)


def test_the_guard_refuses_nearer_to_on_the_averaging_plateau(tmp_path):
    """A depth-sweep model trained a few steps sits on (or above) the averaging plateau: the
    guard fails and ``nearer_to`` is not read (today's depth sweep read "nearer to GD" there)."""
    from minitf import runs

    report = runs.run("icl_gd", out=str(tmp_path / "run"), quiet=True, overrides=[
        "steps=20", "eval_every=0", "checkpoint_every=0", "eval_prompts=300", "depth_sweep=1",
        "depth_steps=20", "depth_d=3", "depth_gd_steps=1,2", "lsa_stack=1,2", "lsa_steps=10"])
    r = report["depth_sweep"]["1"] if "1" in report["depth_sweep"] else report["depth_sweep"][1]
    assert r["guard"]["pass"] is False and r["nearer_to"] is None and r["nearer_to_by_k"] is None
    assert set(r["spd_by_k"]) == {"gd_1", "gd_2", "least_squares"} and len(r["err_by_k"]) == 7
    assert report["targets"]["pass"]["guard_every_depth"] is False
    stack = report["lsa_stack"]
    assert set(map(int, stack)) == {1, 2} and all(v["pred_rel_diff"] >= 0 for v in stack.values())
    import minitf  # every phase loads with the architecture it trained; the default is the main layer

    assert minitf.models(tmp_path / "run")["default"] == "train"
    shapes = {name: (m.cfg.n_layers, m.cfg.d_model) for name in ("train", "lsa2", "depth1")
              for m in [minitf.load(tmp_path / "run", model=name)[0]]}
    assert shapes == {"train": (1, 32), "lsa2": (2, 32), "depth1": (1, 64)}
