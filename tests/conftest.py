"""Shared fixtures, and where the Triton kernel tests run (decided before triton is imported).

Triton picks compiled or interpreted kernels once per process, when kernels/flash_attention.py
is imported. Here: compiled on CUDA when a GPU is present (one config per head_dim, so each
kernel variant compiles once; bench/attention.py autotunes), otherwise on CPU in Triton's
interpreter (TRITON_INTERPRET=1). MINITF_KERNEL_DEVICE=cpu forces the interpreter on a GPU
machine (e.g. for the whole suite, whose model tests run the "triton" backend on CPU);
MINITF_KERNEL_DEVICE=cuda insists on the GPU.

Shared by several test files: ``finished`` (a small induction run made once, through train.py) and
``random_batches`` (random-token batches for a Trainer).
"""
import os
import subprocess
import sys

import pytest
import torch

KERNEL_DEVICE = os.environ.get("MINITF_KERNEL_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
if KERNEL_DEVICE not in ("cpu", "cuda"):
    raise pytest.UsageError(f"MINITF_KERNEL_DEVICE={KERNEL_DEVICE!r}: use cpu or cuda")
if KERNEL_DEVICE == "cuda" and not torch.cuda.is_available():
    raise pytest.UsageError("MINITF_KERNEL_DEVICE=cuda but torch sees no CUDA GPU; unset it to use the CPU")
if KERNEL_DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")
else:
    os.environ.setdefault("MINITF_FLASH_AUTOTUNE", "0")

from minitf.config import ModelConfig  # noqa: E402
from minitf.data import Batch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--set", "steps=6", "--set", "segment_len=5", "--set", "min_segment_len=3", "--set", "n_symbols=8",
         "--set", "eval_every=3"]


@pytest.fixture(params=[KERNEL_DEVICE])
def kernel_device(request):
    """The device the Triton kernel tests put their tensors on ("cpu": interpreter, "cuda": compiled)."""
    return request.param


@pytest.fixture
def tiny_cfg():
    return ModelConfig(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, vocab_size=20, n_ctx=16)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def finished(tmp_path_factory):
    """A finished small induction run; tests read it or copy it, never change it."""
    out = tmp_path_factory.mktemp("fin") / "run"
    # as a user's shell has it: TRITON_INTERPRET is turned on above for this process only
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "induction", "--out", str(out), *SMALL],
                       capture_output=True, text=True, cwd=ROOT, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"run folder: {out}")  # printed when the run starts
    return out


def _batches(cfg, n=4, seq=8):
    gen = torch.Generator().manual_seed(1)

    def batch(step):
        ids = torch.randint(1, cfg.vocab_size, (n, seq + 1), generator=gen)
        return Batch(ids[:, :-1], ids[:, 1:], torch.ones(n, seq))
    return batch


@pytest.fixture
def random_batches():
    """``random_batches(cfg)``: a Trainer's batch function of random tokens (its own generator, seed 1)."""
    return _batches
