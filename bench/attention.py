"""Benchmark the Triton fused attention kernel against SDPA's flash backend and the naive path.

On CUDA: forward, backward and forward+backward TFLOP/s for seq 512…16384, head_dim 64/128,
fp16/bf16, causal and not; batch·seq = 16k tokens and heads·head_dim = 2048 (as in the Triton
tutorial); timed with triton.testing.do_bench. Causal FLOPs count half of dense; backward =
2.5 × forward (Dao 2023). Each row gives triton ÷ SDPA flash and triton's % of the GPU's dense
fp16/bf16 tensor-core peak (PEAK_TFLOPS; "unknown" for GPUs not in the table). Before timing a
shape, the kernel's output and gradients are checked against SDPA's (a fast wrong kernel is
worthless: a failed check is reported and the exit status is 1). Rows are written as they come
to <out>/attention-<gpu>.json and .md (default out: bench/results/), so a time limit
(--budget-s, or being killed) still leaves every finished row.

With --compile-only ARCH (any machine, no GPU needed): compiles the GPU variants for sm_ARCH with
Triton's bundled ptxas and compares each tile's shared memory with the estimate the autotuner
prunes by; --quick compiles one fp16 variant per kernel.

On CPU, or with --dry-run: runs the kernel in Triton's interpreter at tiny sizes against a
float64 reference (fp32 and fp16, causal and not), writes attention-cpu-interpreter.json/.md
when --out is given, says that GPU figures need a GPU, and exits 0 if the numerics hold.

    python bench/attention.py [--out DIR] [--quick] [--budget-s S] [--dry-run | --compile-only ARCH]
"""
import argparse
import json
import math
import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results")
# dense fp16/bf16 tensor-core peaks with fp32 accumulation, TFLOP/s, no sparsity (vendor data
# sheets); matched in order against torch.cuda.get_device_name()
PEAK_TFLOPS = [("H100 PCIe", 756.0), ("H100 80GB HBM3", 989.0), ("H100 SXM", 989.0), ("H200", 989.0),
               ("A100", 312.0), ("V100", 125.0)]
MODES = ("fwd", "bwd", "fwd+bwd")


def peak_tflops(gpu_name: str) -> float | None:
    """The dense fp16/bf16 peak of ``gpu_name`` from PEAK_TFLOPS, or None (unknown)."""
    return next((p for key, p in PEAK_TFLOPS if key in gpu_name), None)


def flops(batch, heads, seq, dim, causal, mode):
    fwd = 4.0 * batch * heads * seq * seq * dim * (0.5 if causal else 1.0)
    return {"fwd": fwd, "bwd": 2.5 * fwd, "fwd+bwd": 3.5 * fwd}[mode]


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


def triton_attention(q, k, v, causal):
    from minitf_kernels.flash_attention import flash_attention

    return flash_attention(q, k, v, causal=causal)


PROVIDERS = {"triton": triton_attention, "sdpa_flash": sdpa_flash, "naive": naive}


def naive_fits(batch, heads, seq, elt):
    """The naive path holds scores, fp32 softmax and its gradients: ~5 fp32 (b, h, n, n) tensors."""
    free, _ = torch.cuda.mem_get_info()
    return batch * heads * seq * seq * (4 * 5 + elt) < 0.7 * free


def time_ms(fn, q, k, v, causal, mode):
    from triton.testing import do_bench

    if mode == "fwd":
        return do_bench(lambda: fn(q, k, v, causal), warmup=10, rep=40)
    o = fn(q, k, v, causal)
    do = torch.randn_like(o)
    if mode == "bwd":
        return do_bench(lambda: o.backward(do, retain_graph=True), warmup=10, rep=40, grad_to_none=[q, k, v])
    return do_bench(lambda: fn(q, k, v, causal).backward(do), warmup=10, rep=40, grad_to_none=[q, k, v])


def check_against_sdpa(q, k, v, causal):
    """Max error of triton's o, dq, dk, dv relative to SDPA flash's largest value (< 2e-2 passes)."""
    do = torch.randn_like(q)
    outs = {}
    for name in ("triton", "sdpa_flash"):
        o = PROVIDERS[name](q, k, v, causal)
        outs[name] = [o, *torch.autograd.grad(o, (q, k, v), do)]
    return max(((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-6)).item()
               for a, b in zip(outs["triton"], outs["sdpa_flash"]))


