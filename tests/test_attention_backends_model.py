"""The model's "triton" backend: same training losses as "sdpa"; clear errors where it cannot run, checked
at config time, and "auto" picks a backend that can run the shape."""
import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from minitf.config import ModelConfig, TrainConfig
from minitf.data import Vocab, collate
from minitf.errors import ConfigError
from minitf.model import Transformer
from minitf.trainer import Trainer
from toy_tasks.induction import InductionTask

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--set", "steps=6", "--set", "segment_len=5", "--set", "min_segment_len=3", "--set", "n_symbols=8",
         "--set", "eval_every=3"]


def cli(*args, **kw):
    # as a user's shell has it: conftest turns Triton's interpreter on for this process only
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, env=env, **kw)


def losses_with(impl, tmp_path):
    task = InductionTask(n_symbols=10, segment_len=8)
    vocab = Vocab(task.vocab_tokens())
    cfg = ModelConfig(n_layers=2, d_model=32, n_heads=2, d_head=16, vocab_size=len(vocab), n_ctx=16,
                      attn_impl=impl)
    torch.manual_seed(0)
    model = Transformer(cfg)
    run = tmp_path / impl
    run.mkdir()
    trainer = Trainer(model, TrainConfig(steps=5, batch_size=4, warmup=1, log_every=1, checkpoint_every=0),
                      lambda s: collate(task.sample(np.random.default_rng([1, s]), 4), vocab), str(run))
    trainer.fit()
    return [trainer.losses[s] for s in range(1, 6)], model


def test_triton_trains_like_sdpa(tmp_path):
    a, model_a = losses_with("sdpa", tmp_path)
    b, model_b = losses_with("triton", tmp_path)
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)
    # a model trained with one backend runs with any other
    tokens = torch.randint(1, 12, (2, 16))
    model_b.cfg = dataclasses.replace(model_b.cfg, attn_impl="naive")
    for block in model_b.blocks:
        block.attn.cfg = model_b.cfg
    torch.testing.assert_close(model_b(tokens), model_a(tokens), atol=1e-3, rtol=0)


def test_triton_on_cpu_without_interpreter_is_a_clear_error():
    code = ("import torch; from minitf.model import Transformer; from minitf.config import ModelConfig\n"
            "m = Transformer(ModelConfig(attn_impl='triton'))\n"
            "try:\n    m(torch.zeros(1, 4, dtype=torch.long))\n"
            "except ValueError as e:\n    print('ERR', e)\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert "ERR" in r.stdout and "TRITON_INTERPRET=1" in r.stdout, r.stdout + r.stderr


# -- a backend's limits are checked at config time; auto picks a backend that can run -----------
@pytest.mark.parametrize("d_model,n_heads,d_head", [(48, 2, 24), (40, 2, 20), (96, 1, 96)])
def test_triton_head_sizes_it_cannot_run_are_config_errors(d_model, n_heads, d_head):
    with pytest.raises(ConfigError, match="triton"):
        ModelConfig(d_model=d_model, n_heads=n_heads, d_head=d_head, attn_impl="triton").validate()
    ModelConfig(d_model=d_model, n_heads=n_heads, d_head=d_head, attn_impl="auto").validate()


def test_auto_falls_back_to_sdpa_for_shapes_the_kernel_cannot_run(caplog):
    from minitf.attention import resolve_impl

    assert resolve_impl("auto", torch.device("cuda"), 24) == "sdpa"
    assert resolve_impl("auto", torch.device("cuda"), 24) == "sdpa"
    assert sum("uses sdpa" in r.message for r in caplog.records) <= 1  # said once, not per call
    assert resolve_impl("auto", torch.device("cpu"), 64) == "sdpa"


def test_explicit_triton_on_cpu_without_interpreter_writes_nothing_then_the_fix_runs(tmp_path):
    out = tmp_path / "run"
    r = cli("induction", "--out", str(out), "--set", "attn_impl=triton", *SMALL)
    assert r.returncode == 2 and "TRITON_INTERPRET=1" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()
    assert cli("induction", "--out", str(out), *SMALL).returncode == 0
