"""The Triton kernel vs a float64 reference, on the device conftest.py chose: CPU in Triton's
interpreter, or compiled on CUDA when a GPU is present (then also long sequences, bf16).

Tolerances. float32 inputs ~N(0, 1), short sequences: forward output and lse within 2e-5
absolute, gradients within 1e-4 absolute (they sum seq-many float32 products; measured errors
~1e-6). Low precision and long sequences: every output's max error against float64 must be
≤ 3 × the error of plain attention computed in the input's dtype (same inputs, same device) +
4 ulp of the reference's magnitude — the kernel may not be less accurate than the textbook
computation in its own precision. float64: torch.autograd.gradcheck at its defaults.
"""
import math

import pytest
import torch
import triton

import minitf_kernels.flash_attention as fa
from minitf_kernels.flash_attention import SUPPORTED_DTYPES, flash_attention, unsupported_reason
from minitf.attention import pattern_from_lse

MODE = "interpreter" if fa.INTERPRET else "cuda"
LOW_PRECISION = [d for d in (torch.float16, torch.bfloat16) if d in SUPPORTED_DTYPES[MODE]]
cuda_only = pytest.mark.skipif(MODE != "cuda", reason="compiled kernel on a CUDA GPU only")


def reference(q, k, v, causal, scale=None, do=None, dtype=torch.float64, chunk=1024):
    """Attention and its gradients computed explicitly in ``dtype``, ``chunk`` query rows at a
    time (memory linear in seq): returns o, lse, pattern (None if chunked) and, given ``do``,
    (dq, dk, dv) — the float64 ground truth, or the textbook computation in a low precision."""
    q, k, v = (t.detach().to(dtype) for t in (q, k, v))
    n, scale = q.shape[-2], scale or 1 / math.sqrt(q.shape[-1])
    outs, lses, dqs, pattern = [], [], [], None
    dk, dv = torch.zeros_like(k), torch.zeros_like(v)
    for i in range(0, n, chunk):
        s = (q[..., i:i + chunk, :] @ k.transpose(-1, -2)) * scale
        if causal:
            rows = torch.arange(i, min(i + chunk, n), device=q.device)[:, None]
            s = s.masked_fill(torch.arange(n, device=q.device)[None, :] > rows, float("-inf"))
        p = torch.softmax(s, -1)
        outs.append(p @ v)
        lses.append(torch.logsumexp(s.float() if dtype != torch.float64 else s, -1).to(dtype))
        pattern = p if n <= chunk else None
        if do is not None:
            d = do[..., i:i + chunk, :].to(dtype)
            ds = p * (d @ v.transpose(-1, -2) - (d * outs[-1]).sum(-1, keepdim=True))
            dqs.append(ds @ k * scale)
            dk += ds.transpose(-1, -2) @ q[..., i:i + chunk, :] * scale
            dv += p.transpose(-1, -2) @ d
    o, lse = torch.cat(outs, -2), torch.cat(lses, -1)
    return (o, lse, pattern) if do is None else (o, lse, (torch.cat(dqs, -2), dk, dv))


def assert_as_accurate_as_plain(name, got, ref64, plain):
    err = (got.double() - ref64).abs().max().item()
    base = (plain.double() - ref64).abs().max().item()
    floor = 4 * torch.finfo(plain.dtype).eps * ref64.abs().max().item()
    assert err <= 3 * base + floor, (f"{name}: max error {err:.3g} > 3 × plain {plain.dtype} error {base:.3g} "
                                     f"+ {floor:.3g}")


