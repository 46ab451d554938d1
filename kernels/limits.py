"""What the fused attention kernel supports, stated once: head sizes, dtypes per execution mode,
and ``unsupported_reason``, the one-line refusal (with its fix) that every caller shows.

Imports only torch, so minitf can check a configuration before triton is imported.
"""
import torch

SUPPORTED_HEAD_DIMS = (16, 32, 64, 128)  # tl.arange needs a power of two; ≥ 16 for tl.dot
SUPPORTED_DTYPES = {
    "cuda": (torch.float16, torch.bfloat16, torch.float32),
    # Triton's interpreter runs tiles through numpy, which has no bfloat16: it keeps bf16 as
    # raw uint16 and tl.dot multiplies the integers (measured errors ~1e9). fp16 is computed
    # in float32 by numpy's matmul and is correct; fp64 serves gradcheck.
    "interpreter": (torch.float16, torch.float32, torch.float64),
}


def _names(dtypes):
    return ", ".join(str(d).replace("torch.", "") for d in dtypes)


def unsupported_reason(head_dim: int, dtype: torch.dtype, device_type: str, interpreter: bool) -> str | None:
    """None if the kernel supports (head_dim, dtype) on ``device_type`` ("cuda", "cpu", ...) in
    this execution mode (``interpreter``: TRITON_INTERPRET=1 was set before importing triton,
    see ``INTERPRET``); otherwise a one-line reason that names the fix. Raises nothing."""
    if device_type not in ("cuda", "cpu"):
        return (f"device '{device_type}' cannot run the Triton kernel: it runs on cuda, or on cpu in "
                f"Triton's interpreter; move the tensors to cuda or use attn_impl='sdpa'")
    if device_type == "cpu" and not interpreter:
        return ("on cpu the Triton kernel runs only in Triton's interpreter: set TRITON_INTERPRET=1 "
                "before triton is imported (e.g. in the shell), or use cuda or attn_impl='sdpa'")
    kind = "interpreter" if interpreter else "cuda"
    allowed = SUPPORTED_DTYPES[kind]
    if dtype not in allowed:
        where = "in Triton's CPU interpreter" if interpreter else "on cuda"
        why = (" (the interpreter has no bfloat16 arithmetic and would return wrong numbers)"
               if interpreter and dtype == torch.bfloat16 else "")
        return (f"dtype {dtype} is not supported {where}{why}; allowed: {_names(allowed)} — cast q, k, v "
                f"to one of these (float32 is always safe) or use attn_impl='sdpa'")
    if head_dim not in SUPPORTED_HEAD_DIMS:
        return (f"head_dim {head_dim} is not supported; allowed: {SUPPORTED_HEAD_DIMS} — pick d_head from "
                f"these (d_model = n_heads × d_head) or use attn_impl='sdpa'")
    return None
