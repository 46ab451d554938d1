import os

# Triton reads this at import time: kernel tests run in its CPU interpreter.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from minitf.config import ModelConfig  # noqa: E402


@pytest.fixture
def tiny_cfg():
    return ModelConfig(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, vocab_size=20, n_ctx=16)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
