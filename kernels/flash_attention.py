"""Fused attention in Triton, FlashAttention-2 style: forward, backward, autograd, limits.

Sources: FlashAttention-2 (Dao 2023, arXiv:2307.08691) for the algorithm and the backward's split
into a key-block pass (dK, dV) and a query-block pass (dQ); Triton's fused-attention tutorial
(06-fused-attention) for the causal fast path. Written for this project; docs/kernel.md explains it.

Forward: per block of queries, stream over key blocks with a running row max and normalizer
(online softmax, base 2); store O and LSE = m + log l. Backward: delta = rowsum(dO ∘ O); P is
recomputed from LSE, dS = P ∘ (dO Vᵀ − delta); dK, dV per key block, dQ per query block.
Fast path: each loop is split into a range with no masks (causal: the blocks before the diagonal)
and a masked range (the diagonal block, or the partial last block); EVEN_N (length a multiple of
both blocks) drops all bounds masks; fp16/bf16 tiles feed tensor cores with fp32 accumulators;
block sizes are autotuned among configs that fit the GPU's shared memory.
Runs compiled on CUDA, or on CPU in Triton's interpreter (TRITON_INTERPRET=1 before importing
triton). What runs where: ``kernels/limits.py``; tiles and autotuning: ``kernels/tuning.py``.
"""
import math

import torch
import triton
import triton.language as tl

from .limits import SUPPORTED_DTYPES, SUPPORTED_HEAD_DIMS, unsupported_reason  # noqa: F401 (re-exported)
from .tuning import (AUTOTUNE, DKDV_CONFIGS, DQ_CONFIGS, FWD_CONFIGS, GPU_TILES, INTERPRET,  # noqa: F401
                     _autotune, _even, _shared_memory_of, _smem_bytes)


# ---- shared @triton.jit helpers ---------------------------------------------------------------
@triton.jit
def _load_tile(base, idx, dims, s_idx, s_dim, N_CTX, MASKED: tl.constexpr):
    """(len(idx), HEAD_DIM) tile of rows ``idx``; rows ≥ N_CTX read as 0 only when MASKED."""
    ptrs = base + idx[:, None] * s_idx + dims[None, :] * s_dim
    if MASKED:
        tile = tl.load(ptrs, mask=(idx < N_CTX)[:, None], other=0.0)
    else:
        tile = tl.load(ptrs)
    return tile


@triton.jit
def _store_tile(base, idx, dims, s_idx, s_dim, value, N_CTX, MASKED: tl.constexpr):
    """Store a (len(idx), HEAD_DIM) tile into rows ``idx``, skipping rows ≥ N_CTX when MASKED."""
    ptrs = base + idx[:, None] * s_idx + dims[None, :] * s_dim
    if MASKED:
        tl.store(ptrs, value.to(base.dtype.element_ty), mask=(idx < N_CTX)[:, None])
    else:
        tl.store(ptrs, value.to(base.dtype.element_ty))


@triton.jit
def _load_kv(k_base, v_base, cols, dims, sks, skd, svs, svd, N_CTX, MASKED: tl.constexpr):
    return (_load_tile(k_base, cols, dims, sks, skd, N_CTX, MASKED),
            _load_tile(v_base, cols, dims, svs, svd, N_CTX, MASKED))


@triton.jit
def _load_query_side(q_base, do_base, lse_base, delta_base, rows, dims, sqs, sqd, sds, sdd, N_CTX,
                     MASKED: tl.constexpr):
    """The backward's per-query-block tiles: q, dO, and LSE, delta (rows ≥ N_CTX → 0)."""
    q = _load_tile(q_base, rows, dims, sqs, sqd, N_CTX, MASKED)
    do = _load_tile(do_base, rows, dims, sds, sdd, N_CTX, MASKED)
    if MASKED:
        lse = tl.load(lse_base + rows, mask=rows < N_CTX, other=0.0)
        delta = tl.load(delta_base + rows, mask=rows < N_CTX, other=0.0)
    else:
        lse = tl.load(lse_base + rows)
        delta = tl.load(delta_base + rows)
    return q, do, lse, delta


