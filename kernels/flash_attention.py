"""Fused causal attention in Triton, FlashAttention-2 style: forward, backward, autograd.

Forward (one program per block of BLOCK_M queries of one (batch, head)):
  stream over key blocks, keep a running row max m and normalizer l (online softmax), rescale
  the output accumulator when the max grows; never materialize the (seq × seq) scores.
  Store O = acc / l and the row log-sum-exp LSE = m + log l (so exact patterns can be
  recomputed later as exp(QKᵀ·scale − LSE)).
Backward (Dao 2023): delta = rowsum(dO ∘ O); one pass over query blocks per key block
  accumulates dK, dV; one pass over key blocks per query block accumulates dQ. P is
  recomputed from LSE, so memory stays linear in sequence length.

Runs on CUDA, or on CPU under Triton's interpreter (TRITON_INTERPRET=1 set before
importing triton) — how the tests run on machines without a GPU.
"""
import math
import os

import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
HEAD_DIMS = (16, 32, 64, 128)
LOG2E = 1.4426950408889634


def _configs(pairs):
    if INTERPRET:  # the interpreter is slow per program: one small config, no autotuning
        return [triton.Config({"BLOCK_M": 16, "BLOCK_N": 16}, num_warps=1, num_stages=1)]
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s) for m, n, w, s in pairs]


FWD_CONFIGS = _configs([(128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (64, 64, 4, 4), (128, 32, 4, 4)])
BWD_CONFIGS = _configs([(64, 64, 4, 3), (32, 128, 4, 3), (128, 64, 8, 3), (64, 128, 8, 3)])


@triton.autotune(configs=FWD_CONFIGS, key=["N_CTX", "HEAD_DIM", "CAUSAL"])
@triton.jit
def _fwd_kernel(Q, K, V, O, LSE, sm_scale,
                sqb, sqh, sqs, sqd, skb, skh, sks, skd, svb, svh, svs, svd, sob, soh, sos, sod,
                H, N_CTX, HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    start_m = tl.program_id(0)
    bh = tl.program_id(1)
    b, h = bh // H, bh % H
    rows = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    dims = tl.arange(0, HEAD_DIM)
    row_ok = rows < N_CTX
    q = tl.load(Q + b * sqb + h * sqh + rows[:, None] * sqs + dims[None, :] * sqd,
                mask=row_ok[:, None], other=0.0)
    k_base = K + b * skb + h * skh
    v_base = V + b * svb + h * svh
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=ACC)
    l_i = tl.zeros([BLOCK_M], dtype=ACC)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=ACC)
    qk_scale = sm_scale * 1.4426950408889634  # work in base 2: exp2 is the fast instruction
    hi = tl.minimum((start_m + 1) * BLOCK_M, N_CTX) if CAUSAL else N_CTX
    for start_n in range(0, hi, BLOCK_N):
        kcols = start_n + cols
        col_ok = kcols < N_CTX
        k = tl.load(k_base + kcols[None, :] * sks + dims[:, None] * skd, mask=col_ok[None, :], other=0.0)
        qk = tl.dot(q, k, input_precision=PRECISION).to(ACC) * qk_scale
        keep = col_ok[None, :]
        if CAUSAL:
            keep = keep & (kcols[None, :] <= rows[:, None])
        qk = tl.where(keep, qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        p = tl.exp2(qk - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_base + kcols[:, None] * svs + dims[None, :] * svd, mask=col_ok[:, None], other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION).to(ACC)
        m_i = m_new
    acc = acc / l_i[:, None]
    tl.store(O + b * sob + h * soh + rows[:, None] * sos + dims[None, :] * sod,
             acc.to(O.dtype.element_ty), mask=row_ok[:, None])
    # natural-log LSE: (m + log2 l) · ln 2
    tl.store(LSE + bh * N_CTX + rows, (m_i + tl.log2(l_i)) * 0.6931471805599453, mask=row_ok)


@triton.jit
def _bwd_preprocess(O, DO, DELTA, sob, soh, sos, sod, sdb, sdh, sds, sdd, H, N_CTX,
                    HEAD_DIM: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    bh = tl.program_id(1)
    b, h = bh // H, bh % H
    dims = tl.arange(0, HEAD_DIM)
    ok = rows < N_CTX
    o = tl.load(O + b * sob + h * soh + rows[:, None] * sos + dims[None, :] * sod, mask=ok[:, None], other=0.0)
    do = tl.load(DO + b * sdb + h * sdh + rows[:, None] * sds + dims[None, :] * sdd, mask=ok[:, None], other=0.0)
    tl.store(DELTA + bh * N_CTX + rows, tl.sum(o.to(ACC) * do.to(ACC), 1), mask=ok)


@triton.autotune(configs=BWD_CONFIGS, key=["N_CTX", "HEAD_DIM", "CAUSAL"])
@triton.jit
def _bwd_dkdv_kernel(Q, K, V, DO, LSE, DELTA, DK, DV, sm_scale,
                     sqb, sqh, sqs, sqd, skb, skh, sks, skd, svb, svh, svs, svd, sdb, sdh, sds, sdd,
                     H, N_CTX, HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """One program per key block: dV = Σ Pᵀ dO, dK = Σ dSᵀ Q · scale over query blocks."""
    start_n = tl.program_id(0) * BLOCK_N
    bh = tl.program_id(1)
    b, h = bh // H, bh % H
    kcols = start_n + tl.arange(0, BLOCK_N)
    dims = tl.arange(0, HEAD_DIM)
    col_ok = kcols < N_CTX
    k = tl.load(K + b * skb + h * skh + kcols[:, None] * sks + dims[None, :] * skd, mask=col_ok[:, None], other=0.0)
    v = tl.load(V + b * svb + h * svh + kcols[:, None] * svs + dims[None, :] * svd, mask=col_ok[:, None], other=0.0)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=ACC)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=ACC)
    # causal: queries before this key block never see it
    lo = (start_n // BLOCK_M) * BLOCK_M if CAUSAL else 0
    for start_m in range(lo, N_CTX, BLOCK_M):
        rows = start_m + tl.arange(0, BLOCK_M)
        row_ok = rows < N_CTX
        q = tl.load(Q + b * sqb + h * sqh + rows[:, None] * sqs + dims[None, :] * sqd, mask=row_ok[:, None], other=0.0)
        do = tl.load(DO + b * sdb + h * sdh + rows[:, None] * sds + dims[None, :] * sdd, mask=row_ok[:, None], other=0.0)
        lse = tl.load(LSE + bh * N_CTX + rows, mask=row_ok, other=0.0)
        delta = tl.load(DELTA + bh * N_CTX + rows, mask=row_ok, other=0.0)
        qk = tl.dot(q, tl.trans(k), input_precision=PRECISION).to(ACC) * sm_scale
        keep = row_ok[:, None] & col_ok[None, :]
        if CAUSAL:
            keep = keep & (kcols[None, :] <= rows[:, None])
        p = tl.where(keep, tl.exp(qk - lse[:, None]), 0.0)  # (BLOCK_M, BLOCK_N)
        dv += tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=PRECISION).to(ACC)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION).to(ACC)
        ds = p * (dp - delta[:, None])
        dk += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=PRECISION).to(ACC)
    dk = dk * sm_scale
    out = bh * N_CTX * HEAD_DIM + kcols[:, None] * HEAD_DIM + dims[None, :]
    tl.store(DK + out, dk.to(DK.dtype.element_ty), mask=col_ok[:, None])
    tl.store(DV + out, dv.to(DV.dtype.element_ty), mask=col_ok[:, None])


