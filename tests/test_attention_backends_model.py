"""The model's "triton" backend: same training losses as "sdpa"; clear errors where it cannot run."""
import dataclasses
import os
import subprocess
import sys

import numpy as np
import torch

from minitf.config import ModelConfig, TrainConfig
from minitf.data import Vocab, collate
from minitf.model import Transformer
from minitf.trainer import Trainer
from toy_tasks.induction import InductionTask

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
