"""Launch configurations of the fused attention kernels: execution mode, tiles, autotuning.

``INTERPRET`` records whether Triton builds interpreted functions in this process (set
TRITON_INTERPRET=1 before importing triton); ``GPU_TILES`` lists each kernel's tiles in order of
preference; ``_autotune`` wraps a kernel in ``triton.autotune`` with a shared-memory pruner
(``_smem_bytes``). ``MINITF_FLASH_AUTOTUNE=0`` takes the first tile that fits instead of timing.
"""
import functools
import inspect
import os

import torch
import triton

try:  # the knob that made @triton.jit build interpreted functions in this process
    from triton import knobs as _knobs

    INTERPRET = bool(_knobs.runtime.interpret)
except ImportError:  # triton < 3.4
    INTERPRET = os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


AUTOTUNE = os.environ.get("MINITF_FLASH_AUTOTUNE", "1") != "0"  # "0": first config that fits


def _configs(tiles, interp):
    """GPU configs (BLOCK_M queries, BLOCK_N keys, warps, stages) in order of preference; in the
    interpreter one small config (it is slow per program, and num_warps/stages mean nothing)."""
    if INTERPRET:
        return [triton.Config({"BLOCK_M": interp[0], "BLOCK_N": interp[1]}, num_warps=1, num_stages=1)]
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s) for m, n, w, s in tiles]


# fwd and dq loop over key blocks inside a query block (BLOCK_M % BLOCK_N == 0); dkdv loops over
# query blocks inside a key block (BLOCK_N % BLOCK_M == 0): the diagonal is whole inner blocks.
GPU_TILES = {  # kernel: [(BLOCK_M, BLOCK_N, num_warps, num_stages), ...], preferred first; the
    # last (small) serves fp32, and anything no other tile fits
    "fwd": [(128, 64, 4, 3), (128, 128, 8, 3), (64, 64, 4, 4), (64, 32, 4, 2)],
    "dkdv": [(32, 128, 4, 3), (64, 64, 4, 3), (64, 128, 8, 2), (32, 64, 4, 1)],
    "dq": [(128, 32, 4, 3), (64, 64, 4, 3), (128, 64, 8, 2), (64, 32, 4, 1)],
}
FWD_CONFIGS = _configs(GPU_TILES["fwd"], (32, 16))
DKDV_CONFIGS = _configs(GPU_TILES["dkdv"], (16, 32))
DQ_CONFIGS = _configs(GPU_TILES["dq"], (32, 16))


def _smem_bytes(kernel, cfg, head_dim, elt):
    """Shared memory bound: the resident tile(s), max(num_stages, 2) copies of the streamed tiles
    (K, V for fwd/dq; Q, dO for dkdv) and two (BLOCK_M, BLOCK_N) scratch tiles. It was above what
    Triton 3.9 allocated on sm_90 for every tile, dtype and head_dim 64/128 compiled ahead of time
    (python bench/attention.py --compile-only 90), up to 3x above for fp16 forward: a big tile may
    be pruned needlessly, but none kept that does not fit."""
    m, n, s = cfg.kwargs["BLOCK_M"], cfg.kwargs["BLOCK_N"], max(cfg.num_stages, 2)
    resident, streamed = {"fwd": (m, 2 * n), "dq": (2 * m, 2 * n), "dkdv": (2 * n, 2 * m)}[kernel]
    return elt * (head_dim * (resident + s * streamed) + 2 * m * n)


def _shared_memory_limit():
    return _shared_memory_of(torch.cuda.current_device())


@functools.lru_cache(maxsize=None)
def _shared_memory_of(device_index):
    try:
        return triton.runtime.driver.active.utils.get_device_properties(device_index)["max_shared_mem"]
    except Exception:  # unknown driver API: assume the smallest of recent GPUs (sm_86)
        return 101376


def _pruner(kernel):
    """Keep the configs whose estimate fits the GPU's shared memory, else the last (smallest);
    fp32 always takes the last: its exact products run on CUDA cores, where big tiles only add
    registers and compile time (tens of seconds per variant). Only the first if AUTOTUNE is off."""
    def prune(configs, named_args, **kwargs):
        limit, elt = _shared_memory_limit(), named_args["Q"].element_size()
        fits = [c for c in configs[:-1] if elt < 4 and _smem_bytes(kernel, c, kwargs["HEAD_DIM"], elt) <= limit]
        fits = fits or configs[-1:]
        return fits if AUTOTUNE else fits[:1]
    return {"early_config_prune": prune}


def _even(args):
    return args["N_CTX"] % args["BLOCK_M"] == 0 and args["N_CTX"] % args["BLOCK_N"] == 0


def _autotune(configs, kernel):
    """triton.autotune keyed on length, head_dim, causality (it adds the dtypes), short timings
    (each config is compiled and timed once per new key: compile time dominates tuning)."""
    kwargs = dict(configs=configs, key=["N_CTX", "HEAD_DIM", "CAUSAL"], prune_configs_by=_pruner(kernel))
    if "do_bench" in inspect.signature(triton.autotune).parameters:  # triton ≥ 3.2
        kwargs["do_bench"] = lambda fn, quantiles: triton.testing.do_bench(fn, warmup=5, rep=20, quantiles=quantiles)
    return triton.autotune(**kwargs)