@triton.autotune(configs=BWD_CONFIGS, key=["N_CTX", "HEAD_DIM", "CAUSAL"])
@triton.jit
def _bwd_dq_kernel(Q, K, V, DO, LSE, DELTA, DQ, sm_scale,
                   sqb, sqh, sqs, sqd, skb, skh, sks, skd, svb, svh, svs, svd, sdb, sdh, sds, sdd,
                   H, N_CTX, HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """One program per query block: dQ = Σ dS K · scale over key blocks."""
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1)
    b, h = bh // H, bh % H
    rows = start_m + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, HEAD_DIM)
    row_ok = rows < N_CTX
    q = tl.load(Q + b * sqb + h * sqh + rows[:, None] * sqs + dims[None, :] * sqd, mask=row_ok[:, None], other=0.0)
    do = tl.load(DO + b * sdb + h * sdh + rows[:, None] * sds + dims[None, :] * sdd, mask=row_ok[:, None], other=0.0)
    lse = tl.load(LSE + bh * N_CTX + rows, mask=row_ok, other=0.0)
    delta = tl.load(DELTA + bh * N_CTX + rows, mask=row_ok, other=0.0)
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=ACC)
    hi = tl.minimum(start_m + BLOCK_M, N_CTX) if CAUSAL else N_CTX
    for start_n in range(0, hi, BLOCK_N):
        kcols = start_n + tl.arange(0, BLOCK_N)
        col_ok = kcols < N_CTX
        k = tl.load(K + b * skb + h * skh + kcols[:, None] * sks + dims[None, :] * skd, mask=col_ok[:, None], other=0.0)
        v = tl.load(V + b * svb + h * svh + kcols[:, None] * svs + dims[None, :] * svd, mask=col_ok[:, None], other=0.0)
        qk = tl.dot(q, tl.trans(k), input_precision=PRECISION).to(ACC) * sm_scale
        keep = row_ok[:, None] & col_ok[None, :]
        if CAUSAL:
            keep = keep & (kcols[None, :] <= rows[:, None])
        p = tl.where(keep, tl.exp(qk - lse[:, None]), 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION).to(ACC)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION).to(ACC)
    out = bh * N_CTX * HEAD_DIM + rows[:, None] * HEAD_DIM + dims[None, :]
    tl.store(DQ + out, (dq * sm_scale).to(DQ.dtype.element_ty), mask=row_ok[:, None])