@triton.jit
def _p_and_ds(q, k, v, do, lse, delta, rows, cols, sm_scale, N_CTX, MASK_CAUSAL: tl.constexpr,
              MASK_BOUNDS: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr):
    """Recomputed probabilities P and score gradients dS for one (query, key) block pair."""
    qk = tl.dot(q, tl.trans(k), input_precision=PRECISION).to(ACC)
    p = tl.exp2(qk * (sm_scale * 1.4426950408889634) - lse[:, None] * 1.4426950408889634)
    if MASK_CAUSAL:
        p = tl.where(cols[None, :] <= rows[:, None], p, 0.0)
    if MASK_BOUNDS:
        p = tl.where((rows < N_CTX)[:, None] & (cols < N_CTX)[None, :], p, 0.0)
    dp = tl.dot(do, tl.trans(v), input_precision=PRECISION).to(ACC)
    return p, p * (dp - delta[:, None])


@triton.jit
def _split(start_m, N_CTX, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
           EVEN_N: tl.constexpr):
    """Key ranges of a query block starting at ``start_m``: [0, mid) needs no mask (causal: the
    keys before the diagonal block; else the whole key blocks) and [mid, end) the masks (the
    diagonal block; else the partial last key block, empty when EVEN_N)."""
    if CAUSAL:
        mid = start_m
        end = start_m + BLOCK_M if EVEN_N else tl.minimum(start_m + BLOCK_M, N_CTX)
    else:
        mid = N_CTX if EVEN_N else N_CTX // BLOCK_N * BLOCK_N
        end = N_CTX
    return mid, end


# ---- forward ----------------------------------------------------------------------------------
@triton.jit
def _fwd_inner(acc, l_i, m_i, q, k_base, v_base, sks, skd, svs, svd, rows, dims, lo, hi, qk_scale, N_CTX,
               BLOCK_N: tl.constexpr, MASK_CAUSAL: tl.constexpr, MASK_BOUNDS: tl.constexpr,
               PRECISION: tl.constexpr, ACC: tl.constexpr):
    for start_n in range(lo, hi, BLOCK_N):
        cols = tl.multiple_of(start_n, BLOCK_N) + tl.arange(0, BLOCK_N)
        k, v = _load_kv(k_base, v_base, cols, dims, sks, skd, svs, svd, N_CTX, MASK_BOUNDS)
        qk = tl.dot(q, tl.trans(k), input_precision=PRECISION).to(ACC) * qk_scale
        if MASK_CAUSAL:
            qk = tl.where(cols[None, :] <= rows[:, None], qk, float("-inf"))
        if MASK_BOUNDS:
            qk = tl.where((cols < N_CTX)[None, :], qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))  # finite: every row sees a key in its first block
        p = tl.exp2(qk - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@_autotune(FWD_CONFIGS, "fwd")
@triton.heuristics({"EVEN_N": _even})
@triton.jit(do_not_specialize=["H", "N_CTX"])  # no recompile per length: EVEN_N says enough
def _fwd_kernel(Q, K, V, O, LSE, sm_scale,
                sqb, sqh, sqs, sqd, skb, skh, sks, skd, svb, svh, svs, svd, sob, soh, sos, sod,
                H, N_CTX, HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, EVEN_N: tl.constexpr):
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1)
    b, h = (bh // H).to(tl.int64), (bh % H).to(tl.int64)
    rows = start_m + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, HEAD_DIM)
    q = _load_tile(Q + b * sqb + h * sqh, rows, dims, sqs, sqd, N_CTX, not EVEN_N)
    k_base, v_base = K + b * skb + h * skh, V + b * svb + h * svh
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=ACC)
    l_i = tl.zeros([BLOCK_M], dtype=ACC)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=ACC)
    qk_scale = sm_scale * 1.4426950408889634  # base 2: exp2 is the fast instruction
    mid, end = _split(start_m, N_CTX, BLOCK_M, BLOCK_N, CAUSAL, EVEN_N)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, k_base, v_base, sks, skd, svs, svd, rows, dims, 0, mid,
                               qk_scale, N_CTX, BLOCK_N, False, False, PRECISION, ACC)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, k_base, v_base, sks, skd, svs, svd, rows, dims, mid, end,
                               qk_scale, N_CTX, BLOCK_N, CAUSAL, not EVEN_N, PRECISION, ACC)
    _store_tile(O + b * sob + h * soh, rows, dims, sos, sod, acc / l_i[:, None], N_CTX, not EVEN_N)
    # natural-log LSE, (m + log2 l) · ln 2
    tl.store(LSE + bh * N_CTX + rows, (m_i + tl.log2(l_i)) * 0.6931471805599453, mask=rows < N_CTX)