def shapes(quick):
    """Every (dtype, head_dim, causal) group at seq 1k, 4k, 16k first (that pass compiles and
    autotunes everything), then the other lengths, so a time budget cuts the least informative rows."""
    passes = [[1024, 4096, 16384]] if quick else [[1024, 4096, 16384], [512, 2048, 8192]]
    for seqs in passes:
        for dtype in (torch.float16, torch.bfloat16):
            for causal in (True, False):
                for dim in (128, 64):
                    for seq in seqs:
                        yield dtype, dim, causal, seq


def _compile_group(group):
    """Worker: one fwd+bwd per (dtype, head_dim, causal) makes the autotuner compile every config
    of that group into Triton's on-disk cache (lengths here are multiples of every block)."""
    sys.path.insert(0, ROOT)
    dtype, dim, causal = getattr(torch, group[0]), group[1], group[2]
    try:
        q, k, v = (torch.randn(1, 2, 1024, dim, device="cuda", dtype=dtype, requires_grad=True) for _ in range(3))
        triton_attention(q, k, v, causal).sum().backward()
        torch.cuda.synchronize()
        return f"compiled {group}"
    except Exception as e:  # the timing loop will meet it again and report it there
        return f"compiling {group} failed: {type(e).__name__}: {str(e)[:200]}"


def precompile(groups, workers):
    """Compile the groups in parallel processes: compiling is single-threaded and dominates the
    first call of each group, while the timing below needs the GPU to itself."""
    import concurrent.futures
    import multiprocessing

    t0 = time.time()
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for message in pool.map(_compile_group, groups):
            print(message, flush=True)
    return time.time() - t0