def check_against_reference(q, k, v, causal):
    """Forward, lse and dq/dk/dv of the kernel vs float64, judged against plain attention in q's dtype."""
    o, lse = flash_attention(q, k, v, causal=causal, return_lse=True)
    do = torch.randn_like(o)
    grads = torch.autograd.grad(o, (q, k, v), do)
    o64, lse64, g64 = reference(q, k, v, causal, do=do)
    o_lp, lse_lp, g_lp = reference(q, k, v, causal, do=do, dtype=q.dtype)
    assert o.dtype == q.dtype and lse.dtype == torch.float32 and all(g.dtype == q.dtype for g in grads)
    for name, got, r, plain in [("o", o, o64, o_lp), ("lse", lse, lse64, lse_lp),
                                *zip(("dq", "dk", "dv"), grads, g64, g_lp)]:
        assert torch.isfinite(got).all(), name
        assert_as_accurate_as_plain(name, got, r, plain)


def leaf(*shape, dtype=torch.float32, device="cpu"):
    return torch.randn(*shape, dtype=dtype, device=device).requires_grad_()


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("seq", [1, 7, 16, 33, 64, 100])
@pytest.mark.parametrize("head_dim", [16, 32, 64])
def test_forward_backward_match_float64_reference(seq, head_dim, causal, kernel_device):
    q, k, v = (leaf(1, 2, seq, head_dim, device=kernel_device) for _ in range(3))
    o, lse = flash_attention(q, k, v, causal=causal, return_lse=True)
    do = torch.randn_like(o)
    ref_o, ref_lse, ref_grads = reference(q, k, v, causal, do=do)
    assert o.dtype == torch.float32 and lse.dtype == torch.float32 and lse.shape == (1, 2, seq)
    torch.testing.assert_close(o.double(), ref_o, atol=2e-5, rtol=0)
    torch.testing.assert_close(lse.double(), ref_lse, atol=2e-5, rtol=0)
    grads = torch.autograd.grad(o, (q, k, v), do)
    for name, g, r in zip("qkv", grads, ref_grads):
        torch.testing.assert_close(g.double(), r, atol=1e-4, rtol=0, msg=lambda m: f"d{name}: {m}")


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
def test_low_precision_as_accurate_as_plain_attention(dtype, causal, kernel_device):
    # seq 80: full blocks and a partial one for every block size used; head_dim 32
    q, k, v = (leaf(2, 2, 80, 32, dtype=dtype, device=kernel_device) for _ in range(3))
    check_against_reference(q, k, v, causal)


@pytest.mark.parametrize("index", range(max(len(t) for t in fa.GPU_TILES.values())))
def test_every_gpu_block_config_matches_reference(index, monkeypatch, kernel_device):
    """Each GPU tile config (what the autotuner may pick for fp16/bf16), causal and not, on a
    length that is a multiple of every block and one that is not (alternating with the index, so
    every flag combination meets two configs): in the interpreter on CPU (the logic), compiled on
    CUDA (the code) in fp16, the dtype these tiles are for (the interpreter's numpy fp16 is slow,
    so it checks the logic in fp32). Judged like the low-precision tests."""
    for kernel, tiles in fa.GPU_TILES.items():
        m, n, w, s = tiles[index % len(tiles)]
        cfg = triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s)
        monkeypatch.setattr(fa.AUTOTUNED[kernel], "configs", [cfg])
    for seq, causal in ((256, True), (200, False)) if index % 2 == 0 else ((200, True), (256, False)):
        dtype = torch.float16 if MODE == "cuda" else torch.float32
        q, k, v = (leaf(1, 1, seq, 16, dtype=dtype, device=kernel_device) for _ in range(3))
        check_against_reference(q, k, v, causal)


def test_patterns_recomputed_from_lse_equal_naive_softmax(kernel_device):
    q, k, v = (torch.randn(2, 2, 20, 16, device=kernel_device) for _ in range(3))
    _, lse = flash_attention(q, k, v, return_lse=True)
    _, _, ref_pattern = reference(q, k, v, True)
    torch.testing.assert_close(pattern_from_lse(q, k, lse).double(), ref_pattern, atol=1e-5, rtol=0)


