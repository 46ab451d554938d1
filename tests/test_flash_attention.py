"""The Triton kernel vs a float64 reference, in Triton's CPU interpreter (see conftest.py).

Tolerances: float32 inputs ~N(0, 1): forward output and lse within 2e-5 absolute, gradients
within 1e-4 absolute (they sum seq-many float32 products; measured errors are ~1e-6).
float64 inputs: torch.autograd.gradcheck at its defaults (eps 1e-6, atol 1e-5, rtol 1e-3).
"""
import math

import pytest
import torch

from kernels.flash_attention import flash_attention
from minitf.attention import pattern_from_lse


def reference(q, k, v, causal, scale=None):
    q, k, v = q.double(), k.double(), v.double()
    s = q @ k.transpose(-1, -2) * (scale or 1 / math.sqrt(q.shape[-1]))
    if causal:
        n = q.shape[-2]
        s = s.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(s, -1) @ v, torch.logsumexp(s, -1), torch.softmax(s, -1)


def leaf(*shape, dtype=torch.float32):
    return torch.randn(*shape, dtype=dtype).requires_grad_()


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("seq", [1, 7, 16, 33, 64, 100])
@pytest.mark.parametrize("head_dim", [16, 32, 64])
def test_forward_backward_match_float64_reference(seq, head_dim, causal):
    q, k, v = (leaf(1, 2, seq, head_dim) for _ in range(3))
    o, lse = flash_attention(q, k, v, causal=causal, return_lse=True)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref_o, ref_lse, _ = reference(q64, k64, v64, causal)
    assert o.dtype == torch.float32 and lse.dtype == torch.float32 and lse.shape == (1, 2, seq)
    torch.testing.assert_close(o.double(), ref_o, atol=2e-5, rtol=0)
    torch.testing.assert_close(lse.double(), ref_lse, atol=2e-5, rtol=0)
    do = torch.randn_like(o)
    grads = torch.autograd.grad(o, (q, k, v), do)
    ref_grads = torch.autograd.grad(ref_o, (q64, k64, v64), do.double())
    for name, g, r in zip("qkv", grads, ref_grads):
        torch.testing.assert_close(g.double(), r, atol=1e-4, rtol=0, msg=lambda m: f"d{name}: {m}")


def test_patterns_recomputed_from_lse_equal_naive_softmax():
    q, k, v = (torch.randn(2, 2, 20, 16) for _ in range(3))
    _, lse = flash_attention(q, k, v, return_lse=True)
    _, _, ref_pattern = reference(q, k, v, True)
    torch.testing.assert_close(pattern_from_lse(q, k, lse).double(), ref_pattern, atol=1e-5, rtol=0)


def test_custom_scale_and_non_contiguous_inputs():
    base = torch.randn(3, 24, 3, 2, 32)  # (batch, seq, qkv, heads, d) → transposed views
    q, k, v = (base[:, :, i].transpose(1, 2).requires_grad_() for i in range(3))
    assert not q.is_contiguous()
    o = flash_attention(q, k, v, causal=True, sm_scale=0.3)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref_o, _, _ = reference(q64, k64, v64, True, scale=0.3)
    torch.testing.assert_close(o.double(), ref_o, atol=2e-5, rtol=0)
    do = torch.randn(3, 24, 2, 32).transpose(1, 2)  # a non-contiguous upstream gradient too
    g = torch.autograd.grad(o, (q, k, v), do)
    r = torch.autograd.grad(ref_o, (q64, k64, v64), do.double())
    for a, b in zip(g, r):
        torch.testing.assert_close(a.double(), b, atol=1e-4, rtol=0)


@pytest.mark.parametrize("causal", [True, False])
def test_gradcheck_float64(causal):
    q, k, v = (leaf(1, 2, 19, 16, dtype=torch.float64) for _ in range(3))
    assert torch.autograd.gradcheck(lambda a, b, c: flash_attention(a, b, c, causal=causal), (q, k, v),
                                    fast_mode=True)


def test_batch_heads_are_independent():
    q, k, v = (torch.randn(3, 5, 17, 16) for _ in range(3))
    full = flash_attention(q, k, v)
    one = flash_attention(q[1:2, 3:4], k[1:2, 3:4], v[1:2, 3:4])
    torch.testing.assert_close(full[1:2, 3:4], one, atol=1e-6, rtol=0)


@pytest.mark.parametrize("make,needle", [
    (lambda: (torch.randn(2, 8, 16),) * 3, "q must have rank 4"),
    (lambda: (torch.randn(1, 1, 8, 16), torch.randn(1, 1, 9, 16), torch.randn(1, 1, 8, 16)), "k shape"),
    (lambda: (torch.randn(1, 1, 8, 16), torch.randn(1, 1, 8, 16).double(), torch.randn(1, 1, 8, 16)), "k dtype"),
    (lambda: (torch.randn(1, 1, 8, 24),) * 3, "head_dim 24 is not supported; allowed: (16, 32, 64, 128)"),
    (lambda: (torch.ones(1, 1, 8, 16, dtype=torch.int32),) * 3, "dtype torch.int32 is not supported"),
    (lambda: (torch.randn(1, 1, 8, 16, device="meta"),) * 3, "q is on meta"),
    (lambda: ([[1.0]], torch.randn(1, 1, 8, 16), torch.randn(1, 1, 8, 16)), "q must be a torch.Tensor"),
])
def test_bad_input_raises_value_error(make, needle):
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        flash_attention(*make())


def test_bad_scale_raises():
    q = torch.randn(1, 1, 4, 16)
    with pytest.raises(ValueError, match="sm_scale must be a positive number"):
        flash_attention(q, q, q, sm_scale=-1.0)


def test_benchmark_runs_on_cpu():
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, os.path.join(root, "bench", "attention.py")], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "numerics OK" in r.stdout and "need a CUDA GPU" in r.stdout