def run_cuda(out_dir, quick, budget_s, workers):
    import triton

    from minitf_kernels.flash_attention import AUTOTUNED

    name = torch.cuda.get_device_name()
    peak = peak_tflops(name)
    meta = {"gpu": name, "peak_tflops": peak if peak else "unknown", "torch": torch.__version__,
            "triton": triton.__version__, "cuda": torch.version.cuda, "budget_s": budget_s,
            "complete": False, "sizing": "batch = max(1, 16384 // seq), heads = 2048 // head_dim"}
    start = time.time()
    groups = sorted({(str(d).split(".")[-1], dim, causal) for d, dim, causal, _ in shapes(quick)})
    if workers > 1:
        meta["precompile_s"] = round(precompile(groups, workers), 1)
    rows, failures = [], 0
    slug = name.replace(" ", "-").replace("/", "-")
    todo = list(shapes(quick))
    for i, (dtype, dim, causal, seq) in enumerate(todo):
        if budget_s and time.time() - start > budget_s:
            meta["stopped"] = f"time budget {budget_s} s reached after {i} of {len(todo)} shapes"
            print(meta["stopped"], flush=True)
            break
        batch, heads = max(1, 16384 // seq), 2048 // dim
        q, k, v = (torch.randn(batch, heads, seq, dim, device="cuda", dtype=dtype, requires_grad=True)
                   for _ in range(3))
        err = check_against_sdpa(q, k, v, causal)
        if err > 2e-2:
            failures += 1
            print(f"NUMERICS FAILED {dtype} d{dim} seq {seq} causal={causal}: rel. error {err:.3g} vs SDPA", flush=True)
        for mode in MODES:
            row = {"dtype": str(dtype).split(".")[-1], "head_dim": dim, "seq": seq, "batch": batch, "heads": heads,
                   "causal": causal, "mode": mode, "rel_err_vs_sdpa": err, "numerics_ok": err <= 2e-2}
            for provider, fn in PROVIDERS.items():
                row[f"{provider}_tflops"] = None
                if provider == "naive" and not naive_fits(batch, heads, seq, q.element_size()):
                    continue
                try:
                    ms = time_ms(fn, q, k, v, causal, mode)
                    row[f"{provider}_tflops"] = flops(batch, heads, seq, dim, causal, mode) / ms * 1e-9
                except (torch.cuda.OutOfMemoryError, RuntimeError) as e:  # OOM, or no SDPA flash kernel
                    row[f"{provider}_note"] = str(e).splitlines()[0][:120]
                    torch.cuda.empty_cache()
            t, s = row["triton_tflops"], row["sdpa_flash_tflops"]
            row["triton_vs_sdpa"] = t / s if t and s else None
            row["triton_pct_peak"] = 100 * t / peak if t and peak else None
            row["triton_configs"] = {k: str(getattr(a, "best_config", None)) for k, a in AUTOTUNED.items()}
            rows.append(row)
            print(_line(row), flush=True)
        del q, k, v
        torch.cuda.empty_cache()
        write(out_dir, f"attention-{slug}", meta, rows)
    else:
        meta["complete"] = True
    write(out_dir, f"attention-{slug}", meta, rows)
    print(f"wrote {os.path.join(out_dir, f'attention-{slug}')}.json and .md")
    return 1 if failures else 0


def write(out_dir, stem, meta, rows):
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, stem + ".json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=2)
    with open(os.path.join(out_dir, stem + ".md"), "w") as f:
        f.write(markdown(meta, rows))


def _fmt(x, spec=".1f"):
    return "-" if x is None else format(x, spec)


def _line(row):
    return (f"{row['dtype']:>8} d{row['head_dim']:<4} seq {row['seq']:>5} {'causal' if row['causal'] else 'full':>6} "
            f"{row['mode']:>8}: triton {_fmt(row['triton_tflops'])}  sdpa_flash {_fmt(row['sdpa_flash_tflops'])}  "
            f"naive {_fmt(row['naive_tflops'])} TFLOP/s  ratio {_fmt(row['triton_vs_sdpa'], '.2f')}  "
            f"peak {_fmt(row['triton_pct_peak'])}%")


def markdown(meta, rows):
    head = ("| dtype | head_dim | seq | causal | mode | triton TFLOP/s | sdpa flash TFLOP/s | naive TFLOP/s | "
            "triton / sdpa | triton % of peak |\n|---|---|---|---|---|---|---|---|---|---|\n")
    body = "".join(f"| {r['dtype']} | {r['head_dim']} | {r['seq']} | {'yes' if r['causal'] else 'no'} | {r['mode']} | "
                   f"{_fmt(r['triton_tflops'])} | {_fmt(r['sdpa_flash_tflops'])} | {_fmt(r['naive_tflops'])} | "
                   f"{_fmt(r['triton_vs_sdpa'], '.2f')} | {_fmt(r['triton_pct_peak'])} |\n" for r in rows)
    notes = "".join(f"- {key}: {meta[key]}\n" for key in meta if key != "gpu")
    return f"# attention benchmark on {meta['gpu']}\n\n{notes}\n{head}{body}"


def run_interpreter(out_dir):
    """Tiny-size numerics in Triton's interpreter vs float64 (what a CPU can check)."""
    from minitf_kernels.flash_attention import flash_attention

    torch.manual_seed(0)
    rows, ok = [], True
    tolerance = {torch.float32: (1e-4, 1e-3), torch.float16: (5e-3, 2e-2)}  # (output, gradients)
    print("CPU (Triton interpreter), batch 1, heads 2, seq 40, head_dim 32:")
    for dtype, causal in ((torch.float32, True), (torch.float32, False), (torch.float16, True)):
        q, k, v = (torch.randn(1, 2, 40, 32, dtype=dtype, requires_grad=True) for _ in range(3))
        o = flash_attention(q, k, v, causal=causal)
        q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
        ref = naive(q64, k64, v64, causal)
        err = (o.double() - ref).abs().max().item()
        grads = torch.autograd.grad(o.float().sum(), (q, k, v))
        gerr = max((a.double() - b).abs().max().item()
                   for a, b in zip(grads, torch.autograd.grad(ref.sum(), (q64, k64, v64))))
        good = err <= tolerance[dtype][0] and gerr <= tolerance[dtype][1]
        ok &= good
        name = str(dtype).split(".")[-1]
        print(f"  {name:>8} causal={causal!s:<5} max |o - reference| = {err:.2e}; max gradient error = {gerr:.2e}"
              f"{'' if good else '  <- exceeds ' + str(tolerance[dtype])}")
        rows.append({"dtype": name, "causal": causal, "seq": 40, "head_dim": 32, "max_err_o": err,
                     "max_err_grad": gerr, "tolerance": tolerance[dtype], "ok": good})
    if out_dir:
        meta = {"gpu": "none (CPU, Triton interpreter)", "torch": torch.__version__, "numerics_ok": ok,
                "note": "throughput needs a CUDA GPU; rows are numerics checks only"}
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "attention-cpu-interpreter.json"), "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)
        with open(os.path.join(out_dir, "attention-cpu-interpreter.md"), "w") as f:
            f.write("# attention numerics in the Triton interpreter (no GPU)\n\n" +
                    "".join(f"- {r['dtype']} causal={r['causal']}: o error {r['max_err_o']:.2e}, gradient "
                            f"error {r['max_err_grad']:.2e} ({'ok' if r['ok'] else 'FAILED'})\n" for r in rows))
    if not ok:
        print("  kernel disagrees with the reference")
        return 1
    print("  numerics OK. Throughput figures need a CUDA GPU: run this script on one.")
    return 0