def test_custom_scale_and_non_contiguous_inputs(kernel_device):
    base = torch.randn(3, 24, 3, 2, 32, device=kernel_device)  # (batch, seq, qkv, heads, d) → views
    q, k, v = (base[:, :, i].transpose(1, 2).requires_grad_() for i in range(3))
    assert not q.is_contiguous()
    o = flash_attention(q, k, v, causal=True, sm_scale=0.3)
    do = torch.randn(3, 24, 2, 32, device=kernel_device).transpose(1, 2)  # non-contiguous upstream gradient
    ref_o, _, ref_grads = reference(q, k, v, True, scale=0.3, do=do)
    torch.testing.assert_close(o.double(), ref_o, atol=2e-5, rtol=0)
    for a, b in zip(torch.autograd.grad(o, (q, k, v), do), ref_grads):
        torch.testing.assert_close(a.double(), b, atol=1e-4, rtol=0)


@pytest.mark.skipif(torch.float64 not in SUPPORTED_DTYPES[MODE], reason="float64 runs in the interpreter only")
@pytest.mark.parametrize("causal", [True, False])
def test_gradcheck_float64(causal, kernel_device):
    q, k, v = (leaf(1, 2, 19, 16, dtype=torch.float64, device=kernel_device) for _ in range(3))
    assert torch.autograd.gradcheck(lambda a, b, c: flash_attention(a, b, c, causal=causal), (q, k, v),
                                    fast_mode=True)


def test_batch_heads_are_independent(kernel_device):
    q, k, v = (torch.randn(3, 5, 17, 16, device=kernel_device) for _ in range(3))
    full = flash_attention(q, k, v)
    one = flash_attention(q[1:2, 3:4], k[1:2, 3:4], v[1:2, 3:4])
    torch.testing.assert_close(full[1:2, 3:4], one, atol=1e-6, rtol=0)


# ---- limits and bad input -----------------------------------------------------------------------
# What each execution mode must accept (True) or refuse (False), stated independently of the code:
# the interpreter computes bfloat16 wrongly (numpy has no bf16), so it must refuse it.
DTYPE_EXPECTED = {
    "interpreter": {torch.float16: True, torch.float32: True, torch.float64: True, torch.bfloat16: False,
                    torch.int32: False, torch.int64: False, torch.complex64: False},
    "cuda": {torch.float16: True, torch.bfloat16: True, torch.float32: True, torch.float64: False,
             torch.int32: False, torch.complex64: False},
}


@pytest.mark.parametrize("dtype", list(DTYPE_EXPECTED[MODE]), ids=str)
def test_each_dtype_is_computed_right_or_refused_before_launch(dtype, kernel_device):
    q, k, v = (torch.randn(1, 2, 24, 16, device=kernel_device).to(dtype) for _ in range(3))
    if DTYPE_EXPECTED[MODE][dtype]:
        o = flash_attention(q, k, v)
        o_lp, _, _ = reference(q, k, v, True, dtype=torch.float32 if dtype == torch.float64 else dtype)
        assert_as_accurate_as_plain("o", o, reference(q, k, v, True)[0], o_lp)
    else:
        with pytest.raises(ValueError, match=rf"dtype {dtype} is not supported .*allowed: .* — cast"):
            flash_attention(q, k, v)


@pytest.mark.parametrize("case,expected", [
    ((64, torch.float16, "cuda", False), None),
    ((128, torch.bfloat16, "cuda", False), None),
    ((16, torch.float32, "cuda", False), None),
    ((32, torch.float64, "cpu", True), None),
    ((64, torch.float16, "cpu", True), None),
    ((64, torch.bfloat16, "cpu", True), "dtype torch.bfloat16 is not supported in Triton's CPU interpreter"),
    ((64, torch.float64, "cuda", False), "dtype torch.float64 is not supported on cuda; allowed: float16, "
                                         "bfloat16, float32"),
    ((24, torch.float32, "cuda", False), "head_dim 24 is not supported; allowed: (16, 32, 64, 128)"),
    ((256, torch.float16, "cuda", False), "head_dim 256 is not supported"),
    ((64, torch.float32, "cpu", False), "set TRITON_INTERPRET=1 before triton is imported"),
    ((64, torch.float32, "mps", False), "device 'mps' cannot run the Triton kernel"),
])
def test_unsupported_reason_names_the_problem_and_a_fix(case, expected):
    reason = unsupported_reason(*case)
    if expected is None:
        assert reason is None
    else:
        assert expected in reason and "\n" not in reason
        assert "attn_impl='sdpa'" in reason  # every reason names a fix; the other backend always works


