"""One attention entry point with interchangeable backends.

- "naive":  explicit softmax(QK^T/sqrt(d)) — materializes the (batch, head, query, key)
            pattern; the model uses it whenever a hook wants ``hook_pattern``, so probes
            always see the exact pattern that produced the output.
- "sdpa":   ``torch.nn.functional.scaled_dot_product_attention`` (fused on CPU and CUDA).
- "triton": the FlashAttention-2 style kernel in ``kernels/flash_attention.py``; on CPU it
            runs only under Triton's interpreter (TRITON_INTERPRET=1 set before import).
- "auto":   triton on CUDA when the kernel supports the head size and dtype, sdpa otherwise.
- ``kind="linear"``: softmax-free, unnormalised linear self-attention (von Oswald et al. 2023)
            in plain torch whatever the backend (``linear_attention``).
- ``key_mask`` (batch, key) bool, True = a real token: padding. Masked keys get no attention
            (a pad query attends to the real keys before it and to itself, so nothing is NaN).
            naive and linear apply it themselves; sdpa takes it as ``attn_mask``; the Triton
            kernel takes no mask, so a masked call runs sdpa instead (and "auto" does too).
            ``key_mask=None`` runs exactly the unmasked code, bit for bit.
Each backend's limits are checked by ``backend_problem`` when a config is validated (head
size) and when a run is set up (device), so an impossible choice fails before any work.
All backends agree with a float64 reference (tests/test_attention.py).
"""
import importlib.util
import logging
import math
import os

import torch
import torch.nn.functional as F

from minitf.errors import ConfigError


def naive_attention(q, k, v, causal: bool = True, pattern_hook=None, key_mask=None):
    """Reference attention; ``pattern_hook`` may observe or replace the probabilities."""
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if causal:
        n_q, n_k = q.shape[-2], k.shape[-2]
        # Queries are the last n_q positions of the key sequence (matters for KV-cached decoding).
        mask = torch.ones(n_q, n_k, dtype=torch.bool, device=q.device).tril(n_k - n_q)
        scores = scores.masked_fill(~mask, float("-inf"))
    if key_mask is not None:
        scores = scores.masked_fill(~key_allowed(key_mask, q.shape[-2]), float("-inf"))
    pattern = torch.softmax(scores, dim=-1)
    if pattern_hook is not None:
        pattern = pattern_hook(pattern)
    return torch.matmul(pattern, v)


def linear_attention(q, k, v, causal: bool = True, pattern_hook=None, key_mask=None):
    """Linear self-attention without softmax or normalisation (von Oswald et al. 2023).

    ``pattern = mask ⊙ (q kᵀ · s)`` with the scale ``s = 1/sqrt(d_head)`` (the softmax path's
    score scale, so the two kinds differ only by the softmax), causal entries above the diagonal
    set to 0 (not −inf); ``out = pattern @ v``. No division by the number of keys: a position
    sums over its whole prefix, as in the construction where one layer is one GD step
    ``ΔW ∝ Σ_i (y_i − W x_i) x_iᵀ``. q, k, v (batch, head, seq, d_head) → (batch, head, n_q, d_head);
    ``pattern_hook`` sees (and may replace) the unnormalised (batch, head, query, key) pattern;
    ``key_mask`` zeroes the entries of padding keys.
    """
    pattern = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if causal:
        n_q, n_k = q.shape[-2], k.shape[-2]
        mask = torch.ones(n_q, n_k, dtype=torch.bool, device=q.device).tril(n_k - n_q)
        pattern = pattern.masked_fill(~mask, 0.0)
    if key_mask is not None:
        pattern = pattern.masked_fill(~key_allowed(key_mask, q.shape[-2]), 0.0)
    if pattern_hook is not None:
        pattern = pattern_hook(pattern)
    return torch.matmul(pattern, v)


def key_allowed(key_mask: torch.Tensor, n_q: int) -> torch.Tensor:
    """(batch, 1, n_q, n_k) bool: which keys each query may see given ``key_mask`` (batch, n_k),
    True = a real token. Real keys, and a query's own position (queries are the last n_q
    keys), so a padding query has at least one key and its row stays finite."""
    n_k, device = key_mask.shape[-1], key_mask.device
    own = torch.arange(n_k, device=device)[None, :] == torch.arange(n_k - n_q, n_k, device=device)[:, None]
    return key_mask.bool()[:, None, None, :] | own


def triton_available() -> bool:
    """Whether the triton package is importable (it has no wheels for macOS or Windows)."""
    return importlib.util.find_spec("triton") is not None