# ---- backward ---------------------------------------------------------------------------------
@triton.jit(do_not_specialize=["H", "N_CTX"])  # no recompile per length: EVEN_N says enough
def _bwd_preprocess(O, DO, DELTA, sob, soh, sos, sod, sdb, sdh, sds, sdd, H, N_CTX,
                    HEAD_DIM: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    bh = tl.program_id(1)
    b, h = (bh // H).to(tl.int64), (bh % H).to(tl.int64)
    dims = tl.arange(0, HEAD_DIM)
    o = _load_tile(O + b * sob + h * soh, rows, dims, sos, sod, N_CTX, True)
    do = _load_tile(DO + b * sdb + h * sdh, rows, dims, sds, sdd, N_CTX, True)
    tl.store(DELTA + bh * N_CTX + rows, tl.sum(o.to(ACC) * do.to(ACC), 1), mask=rows < N_CTX)


@triton.jit
def _dkdv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base, sqs, sqd, sds, sdd, cols, dims, lo, hi,
                sm_scale, N_CTX, BLOCK_M: tl.constexpr, MASK_CAUSAL: tl.constexpr, MASK_BOUNDS: tl.constexpr,
                PRECISION: tl.constexpr, ACC: tl.constexpr):
    for start_m in range(lo, hi, BLOCK_M):
        rows = tl.multiple_of(start_m, BLOCK_M) + tl.arange(0, BLOCK_M)
        q, do, lse, delta = _load_query_side(q_base, do_base, lse_base, delta_base, rows, dims, sqs, sqd, sds, sdd,
                                             N_CTX, MASK_BOUNDS)
        p, ds = _p_and_ds(q, k, v, do, lse, delta, rows, cols, sm_scale, N_CTX, MASK_CAUSAL, MASK_BOUNDS,
                          PRECISION, ACC)
        dv = tl.dot(tl.trans(p.to(do.dtype)), do, dv, input_precision=PRECISION)
        dk = tl.dot(tl.trans(ds.to(q.dtype)), q, dk, input_precision=PRECISION)
    return dk, dv


@_autotune(DKDV_CONFIGS, "dkdv")
@triton.heuristics({"EVEN_N": _even})
@triton.jit(do_not_specialize=["H", "N_CTX"])  # no recompile per length: EVEN_N says enough
def _bwd_dkdv_kernel(Q, K, V, DO, LSE, DELTA, DK, DV, sm_scale,
                     sqb, sqh, sqs, sqd, skb, skh, sks, skd, svb, svh, svs, svd, sdb, sdh, sds, sdd,
                     H, N_CTX, HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, PRECISION: tl.constexpr,
                     ACC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, EVEN_N: tl.constexpr):
    """One program per key block: dV = Σ Pᵀ dO, dK = Σ dSᵀ Q · scale over query blocks."""
    start_n = tl.program_id(0) * BLOCK_N
    bh = tl.program_id(1)
    b, h = (bh // H).to(tl.int64), (bh % H).to(tl.int64)
    cols = start_n + tl.arange(0, BLOCK_N)
    dims = tl.arange(0, HEAD_DIM)
    k, v = _load_kv(K + b * skb + h * skh, V + b * svb + h * svh, cols, dims, sks, skd, svs, svd, N_CTX, not EVEN_N)
    q_base, do_base = Q + b * sqb + h * sqh, DO + b * sdb + h * sdh
    lse_base, delta_base = LSE + bh * N_CTX, DELTA + bh * N_CTX
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=ACC)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=ACC)
    lo = 0
    if CAUSAL:  # queries before this key block never see it; the diagonal ones see part of it
        hi = start_n + BLOCK_N if EVEN_N else tl.minimum(start_n + BLOCK_N, N_CTX)
        dk, dv = _dkdv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base, sqs, sqd, sds, sdd, cols, dims,
                             start_n, hi, sm_scale, N_CTX, BLOCK_M, True, not EVEN_N, PRECISION, ACC)
        lo = start_n + BLOCK_N
    # whole query blocks see the whole key block: no masks; then the partial last one, if any
    full = N_CTX if EVEN_N else lo + tl.maximum(N_CTX - lo, 0) // BLOCK_M * BLOCK_M
    dk, dv = _dkdv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base, sqs, sqd, sds, sdd, cols, dims,
                         lo, full, sm_scale, N_CTX, BLOCK_M, False, False, PRECISION, ACC)
    dk, dv = _dkdv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base, sqs, sqd, sds, sdd, cols, dims,
                         full, N_CTX, sm_scale, N_CTX, BLOCK_M, False, not EVEN_N, PRECISION, ACC)
    out = bh.to(tl.int64) * N_CTX * HEAD_DIM  # dk, dv, dq are allocated contiguous
    _store_tile(DK + out, cols, dims, HEAD_DIM, 1, dk * sm_scale, N_CTX, not EVEN_N)
    _store_tile(DV + out, cols, dims, HEAD_DIM, 1, dv, N_CTX, not EVEN_N)