def _strides(t):
    return t.stride(0), t.stride(1), t.stride(2), t.stride(3)


def _meta(dtype, dim, causal):
    """Compile-time constants: exact IEEE products for fp32/fp64 inputs (tf32 would lose ~3
    digits; fp16/bf16 ignore the setting) and float64 accumulation for float64 inputs, so
    gradcheck can run in the interpreter."""
    return dict(HEAD_DIM=dim, CAUSAL=causal,
                PRECISION="ieee" if dtype in (torch.float32, torch.float64) else None,
                ACC=tl.float64 if dtype == torch.float64 else tl.float32)


def _acc_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


class _FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal, sm_scale):
        batch, heads, seq, dim = q.shape
        o = torch.empty((batch, heads, seq, dim), device=q.device, dtype=q.dtype)
        lse = torch.empty((batch, heads, seq), device=q.device, dtype=_acc_dtype(q.dtype))
        _fwd_kernel[lambda m: (triton.cdiv(seq, m["BLOCK_M"]), batch * heads)](
            q, k, v, o, lse, sm_scale, *_strides(q), *_strides(k), *_strides(v), *_strides(o),
            heads, seq, **_meta(q.dtype, dim, causal))
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.causal, ctx.sm_scale = causal, sm_scale
        lse_out = lse.float()
        ctx.mark_non_differentiable(lse_out)  # gradients flow through o only
        return o, lse_out

    @staticmethod
    def backward(ctx, do, dlse):
        q, k, v, o, lse = ctx.saved_tensors
        batch, heads, seq, dim = q.shape
        delta = torch.empty_like(lse)
        meta = _meta(q.dtype, dim, ctx.causal)
        _bwd_preprocess[(triton.cdiv(seq, 16), batch * heads)](
            o, do, delta, *_strides(o), *_strides(do), heads, seq, HEAD_DIM=dim, ACC=meta["ACC"], BLOCK=16)
        dq, dk, dv = (torch.empty((batch, heads, seq, dim), device=q.device, dtype=q.dtype) for _ in range(3))
        args = (ctx.sm_scale, *_strides(q), *_strides(k), *_strides(v), *_strides(do), heads, seq)
        _bwd_dkdv_kernel[lambda m: (triton.cdiv(seq, m["BLOCK_N"]), batch * heads)](
            q, k, v, do, lse, delta, dk, dv, *args, **meta)
        _bwd_dq_kernel[lambda m: (triton.cdiv(seq, m["BLOCK_M"]), batch * heads)](
            q, k, v, do, lse, delta, dq, *args, **meta)
        return dq, dk, dv, None, None


def _validate(q, k, v, sm_scale):
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor (got {type(t).__name__})")
        if t.dim() != 4:
            raise ValueError(f"{name} must have rank 4 (batch, heads, seq, head_dim); got shape {tuple(t.shape)}")
    for name, t in (("k", k), ("v", v)):
        if t.shape != q.shape:
            raise ValueError(f"{name} shape {tuple(t.shape)} must equal q shape {tuple(q.shape)}")
        if t.dtype != q.dtype:
            raise ValueError(f"{name} dtype {t.dtype} must equal q dtype {q.dtype}")
        if t.device != q.device:
            raise ValueError(f"{name} is on {t.device} but q is on {q.device}; put q, k, v on one device")
    allowed = [torch.float16, torch.bfloat16, torch.float32] + ([torch.float64] if q.device.type == "cpu" else [])
    if q.dtype not in allowed:
        raise ValueError(f"q, k, v dtype {q.dtype} is not supported on {q.device.type}; "
                         f"allowed: {', '.join(str(d) for d in allowed)}")
    if q.shape[-1] not in HEAD_DIMS:
        raise ValueError(f"head_dim {q.shape[-1]} is not supported; allowed: {HEAD_DIMS}")
    if q.device.type == "cpu" and not INTERPRET:
        raise ValueError("q is on the CPU, where the Triton kernel runs only in the interpreter: set "
                         "TRITON_INTERPRET=1 before importing triton, or move q, k, v to CUDA")
    if q.device.type not in ("cpu", "cuda"):
        raise ValueError(f"q is on {q.device.type}; the kernel runs on cuda (or cpu in the interpreter)")
    if sm_scale is not None and not (isinstance(sm_scale, (int, float)) and sm_scale > 0):
        raise ValueError(f"sm_scale must be a positive number or None (got {sm_scale!r})")


def flash_attention(q, k, v, causal: bool = True, sm_scale: float | None = None, return_lse: bool = False):
    """softmax(q kᵀ · sm_scale [causal mask]) v for (batch, heads, seq, head_dim) tensors.

    Returns ``o`` (like q) or ``(o, lse)`` with lse the float32 log-sum-exp of each query
    row's scaled scores, (batch, heads, seq). Differentiable through ``o``.
    """
    _validate(q, k, v, sm_scale)
    scale = float(sm_scale) if sm_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    o, lse = _FlashAttention.apply(q, k, v, bool(causal), scale)
    return (o, lse) if return_lse else o
