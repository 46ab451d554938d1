"""Benchmark the Triton fused attention kernel against SDPA's flash backend and the naive path.

On CUDA: forward, backward and forward+backward TFLOP/s for seq 512…8192, head_dim 64/128,
fp16/bf16, batch·seq = 16k tokens and heads·head_dim = 2048 (as in the Triton tutorial),
timed with triton.testing.do_bench. Causal FLOPs count half of dense; backward = 2.5× forward.
Writes bench/results/attention-<gpu>.json and .md.

On CPU: runs the kernel in Triton's interpreter at a tiny size, checks it against the
reference, and says that GPU figures need a GPU (exit 0).

    python bench/attention.py [--quick]
"""
import argparse
import json
import math
import os
import sys

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # must precede the first import of triton

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from kernels.flash_attention import flash_attention  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
# dense bf16/fp16 tensor-core peaks (TFLOP/s, no sparsity) for the "% of peak" column
PEAK_TFLOPS = {"H100 80GB HBM3": 989.0, "H100 PCIe": 756.0, "H200": 989.0, "A100": 312.0}


def naive(q, k, v, causal):
    s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if causal:
        n = q.shape[-2]
        s = s.masked_fill(torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    return torch.softmax(s.float(), -1).to(q.dtype) @ v


def sdpa_flash(q, k, v, causal):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)


PROVIDERS = {"triton": lambda q, k, v, c: flash_attention(q, k, v, causal=c), "sdpa_flash": sdpa_flash,
             "naive": naive}


def flops(batch, heads, seq, dim, causal, mode):
    fwd = 4.0 * batch * heads * seq * seq * dim * (0.5 if causal else 1.0)
    return {"fwd": fwd, "bwd": 2.5 * fwd, "fwd+bwd": 3.5 * fwd}[mode]


def time_ms(fn, q, k, v, causal, mode):
    from triton.testing import do_bench

    if mode == "fwd":
        return do_bench(lambda: fn(q, k, v, causal))
    o = fn(q, k, v, causal)
    do = torch.randn_like(o)
    if mode == "bwd":
        return do_bench(lambda: o.backward(do, retain_graph=True), grad_to_none=[q, k, v])

    def step():
        fn(q, k, v, causal).backward(do)

    return do_bench(step, grad_to_none=[q, k, v])


def run_cuda(quick: bool):
    name = torch.cuda.get_device_name()
    peak = next((p for key, p in PEAK_TFLOPS.items() if key in name), None)
    seqs = [512, 2048] if quick else [512, 1024, 2048, 4096, 8192]
    rows = []
    for dtype in (torch.float16, torch.bfloat16):
        for dim in (64, 128):
            for seq in seqs:
                batch, heads = max(1, 16384 // seq), 2048 // dim
                q, k, v = (torch.randn(batch, heads, seq, dim, device="cuda", dtype=dtype, requires_grad=True)
                           for _ in range(3))
                ref = naive(q.float(), k.float(), v.float(), True) if seq <= 2048 else None
                if ref is not None:  # numerics first: a fast wrong kernel is worthless
                    err = (flash_attention(q, k, v).float() - ref).abs().max().item()
                    assert err < 2e-2, f"kernel disagrees with the reference: max error {err}"
                for mode in ("fwd", "bwd", "fwd+bwd"):
                    row = {"dtype": str(dtype).split(".")[-1], "head_dim": dim, "seq": seq, "batch": batch,
                           "heads": heads, "causal": True, "mode": mode}
                    for provider, fn in PROVIDERS.items():
                        try:
                            ms = time_ms(fn, q, k, v, True, mode)
                            row[f"{provider}_tflops"] = flops(batch, heads, seq, dim, True, mode) / ms * 1e-9
                        except torch.cuda.OutOfMemoryError:
                            row[f"{provider}_tflops"] = None
                            torch.cuda.empty_cache()
                    row["triton_vs_sdpa"] = (row["triton_tflops"] / row["sdpa_flash_tflops"]
                                             if row.get("sdpa_flash_tflops") else None)
                    if peak:
                        row["triton_pct_peak"] = 100 * row["triton_tflops"] / peak
                    rows.append(row)
                    print(_line(row), flush=True)
    os.makedirs(RESULTS, exist_ok=True)
    slug = name.replace(" ", "-")
    meta = {"gpu": name, "peak_tflops": peak, "torch": torch.__version__, "triton": _triton_version()}
    with open(os.path.join(RESULTS, f"attention-{slug}.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=2)
    with open(os.path.join(RESULTS, f"attention-{slug}.md"), "w") as f:
        f.write(markdown(meta, rows))
    print(f"wrote bench/results/attention-{slug}.json and .md")


def _triton_version():
    import triton

    return triton.__version__


def _fmt(x, spec=".1f"):
    return "-" if x is None else format(x, spec)


def _line(row):
    return (f"{row['dtype']:>8} d{row['head_dim']:<4} seq {row['seq']:>5} {row['mode']:>8}: "
            f"triton {_fmt(row['triton_tflops'])}  sdpa_flash {_fmt(row['sdpa_flash_tflops'])}  "
            f"naive {_fmt(row['naive_tflops'])} TFLOP/s  ratio {_fmt(row['triton_vs_sdpa'], '.2f')}")


def markdown(meta, rows):
    head = ("| dtype | head_dim | seq | mode | triton TFLOP/s | sdpa flash TFLOP/s | naive TFLOP/s | "
            "triton / sdpa |\n|---|---|---|---|---|---|---|---|\n")
    body = "".join(f"| {r['dtype']} | {r['head_dim']} | {r['seq']} | {r['mode']} | {_fmt(r['triton_tflops'])} | "
                   f"{_fmt(r['sdpa_flash_tflops'])} | {_fmt(r['naive_tflops'])} | {_fmt(r['triton_vs_sdpa'], '.2f')} |\n"
                   for r in rows)
    return f"# attention benchmark on {meta['gpu']}\n\ntorch {meta['torch']}, triton {meta['triton']}, causal\n\n{head}{body}"


def run_cpu():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 40, 32, requires_grad=True) for _ in range(3))
    o = flash_attention(q, k, v)
    ref = naive(q.double(), k.double(), v.double(), True)
    err = (o.double() - ref).abs().max().item()
    grads = torch.autograd.grad(o.sum(), (q, k, v))
    ref_grads = torch.autograd.grad(ref.sum(), (q, k, v))
    gerr = max((a.double() - b.double()).abs().max().item() for a, b in zip(grads, ref_grads))
    print("CPU (Triton interpreter), batch 1, heads 2, seq 40, head_dim 32, causal:")
    print(f"  max |o - reference| = {err:.2e}; max gradient error = {gerr:.2e}")
    if err > 1e-4 or gerr > 1e-3:
        print("  kernel disagrees with the reference")
        return 1
    print("  numerics OK. Throughput figures need a CUDA GPU: run this script on one.")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer sequence lengths")
    args = parser.parse_args()
    if torch.cuda.is_available():
        run_cuda(args.quick)
        return 0
    return run_cpu()


if __name__ == "__main__":
    sys.exit(main())
