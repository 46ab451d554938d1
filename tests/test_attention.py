"""Every attention backend agrees with a float64 reference.

Tolerance: float32 backends vs the float64 reference within 1e-5 absolute (inputs ~N(0,1),
head_dim ≤ 64, so the exact output is O(1) and float32 rounding is ~1e-7 per op).
"""
import math

import pytest
import torch

from minitf.attention import attention, pattern_from_lse, resolve_impl
from minitf.errors import ConfigError


def reference(q, k, v, causal):
    q, k, v = q.double(), k.double(), v.double()
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if causal:
        n = q.shape[-2]
        s = s.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(s, -1) @ v


@pytest.mark.parametrize("impl", ["naive", "sdpa"])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("seq,d", [(1, 16), (7, 16), (33, 32), (64, 64)])
def test_backends_match_float64_reference(impl, causal, seq, d):
    q, k, v = (torch.randn(2, 3, seq, d) for _ in range(3))
    out = attention(q, k, v, causal=causal, impl=impl)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), reference(q, k, v, causal), atol=1e-5, rtol=1e-5)


def test_pattern_hook_sees_exact_probabilities():
    q, k, v = (torch.randn(1, 2, 5, 8) for _ in range(3))
    seen = {}

    def hook(p):
        seen["p"] = p
        return p

    attention(q, k, v, impl="sdpa", pattern_hook=hook)  # a hook forces the naive path
    s = (q @ k.transpose(-1, -2) / math.sqrt(8)).double()
    s = s.masked_fill(torch.ones(5, 5, dtype=torch.bool).triu(1), float("-inf"))
    torch.testing.assert_close(seen["p"].double(), torch.softmax(s, -1), atol=1e-6, rtol=0)


def test_pattern_from_lse_recovers_softmax():
    q, k = torch.randn(1, 2, 6, 8), torch.randn(1, 2, 6, 8)
    s = q @ k.transpose(-1, -2) / math.sqrt(8)
    s = s.masked_fill(torch.ones(6, 6, dtype=torch.bool).triu(1), float("-inf"))
    lse = torch.logsumexp(s, -1)
    torch.testing.assert_close(pattern_from_lse(q, k, lse), torch.softmax(s, -1), atol=1e-6, rtol=0)


def test_auto_picks_sdpa_on_cpu():
    assert resolve_impl("auto", torch.device("cpu")) == "sdpa"


def test_unknown_impl_is_an_error():
    q = torch.randn(1, 1, 2, 4)
    with pytest.raises(ConfigError, match="unknown attention impl"):
        attention(q, q, q, impl="flash")


def masked_reference(q, k, v, key_mask):
    """Causal attention in float64 where query i sees the real keys j ≤ i and itself."""
    q, k, v = q.double(), k.double(), v.double()
    n = q.shape[-2]
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    allowed = torch.ones(n, n, dtype=torch.bool).tril() & (key_mask[:, None, None, :] | torch.eye(n, dtype=torch.bool))
    return torch.softmax(s.masked_fill(~allowed, float("-inf")), -1) @ v


@pytest.mark.parametrize("impl", ["naive", "sdpa", "triton", "auto"])
@pytest.mark.parametrize("key_mask", [[[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0]],
                                      [[0, 1, 0, 1, 1, 0, 1], [1, 1, 1, 1, 1, 1, 1]],
                                      [[0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0]]])
def test_a_key_mask_matches_the_float64_reference_on_every_backend(impl, key_mask):
    """Padding keys get no attention; a padding query sees its real prefix and itself (never NaN)."""
    key_mask = torch.tensor(key_mask, dtype=torch.bool)
    q, k, v = (torch.randn(2, 3, 7, 16) for _ in range(3))
    out = attention(q, k, v, causal=True, impl=impl, key_mask=key_mask)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), masked_reference(q, k, v, key_mask), atol=1e-5, rtol=1e-5)


def test_the_triton_kernel_takes_no_mask_so_masked_calls_run_sdpa(monkeypatch):
    import minitf_kernels.flash_attention as fa

    calls = []
    real_kernel = fa.flash_attention
    monkeypatch.setattr(fa, "flash_attention", lambda *a, **kw: calls.append(1) or real_kernel(*a, **kw))
    q = torch.randn(1, 2, 5, 16)
    attention(q, q, q, impl="triton")
    assert calls == [1]  # unmasked: the kernel
    attention(q, q, q, impl="triton", key_mask=torch.tensor([[0, 1, 1, 1, 1]], dtype=torch.bool))
    assert calls == [1]  # masked: sdpa


def test_linear_attention_zeroes_padding_keys():
    from minitf.attention import linear_attention

    q, k, v = (torch.randn(1, 2, 6, 8) for _ in range(3))
    key_mask = torch.tensor([[0, 0, 1, 1, 1, 1]], dtype=torch.bool)
    out = attention(q, k, v, kind="linear", key_mask=key_mask)
    torch.testing.assert_close(out[:, :, 2:], linear_attention(q[:, :, 2:], k[:, :, 2:], v[:, :, 2:]),
                               atol=1e-6, rtol=0)


@pytest.mark.parametrize("impl", ["naive", "sdpa", "triton"])
def test_zero_positions_give_an_empty_output(impl):
    q = torch.randn(2, 3, 0, 16)
    assert attention(q, q, q, impl=impl).shape == (2, 3, 0, 16)
