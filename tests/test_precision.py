"""Training precision (``--set precision=bf16``): bf16 autocast in the forward pass, fp32 weights,
optimizer state, loss reduction, checkpoints and evaluation."""
import dataclasses
import json

import pytest
import torch

from minitf.config import ModelConfig, TrainConfig, apply_overrides
from minitf.data import Batch
from minitf.environment import bf16_matrix_units, environment
from minitf.errors import ConfigError
from minitf.model import Transformer
from minitf.runs import run as run_experiment
from minitf.trainer import Trainer, autocast

REF = "tests/example_experiment.py:FirstTokenExperiment"


def copy_batches(seed=0, vocab=12, n=16, seq=10):
    g = torch.Generator().manual_seed(seed)

    def batch(step):
        x = torch.randint(1, vocab, (n, seq + 1), generator=g)
        return Batch(inputs=x[:, :-1], targets=x[:, 1:], mask=torch.ones(n, seq))
    return batch


def test_precision_is_checked_with_the_choices_named():
    with pytest.raises(ConfigError, match=r"precision must be one of \('fp32', 'bf16'\) \(got 'fp16'\)"):
        apply_overrides([TrainConfig()], ["precision=fp16"])[0].validate()
    assert apply_overrides([TrainConfig()], ["precision=bf16"])[0].validate().precision == "bf16"


def test_autocast_runs_matmuls_in_bf16_and_is_a_no_op_in_fp32():
    w = torch.randn(8, 8)
    for precision, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        with autocast(TrainConfig(precision=precision), torch.device("cpu")):
            assert (torch.randn(4, 8) @ w).dtype == dtype


def test_bf16_training_keeps_fp32_weights_and_optimizer_state_and_follows_fp32(tmp_path):
    """Same seed, same batches: the bf16 run's losses follow the fp32 run's (bf16 has an 8-bit
    mantissa: per-step differences of a few 1e-3 nats, no drift over 60 steps) and every tensor
    the trainer keeps is fp32."""
    losses = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = Transformer(ModelConfig(n_layers=2, d_model=32, n_heads=2, d_head=16, vocab_size=12, n_ctx=16))
        cfg = TrainConfig(steps=60, batch_size=16, lr=3e-3, warmup=5, eval_every=0, checkpoint_every=0,
                          log_every=1, precision=precision)
        trainer = Trainer(model, cfg, copy_batches(), str(tmp_path / precision))
        (tmp_path / precision).mkdir()
        trainer.fit()
        losses[precision] = [trainer.losses[s] for s in sorted(trainer.losses)]
        assert all(p.dtype == torch.float32 for p in model.parameters())
        assert all(v.dtype == torch.float32 for state in trainer.optimizer.state.values() for v in state.values()
                   if torch.is_tensor(v) and v.is_floating_point())
    diffs = [abs(a - b) for a, b in zip(losses["fp32"], losses["bf16"])]
    assert max(diffs) < 0.05, max(diffs)
    assert abs(losses["fp32"][-1] - losses["bf16"][-1]) < 0.02
    assert losses["bf16"][-1] < losses["bf16"][0] - 0.05  # it learned (unigram statistics at least)


def test_a_bf16_run_learns_like_fp32_and_its_folder_is_the_usual_one(tmp_path):
    """The tiny example experiment reaches the same held-out accuracy in bf16 (≥ 0.9, as fp32), its
    config.json records the precision and the CPU's bf16 units, and the saved model loads in fp32."""
    import minitf

    out = tmp_path / "bf16"
    report = run_experiment(REF, out=str(out), seed=1, quiet=True, overrides=["precision=bf16"])
    assert report["results"]["first_token"]["acc"] >= 0.9
    saved = json.loads((out / "config.json").read_text())
    assert saved["train"]["precision"] == "bf16"
    assert saved["environment"]["bf16_units"] == bf16_matrix_units()
    model, _ = minitf.load(out)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_bf16_units_are_read_from_the_cpu_flags():
    units = bf16_matrix_units()
    assert units in (None, "amx_bf16", "avx512_bf16")
    flags = open("/proc/cpuinfo").read() if units else ""
    assert units is None or units in flags
    assert environment()["bf16_units"] == units


def test_fp32_default_is_unchanged():
    assert TrainConfig().precision == "fp32"
    assert dataclasses.replace(TrainConfig(), precision="fp32").validate()


def test_sdpa_on_bf16_cpu_inputs_computes_in_fp32_and_returns_bf16():
    """minitf.attention.sdpa: bf16 CPU inputs are computed by the fp32 kernel (torch's bf16 CPU
    kernel is slower at small head sizes) — equal to the fp32 result rounded to bf16; fp32 inputs
    take torch's kernel unchanged (bit-identical)."""
    import torch.nn.functional as F

    from minitf.attention import sdpa

    q, k, v = (torch.randn(2, 3, 9, 16, generator=torch.Generator().manual_seed(i)) for i in range(3))
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.equal(sdpa(q, k, v, is_causal=True), ref)
    qb, kb, vb = (t.bfloat16() for t in (q, k, v))
    with autocast(TrainConfig(precision="bf16"), torch.device("cpu")):
        out = sdpa(qb, kb, vb, is_causal=True)
    assert out.dtype == torch.bfloat16
    expected = F.scaled_dot_product_attention(qb.float(), kb.float(), vb.float(), is_causal=True).bfloat16()
    assert torch.equal(out, expected)
