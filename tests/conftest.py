"""Shared fixtures, and where the Triton kernel tests run (decided before triton is imported).

Triton picks compiled or interpreted kernels once per process, when kernels/flash_attention.py
is imported. Here: compiled on CUDA when a GPU is present (one config per head_dim, so each
kernel variant compiles once; bench/attention.py autotunes), otherwise on CPU in Triton's
interpreter (TRITON_INTERPRET=1). MINITF_KERNEL_DEVICE=cpu forces the interpreter on a GPU
machine (e.g. for the whole suite, whose model tests run the "triton" backend on CPU);
MINITF_KERNEL_DEVICE=cuda insists on the GPU.
"""
import os

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