@pytest.mark.parametrize("make,needle", [
    (lambda d: (torch.randn(2, 8, 16, device=d),) * 3, "q must have rank 4"),
    (lambda d: (torch.randn(1, 1, 8, 16, device=d), torch.randn(1, 1, 9, 16, device=d),
                torch.randn(1, 1, 8, 16, device=d)), "k shape"),
    (lambda d: (torch.randn(1, 1, 8, 16, device=d), torch.randn(1, 1, 8, 16, device=d).half(),
                torch.randn(1, 1, 8, 16, device=d)), "k dtype"),
    (lambda d: (torch.randn(1, 1, 8, 24, device=d),) * 3, "head_dim 24 is not supported; allowed: (16, 32, 64, 128)"),
    (lambda d: (torch.ones(1, 1, 8, 16, dtype=torch.int32, device=d),) * 3, "dtype torch.int32 is not supported"),
    (lambda d: (torch.randn(1, 1, 8, 16, device="meta"),) * 3, "device 'meta' cannot run the Triton kernel"),
    (lambda d: (torch.randn(1, 1, 0, 16, device=d),) * 3, "q has an empty dimension"),
    (lambda d: ([[1.0]], torch.randn(1, 1, 8, 16, device=d), torch.randn(1, 1, 8, 16, device=d)),
     "q must be a torch.Tensor"),
])
def test_bad_input_raises_value_error(make, needle, kernel_device):
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        flash_attention(*make(kernel_device))


@pytest.mark.parametrize("scale", [-1.0, 0, float("inf"), float("nan"), True, "0.5"], ids=repr)
def test_bad_scale_raises(scale, kernel_device):
    q = torch.randn(1, 1, 4, 16, device=kernel_device)
    with pytest.raises(ValueError, match="sm_scale must be a positive finite number or None"):
        flash_attention(q, q, q, sm_scale=scale)


# ---- CUDA only: long sequences, every dtype, causal and not, strided layouts --------------------
LONG = [  # (seq, head_dim, dtype, causal, layout); 4095/3001/5000 are multiples of no block size
    (2048, 64, torch.float16, True, "bhsd"), (4095, 128, torch.float16, True, "bhsd"),
    (8192, 128, torch.float16, False, "bshd"), (16384, 64, torch.float16, True, "bshd"),
    (2048, 128, torch.bfloat16, False, "bhsd"), (4096, 64, torch.bfloat16, True, "bshd"),
    (16384, 128, torch.bfloat16, True, "bhsd"), (3001, 128, torch.float32, True, "bshd"),
    (5000, 64, torch.float32, False, "bhsd"), (16384, 64, torch.float32, True, "bhsd"),
]


@cuda_only
@pytest.mark.parametrize("seq,head_dim,dtype,causal,layout", LONG, ids=lambda x: str(x).replace("torch.", ""))
def test_long_sequences_against_float64(seq, head_dim, dtype, causal, layout, kernel_device):
    if layout == "bshd":  # (batch, seq, heads, dim) storage seen as (batch, heads, seq, dim) views
        q, k, v = (torch.randn(1, seq, 2, head_dim, device=kernel_device, dtype=dtype).transpose(1, 2)
                   .requires_grad_() for _ in range(3))
        assert not q.is_contiguous()
    else:
        q, k, v = (leaf(1, 2, seq, head_dim, dtype=dtype, device=kernel_device) for _ in range(3))
    check_against_reference(q, k, v, causal)


def test_benchmark_runs_on_cpu():
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, os.path.join(root, "bench", "attention.py"), "--dry-run"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "numerics OK" in r.stdout and "need a CUDA GPU" in r.stdout
