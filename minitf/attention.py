"""One attention entry point with interchangeable backends.

- "naive":  explicit softmax(QK^T/sqrt(d)) — materializes the (batch, head, query, key)
            pattern; the model uses it whenever a hook wants ``hook_pattern``, so probes
            always see the exact pattern that produced the output.
- "sdpa":   ``torch.nn.functional.scaled_dot_product_attention`` (fused on CPU and CUDA).
- "triton": the FlashAttention-2 style kernel in ``kernels/flash_attention.py``; on CPU it
            runs only under Triton's interpreter (TRITON_INTERPRET=1 set before import).
- "auto":   triton on CUDA when Triton is installed, sdpa otherwise.
All backends agree with a float64 reference (tests/test_attention.py).
"""
import importlib.util
import math
import os

import torch
import torch.nn.functional as F

from minitf.errors import ConfigError


def naive_attention(q, k, v, causal: bool = True, pattern_hook=None):
    """Reference attention; ``pattern_hook`` may observe or replace the probabilities."""
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if causal:
        n_q, n_k = q.shape[-2], k.shape[-2]
        # Queries are the last n_q positions of the key sequence (matters for KV-cached decoding).
        mask = torch.ones(n_q, n_k, dtype=torch.bool, device=q.device).tril(n_k - n_q)
        scores = scores.masked_fill(~mask, float("-inf"))
    pattern = torch.softmax(scores, dim=-1)
    if pattern_hook is not None:
        pattern = pattern_hook(pattern)
    return torch.matmul(pattern, v)


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def triton_usable_on(device: torch.device) -> tuple[bool, str]:
    """Whether the triton backend can run on ``device``, and if not, why and how to fix it."""
    if not triton_available():
        return False, "attn_impl='triton' needs the triton package (pip install triton)"
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        return False, ("attn_impl='triton' on CPU runs only in Triton's interpreter: set "
                       "TRITON_INTERPRET=1 in the environment before starting Python, "
                       "or use attn_impl='sdpa' / 'auto'")
    return True, ""


def resolve_impl(impl: str, device: torch.device) -> str:
    if impl == "auto":
        return "triton" if device.type == "cuda" and triton_available() else "sdpa"
    return impl


def attention(q, k, v, causal: bool = True, impl: str = "auto", pattern_hook=None):
    """Attention over (batch, head, seq, d_head) tensors; returns the same shape as ``q``.

    If ``pattern_hook`` is given, the naive path runs whatever ``impl`` says, because only
    it materializes the pattern the hook must see.
    """
    if pattern_hook is not None or impl == "naive":
        return naive_attention(q, k, v, causal, pattern_hook)
    impl = resolve_impl(impl, q.device)
    if impl == "sdpa":
        # SDPA's causal mask is top-left aligned, right only when n_q == n_k.
        if causal and q.shape[-2] != k.shape[-2]:
            return naive_attention(q, k, v, causal)
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    if impl == "triton":
        ok, why = triton_usable_on(q.device)
        if not ok:
            raise ConfigError(why)
        if causal and q.shape[-2] != k.shape[-2]:
            return naive_attention(q, k, v, causal)
        from kernels.flash_attention import flash_attention

        return flash_attention(q, k, v, causal=causal)
    raise ConfigError(f"unknown attention impl {impl!r}; use auto, sdpa, naive or triton")


def pattern_from_lse(q, k, lse, causal: bool = True):
    """Exact attention probabilities recomputed from a fused kernel's log-sum-exp."""
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    pattern = torch.exp(scores - lse.float().unsqueeze(-1))
    if causal:
        n = q.shape[-2]
        pattern = pattern.masked_fill(~torch.ones(n, n, dtype=torch.bool, device=q.device).tril(), 0.0)
    return pattern