def _interpreter() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def backend_problem(impl: str, d_head: int, device: str | None = None, dtype=torch.float32) -> str | None:
    """Why backend ``impl`` cannot run attention with this head size, device type ("cpu" /
    "cuda"; None: any device) and dtype — one line with the fix — or None if it can.

    "naive" and "sdpa" run everything; "triton"'s limits are the kernel's own
    (``minitf_kernels.limits.unsupported_reason``), stated once beside the kernel.
    """
    if impl in ("naive", "sdpa", "auto"):
        return None
    if impl != "triton":
        return f"unknown attention impl {impl!r}; use one of auto, sdpa, naive, triton"
    if not triton_available():
        return ("attn_impl='triton' needs the triton package, which is not installed (it has no wheels "
                "for macOS or Windows): pip install triton on Linux, or use attn_impl='sdpa' / 'auto'")
    if device == "cpu" and not _interpreter():
        return ("attn_impl='triton' on CPU runs only in Triton's interpreter: set TRITON_INTERPRET=1 in "
                "the environment before starting Python, or use attn_impl='sdpa' / 'auto'")
    from minitf_kernels.limits import unsupported_reason

    why = unsupported_reason(d_head, dtype, device or "cuda", device == "cpu" and _interpreter())
    if why is None and device is None:  # any device: the interpreter's limits apply on CPU only
        return None
    return f"attn_impl='triton': {why}" if why else None


_fallbacks_logged: set = set()


def resolve_impl(impl: str, device: torch.device, d_head: int | None = None, dtype=torch.float32) -> str:
    """The backend that runs: "auto" picks the Triton kernel on CUDA when it supports the
    shape and dtype, else SDPA (saying so once in the log)."""
    if impl != "auto":
        return impl
    if device.type != "cuda":
        return "sdpa"
    why = backend_problem("triton", d_head or 64, "cuda", dtype)
    if why is None:
        return "triton"
    if why not in _fallbacks_logged:
        _fallbacks_logged.add(why)
        logging.getLogger("minitf").warning("attn_impl='auto' uses sdpa, not the Triton kernel: %s", why)
    return "sdpa"


def sdpa(q, k, v, **kwargs):
    """``F.scaled_dot_product_attention``, except that bf16 inputs on the CPU are computed in fp32
    and the output cast back: torch's bf16 CPU kernel is several times slower than its fp32 one at
    small head sizes (fwd+bwd, one thread: 8× at d_head 16, 3.5× at 32, 1.1× at 64 — measured by
    bench/bf16_profile.py), and attention is a small share of the FLOPs here, so under
    ``precision=bf16`` the matmuls gain and attention does not lose."""
    if q.device.type == "cpu" and q.dtype == torch.bfloat16:
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), **kwargs).to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, **kwargs)


def attention(q, k, v, causal: bool = True, impl: str = "auto", pattern_hook=None, kind: str = "softmax",
              key_mask=None):
    """Attention over (batch, head, seq, d_head) tensors; returns the same shape as ``q``.

    ``kind="linear"`` runs ``linear_attention`` (the same on every backend: ``impl`` is ignored).
    ``key_mask`` (batch, key) bool, True = real token, masks padding keys (module docstring);
    a masked call on the Triton backend runs sdpa, which takes the mask.

    If ``pattern_hook`` is given, the naive path runs whatever ``impl`` says, because only
    it materializes the pattern the hook must see. Raises ``ConfigError`` for a backend that
    cannot run these inputs (checked again here for direct callers; configs check it first).
    """
    if kind == "linear":
        return linear_attention(q, k, v, causal, pattern_hook, key_mask)
    if kind != "softmax":
        raise ConfigError(f"unknown attention kind {kind!r}; use 'softmax' or 'linear'")
    if pattern_hook is not None or impl == "naive" or q.shape[-2] == 0:
        return naive_attention(q, k, v, causal, pattern_hook, key_mask)
    if key_mask is not None:
        if impl not in ("auto", "sdpa", "triton"):
            raise ConfigError(f"unknown attention impl {impl!r}; use one of auto, sdpa, naive, triton")
        allowed = key_allowed(key_mask, q.shape[-2])
        if causal:
            n_q, n_k = q.shape[-2], k.shape[-2]
            allowed = allowed & torch.ones(n_q, n_k, dtype=torch.bool, device=q.device).tril(n_k - n_q)
        return sdpa(q, k, v, attn_mask=allowed)
    impl = resolve_impl(impl, q.device, q.shape[-1], q.dtype)
    if impl == "sdpa":
        # SDPA's causal mask is top-left aligned, right only when n_q == n_k.
        if causal and q.shape[-2] != k.shape[-2]:
            return naive_attention(q, k, v, causal)
        return sdpa(q, k, v, is_causal=causal)
    why = backend_problem(impl, q.shape[-1], q.device.type, q.dtype)
    if why:
        raise ConfigError(why)
    if causal and q.shape[-2] != k.shape[-2]:
        return naive_attention(q, k, v, causal)
    from minitf_kernels.flash_attention import flash_attention

    return flash_attention(q, k, v, causal=causal)


def pattern_from_lse(q, k, lse, causal: bool = True):
    """Exact attention probabilities recomputed from a fused kernel's log-sum-exp."""
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    pattern = torch.exp(scores - lse.float().unsqueeze(-1))
    if causal:
        n = q.shape[-2]
        pattern = pattern.masked_fill(~torch.ones(n, n, dtype=torch.bool, device=q.device).tril(), 0.0)
    return pattern
