"""Vector models (linear read-in / scalar read-out), linear attention, squared-error loss, and the
regression experiment's plumbing; the slow test trains a tiny in-context regressor."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minitf.attention import attention, linear_attention
from minitf.config import ModelConfig, TrainConfig
from minitf.data import Batch, Vocab
from minitf.errors import ConfigError, InputError
from minitf.experiments.base import RunContext
from minitf.experiments.regression.regression import (RegressionExperiment, RegressionSettings, active_dims_at, make_sample,
                                           to_batch)
from minitf.model import Transformer
from minitf.trainer import masked_loss
from toy_tasks.regression import RegressionTask


def vector_cfg(**kw):
    base = dict(n_layers=2, d_model=32, n_heads=2, d_head=16, d_mlp=32, vocab_size=1, n_ctx=9, d_input=4)
    return ModelConfig(**{**base, **kw})


def test_token_model_numbers_unchanged():
    # Golden numbers from the token model before vector models existed (same seed, same draws).
    torch.manual_seed(0)
    model = Transformer(ModelConfig(d_mlp=32))
    assert list(model.state_dict())[:3] == ["embed.weight", "pos_embed.weight", "blocks.0.ln1.ln.weight"]
    assert not any(k.startswith(("read_in", "read_out")) for k in model.state_dict())
    total = sum(p.double().abs().sum() for p in model.parameters()).item()
    assert total == pytest.approx(1238.0295908965122, rel=1e-12)
    out = model(torch.arange(12).view(2, 6))[0, -1, :4].tolist()
    assert out == pytest.approx([0.027703585103154182, -0.19775032997131348, -0.02302100881934166,
                                 0.03716582804918289], abs=1e-7)


def test_vector_model_shapes_and_hooks():
    torch.manual_seed(0)
    model = Transformer(vector_cfg())
    x = torch.randn(3, 9, 4)
    out, cache = model.run_with_cache(x)
    assert out.shape == (3, 9, 1)
    assert model.embed is None and model.unembed is None
    torch.testing.assert_close(cache["hook_embed"], model.read_in(x))
    assert cache["blocks.1.hook_resid_post"].shape == (3, 9, 32)


@pytest.mark.parametrize("bad, msg", [(torch.randint(0, 3, (2, 5)), "float tensor"),
                                      (torch.randn(2, 5, 3), "shape"), (torch.randn(5, 4), "batch dimension"),
                                      (torch.randn(2, 5, 4, dtype=torch.float64), "convert"),
                                      (torch.randn(2, 10, 4), "n_ctx"),
                                      (torch.full((1, 2, 4), float("nan")), "NaN")])
def test_vector_model_input_errors(bad, msg):
    with pytest.raises(InputError, match=msg):
        Transformer(vector_cfg())(bad)


def test_token_model_refuses_vectors_with_hint():
    with pytest.raises(InputError, match="set d_input"):
        Transformer(ModelConfig())(torch.randn(2, 3, 4))


@pytest.mark.parametrize("kw, msg", [(dict(d_input=-1), "d_input"), (dict(attention="softmaxx"), "attention"),
                                     (dict(d_input=3, tie_embeddings=True), "tie_embeddings")])
def test_config_errors(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        ModelConfig(**kw).validate()


def test_linear_attention_is_unnormalised_and_backend_independent():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8) for _ in range(3))
    scores = q @ k.transpose(-1, -2) / math.sqrt(8)
    want = (scores * torch.ones(5, 5).tril()) @ v
    for impl in ("naive", "sdpa", "auto"):
        torch.testing.assert_close(attention(q, k, v, impl=impl, kind="linear"), want)
    seen = []
    linear_attention(q, k, v, pattern_hook=lambda p: seen.append(p) or p)
    assert bool((seen[0].triu(1) == 0).all()) and not torch.allclose(seen[0].sum(-1), torch.ones(2, 3, 5))
    with pytest.raises(ConfigError, match="kind"):
        attention(q, k, v, kind="relu")


def test_linear_attention_model_pattern_hook_sees_scores():
    torch.manual_seed(0)
    model = Transformer(vector_cfg(attention="linear"))
    x = torch.randn(2, 9, 4)
    _, cache = model.run_with_cache(x)
    pattern = cache["blocks.0.attn.hook_pattern"]
    assert pattern.shape == (2, 2, 9, 9) and bool((pattern.triu(1) == 0).all())
    torch.testing.assert_close(model(x), model.use_attention("naive")(x))  # same numbers on any backend


def test_masked_loss_float_targets_is_masked_mse():
    torch.manual_seed(0)
    pred = torch.randn(3, 7, 1)
    targets, mask = torch.randn(3, 7), (torch.rand(3, 7) > 0.5).float()
    got = masked_loss(pred, Batch(torch.zeros(3, 7, 2), targets, mask))
    want = (((pred[..., 0] - targets) ** 2) * mask).sum() / mask.sum()
    torch.testing.assert_close(got, want)
    members = masked_loss(pred.expand(2, 3, 7, 1), Batch(None, targets.expand(2, 3, 7), mask.expand(2, 3, 7)))
    torch.testing.assert_close(members, want.expand(2))


def test_masked_loss_token_targets_unchanged():
    torch.manual_seed(0)
    logits, targets = torch.randn(2, 5, 11), torch.randint(0, 11, (2, 5))
    mask = torch.tensor([[1, 1, 0, 1, 0], [0, 1, 1, 1, 1]], dtype=torch.float32)
    ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view(2, 5)
    assert torch.equal(masked_loss(logits, Batch(None, targets, mask)), (ce * mask).sum() / mask.sum())


def test_to_batch_layout():
    task = RegressionTask(d=3, n_points=4)
    b = task.sample(np.random.default_rng(0), 2)
    batch = to_batch(b["xs"], b["ys"])
    assert batch.inputs.shape == (2, 7, 4) and batch.targets.shape == (2, 7)
    torch.testing.assert_close(batch.targets[:, 0::2], torch.from_numpy(b["ys"]).float())
    assert batch.mask[:, 0::2].eq(1).all() and batch.mask[:, 1::2].eq(0).all()
    torch.testing.assert_close(batch.inputs[:, 1::2, 3], torch.from_numpy(b["ys"][:, :-1]).float())


def test_curriculum_schedule_and_step_passing():
    assert [active_dims_at(s, 5, 2, 0.3, 1000) for s in (0, 74, 75, 150, 225, 299, 300, 999)] == [2, 2, 3, 4, 5, 5, 5, 5]
    task = RegressionTask(d=5)
    exp = RegressionExperiment()
    ctx = RunContext(exp, "/nonexistent", exp.default_model(task), TrainConfig(batch_size=4), task, Vocab([]),
                     None, RegressionSettings())
    fn = ctx.batch_fn(make_sample(task, lambda step: 2 if step < 10 else 5))
    early, late = fn(0), fn(10)
    assert isinstance(early, Batch) and early.inputs[:, 0::2, 2:5].abs().sum() == 0
    assert late.inputs[:, 0::2, 2:5].abs().sum() > 0
    assert torch.equal(fn(3).inputs, fn(3).inputs)  # a pure function of the step
    with pytest.raises(ValueError, match="curriculum"):
        RegressionSettings(curriculum="size").validate()


@pytest.mark.slow
def test_tiny_regressor_beats_averaging_and_tracks_least_squares(tmp_path):
    # d = 2, 5 points, 2 layers × d_model 32, 3000 steps: ~30 s on one thread. Seed 0 measured
    # max |model − least squares| 0.20 at k = d (0.08 at k = 4); averaging 0.80 at k = 4.
    from minitf import runs

    report = runs.run("regression", out=str(tmp_path / "run"), quiet=True, overrides=[
        "d=2", "n_layers=2", "d_model=32", "n_heads=2", "d_head=16", "d_mlp=64", "steps=3000", "lr=3e-3",
        "eval_every=1000", "checkpoint_every=3000", "eval_prompts=1000"])
    curves, d = report["curves"], 2
    for k in range(d, report["n_points"]):
        k = str(k) if str(k) in curves["model"] else k
        model, ls, avg, gd = (curves[n][k]["err"] for n in ("model", "least_squares", "averaging", "gd_one_step"))
        assert model < 0.3 * avg and model < 0.5 * gd, (k, model, avg, gd)
        assert abs(model - ls) <= 0.3, (k, model, ls)
    assert curves["model"][report["n_points"] - 1]["err"] <= 0.15
