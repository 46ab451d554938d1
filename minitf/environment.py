"""What a run's numbers depend on besides its configs: recorded in every run's config.json.

Same seed + same configs + same thread count on the same CPU and library build ⇒ the same
numbers (docs/reliability.md); this is the record that lets a reader check the "same".
"""
import os
import platform
import subprocess
import sys

import numpy as np
import torch


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bf16_matrix_units() -> str | None:
    """The CPU's bf16 matrix instructions that oneDNN uses under bf16 autocast, as named in
    ``/proc/cpuinfo`` flags: ``"amx_bf16"`` (AMX tiles, recent server x86), else ``"avx512_bf16"``,
    else None (no such units, or not Linux: bf16 then runs emulated, slower than fp32)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return None
    return next((name for name in ("amx_bf16", "avx512_bf16") if name in flags), None)


def minitf_commit() -> dict:
    """``{"commit": sha or None, "dirty": bool or None}`` of the checkout minitf runs from (None
    for an installed wheel, or without git)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        sha = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip() != ""
        return {"commit": sha, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def environment() -> dict:
    """``{"torch", "numpy", "python", "intra_op_threads", "inter_op_threads", "omp_num_threads",
    "cpu", "bf16_units", "platform", "cuda", "commit", "dirty"}``: the versions, thread counts
    (torch's, and the OMP_NUM_THREADS environment variable or None), CPU model and its bf16 matrix
    units (``bf16_matrix_units``) and minitf commit of this process."""
    return {"torch": torch.__version__, "numpy": np.__version__, "python": sys.version.split()[0],
            "intra_op_threads": torch.get_num_threads(), "inter_op_threads": torch.get_num_interop_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "cpu": cpu_model(),
            "bf16_units": bf16_matrix_units(),
            "platform": platform.platform(), "cuda": torch.version.cuda if torch.cuda.is_available() else None,
            **minitf_commit()}