@triton.jit
def _dq_inner(dq, q, do, lse, delta, k_base, v_base, sks, skd, svs, svd, rows, dims, lo, hi, sm_scale, N_CTX,
              BLOCK_N: tl.constexpr, MASK_CAUSAL: tl.constexpr, MASK_BOUNDS: tl.constexpr,
              PRECISION: tl.constexpr, ACC: tl.constexpr):
    for start_n in range(lo, hi, BLOCK_N):
        cols = tl.multiple_of(start_n, BLOCK_N) + tl.arange(0, BLOCK_N)
        k, v = _load_kv(k_base, v_base, cols, dims, sks, skd, svs, svd, N_CTX, MASK_BOUNDS)
        p, ds = _p_and_ds(q, k, v, do, lse, delta, rows, cols, sm_scale, N_CTX, MASK_CAUSAL, MASK_BOUNDS,
                          PRECISION, ACC)
        dq = tl.dot(ds.to(k.dtype), k, dq, input_precision=PRECISION)
    return dq


@_autotune(DQ_CONFIGS, "dq")
@triton.heuristics({"EVEN_N": _even})
@triton.jit(do_not_specialize=["H", "N_CTX"])  # no recompile per length: EVEN_N says enough
def _bwd_dq_kernel(Q, K, V, DO, LSE, DELTA, DQ, sm_scale,
                   sqb, sqh, sqs, sqd, skb, skh, sks, skd, svb, svh, svs, svd, sdb, sdh, sds, sdd,
                   H, N_CTX, HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, PRECISION: tl.constexpr,
                   ACC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, EVEN_N: tl.constexpr):
    """One program per query block: dQ = Σ dS K · scale over key blocks."""
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1)
    b, h = (bh // H).to(tl.int64), (bh % H).to(tl.int64)
    rows = start_m + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, HEAD_DIM)
    q, do, lse, delta = _load_query_side(Q + b * sqb + h * sqh, DO + b * sdb + h * sdh, LSE + bh * N_CTX,
                                         DELTA + bh * N_CTX, rows, dims, sqs, sqd, sds, sdd, N_CTX, not EVEN_N)
    k_base, v_base = K + b * skb + h * skh, V + b * svb + h * svh
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=ACC)
    mid, end = _split(start_m, N_CTX, BLOCK_M, BLOCK_N, CAUSAL, EVEN_N)
    dq = _dq_inner(dq, q, do, lse, delta, k_base, v_base, sks, skd, svs, svd, rows, dims, 0, mid, sm_scale,
                   N_CTX, BLOCK_N, False, False, PRECISION, ACC)
    dq = _dq_inner(dq, q, do, lse, delta, k_base, v_base, sks, skd, svs, svd, rows, dims, mid, end, sm_scale,
                   N_CTX, BLOCK_N, CAUSAL, not EVEN_N, PRECISION, ACC)
    _store_tile(DQ + bh.to(tl.int64) * N_CTX * HEAD_DIM, rows, dims, HEAD_DIM, 1, dq * sm_scale, N_CTX, not EVEN_N)


