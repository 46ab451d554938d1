"""icl_gd's measurement: a hand-built linear self-attention layer that IS one GD step scores
pred_rel_diff 0 and sensitivity cosine 1 (von Oswald et al. 2023's construction)."""
import dataclasses
import math

import numpy as np
import pytest
import torch

from minitf import baselines
from minitf.experiments.icl_gd import ICLGDExperiment, concat_tokens, gd_equivalence, to_batch
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
    from minitf.experiments.icl_gd import ICLGDSettings, spd

    assert ICLGDSettings(depth_sweep="1, 2,4").validate().depths() == [1, 2, 4]
    assert ICLGDSettings().depths() == []
    for bad in ("1,x", "0,1", "2,2"):
        with pytest.raises(ValueError, match="depth_sweep"):
            ICLGDSettings(depth_sweep=bad).validate()
    assert spd(np.array([1.0, 3.0]), np.array([0.0, 0.0]), d=5) == pytest.approx(1.0)