def run_compile_only(out_dir, arch, quick):
    """Compile the kernels' GPU variants for sm_<arch> on this machine, GPU or not (Triton ships
    ptxas): codegen errors the interpreter cannot see, and the shared memory each tile really
    takes vs the pruning estimate. Causal with a partial last block (every code path)."""
    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    import minitf_kernels.flash_attention as fa

    rows, bad = [], 0
    for kernel, tiles in fa.GPU_TILES.items():
        fn = fa.AUTOTUNED[kernel]
        while not isinstance(fn, triton.runtime.jit.JITFunction):
            fn = fn.fn
        for (dtype, elt, prec), dim in ((d, h) for d in (("fp16", 2, None), ("bf16", 2, None), ("fp32", 4, "ieee"))
                                        for h in (64, 128)):
            for m, n, w, st in tiles if elt == 2 else tiles[-1:]:  # fp32 always takes the last tile
                if quick and (dtype != "fp16" or dim != 64 or (m, n, w, st) != tiles[0]):
                    continue
                consts = dict(HEAD_DIM=dim, CAUSAL=True, PRECISION=prec, ACC=tl.float32, BLOCK_M=m, BLOCK_N=n,
                              EVEN_N=False)
                sig = {a: "constexpr" if a in consts else "fp32" if a == "sm_scale"
                       else "*fp32" if a in ("LSE", "DELTA") else f"*{dtype}" if a.isupper() and a not in ("H", "N_CTX")
                       else "i32" for a in fn.arg_names}
                est = fa._smem_bytes(kernel, triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=st),
                                     dim, elt)
                row = {"kernel": kernel, "tile": [m, n, w, st], "dtype": dtype, "head_dim": dim, "estimate": est}
                t0 = time.time()
                try:
                    compiled = triton.compile(ASTSource(fn, sig, consts), target=GPUTarget("cuda", arch, 32),
                                              options=dict(num_warps=w, num_stages=st))
                    row.update(shared=compiled.metadata.shared, ok=True)
                    row["estimate_covers"] = row["shared"] <= est
                except Exception as e:  # report every variant, do not stop at the first
                    row.update(shared=None, ok=False, error=f"{type(e).__name__}: {str(e)[:300]}")
                row["compile_s"] = round(time.time() - t0, 1)
                bad += not (row["ok"] and row["estimate_covers"])
                rows.append(row)
                print(f"{kernel:5} {m:3}x{n:<3} w{w} s{st} {dtype} d{dim:<3}: "
                      + (f"shared {row['shared']} B, estimate {est} B" if row["ok"] else row["error"])
                      + f" ({row['compile_s']} s)", flush=True)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, f"compile-sm{arch}.json"), "w") as f:
            json.dump({"meta": {"arch": arch, "triton": triton.__version__, "quick": quick}, "rows": rows}, f, indent=2)
    print(f"{len(rows) - bad} of {len(rows)} variants compiled for sm_{arch} within the shared-memory estimate")
    return 1 if bad else 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=None, help="folder for the JSON and markdown (GPU default: bench/results)")
    parser.add_argument("--quick", action="store_true", help="seq 1024, 4096, 16384 only")
    parser.add_argument("--budget-s", type=float, default=0, help="start no new shape after this many seconds")
    parser.add_argument("--compile-workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="processes that compile the kernel variants before timing (1: none)")
    parser.add_argument("--dry-run", action="store_true", help="interpreter numerics at tiny sizes, even on a GPU")
    parser.add_argument("--compile-only", type=int, metavar="ARCH", default=None,
                        help="compile the GPU variants for sm_ARCH (e.g. 90, 80) without running them; no GPU needed")
    args = parser.parse_args(argv)
    if args.compile_only:
        os.environ.pop("TRITON_INTERPRET", None)  # compiled kernels, before the first import of triton
        sys.path.insert(0, ROOT)
        return run_compile_only(args.out, args.compile_only, args.quick)
    on_gpu = torch.cuda.is_available() and not args.dry_run
    if not on_gpu:
        os.environ["TRITON_INTERPRET"] = "1"  # must precede the first import of triton
    sys.path.insert(0, ROOT)
    if on_gpu:
        return run_cuda(args.out or RESULTS, args.quick, args.budget_s, args.compile_workers)
    return run_interpreter(args.out)


if __name__ == "__main__":
    sys.exit(main())