AUTOTUNED = {"fwd": _fwd_kernel, "dkdv": _bwd_dkdv_kernel, "dq": _bwd_dq_kernel}  # .best_config: last pick


# ---- autograd ---------------------------------------------------------------------------------
def _strides(t):
    return t.stride(0), t.stride(1), t.stride(2), t.stride(3)


def _meta(dtype, dim, causal):
    """Compile-time constants: exact IEEE products for fp32/fp64 (tf32 would lose ~3 digits;
    fp16/bf16 go to tensor cores whatever the setting) and float64 accumulation for float64
    inputs, so gradcheck can run in the interpreter."""
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
        block = 16 if INTERPRET else 128
        _bwd_preprocess[(triton.cdiv(seq, block), batch * heads)](
            o, do, delta, *_strides(o), *_strides(do), heads, seq, HEAD_DIM=dim, ACC=meta["ACC"], BLOCK=block)
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
    reason = unsupported_reason(q.shape[-1], q.dtype, q.device.type, INTERPRET)
    if reason:
        raise ValueError(reason)
    if 0 in q.shape:
        raise ValueError(f"q has an empty dimension, shape {tuple(q.shape)}; batch, heads and seq must be ≥ 1")
    if q.device.type == "cuda" and not INTERPRET:
        if q.dtype == torch.bfloat16 and torch.cuda.get_device_capability(q.device)[0] < 8:
            raise ValueError(f"bfloat16 needs a GPU of compute capability ≥ 8.0 (Ampere or newer); "
                             f"{torch.cuda.get_device_name(q.device)} is older: use float16")
        need = max(_smem_bytes(k, AUTOTUNED[k].configs[-1], q.shape[-1], q.element_size()) for k in AUTOTUNED)
        have = _shared_memory_of(q.device.index if q.device.index is not None else torch.cuda.current_device())
        if need > have:
            raise ValueError(f"{q.dtype} at head_dim {q.shape[-1]} needs ~{need // 1024} KiB of shared memory per "
                             f"block and {torch.cuda.get_device_name(q.device)} has {have // 1024} KiB: use "
                             f"float16/bfloat16, "
                             f"a smaller head_dim, or attn_impl='sdpa'")
    if sm_scale is not None and not (isinstance(sm_scale, (int, float)) and not isinstance(sm_scale, bool)
                                     and 0 < sm_scale < math.inf):
        raise ValueError(f"sm_scale must be a positive finite number or None for 1/sqrt(head_dim) "
                         f"(got {sm_scale!r})")


def flash_attention(q, k, v, causal: bool = True, sm_scale: float | None = None, return_lse: bool = False):
    """softmax(q kᵀ · sm_scale [causal mask]) v, fused (FlashAttention-2, Dao 2023).

    q, k, v: (batch, heads, seq, head_dim), one dtype and device, any strides; seq ≥ 1,
    head_dim in SUPPORTED_HEAD_DIMS, dtype in SUPPORTED_DTYPES["cuda"] (fp16/bf16/fp32) on CUDA
    or SUPPORTED_DTYPES["interpreter"] (fp16/fp32/fp64) under TRITON_INTERPRET=1.
    causal: query i sees keys 0..i. sm_scale: default 1/sqrt(head_dim).
    Returns ``o`` (shape and dtype of q, contiguous) or ``(o, lse)`` with lse the float32
    natural-log log-sum-exp of each query row's scaled scores, (batch, heads, seq).
    Differentiable through ``o`` (dq, dk, dv in q's dtype).
    Raises ValueError, before any launch, for bad input (message says what and the fix).
    """
    _validate(q, k, v, sm_scale)
    scale = float(sm_scale) if sm_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    o, lse = _FlashAttention.apply(q, k, v, bool(causal), scale)
    return (o, lse) if return_lse else o
