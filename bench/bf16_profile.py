"""Where a bf16 training step's time goes on this CPU, and how much keeping activations in bf16
would buy.

For each config (bench/train_step.py's shapes), one process profiles minitf's training step three
ways with ``torch.profiler`` (CPU self time per operator, summed over ``--steps`` steps after a
warm-up):

* ``fp32``: the shipped default;
* ``bf16_autocast``: ``precision=bf16`` as the trainer runs it (autocast forward, fp32 weights,
  loss reduction, gradients and AdamW);
* ``bf16_pure``: the same model cast to bf16 as a whole (weights, activations, gradients and
  optimizer state all bf16; not a training mode minitf offers, since bf16 weights lose small
  updates) — the bound on what keeping activations in bf16 between ops could reach.

Operator self times are grouped into matmul (mm, addmm, bmm, linear's kernels), attention (SDPA
and its flash/math kernels), casts (``aten::to`` / ``_to_copy`` / ``copy_``), optimizer
(``_foreach_*`` / ``adamw``), elementwise & norms (the rest of aten's pointwise and reduction
ops) and other. Prints a table per config and writes bench/results/bf16_profile-cpu.json with
tokens/s of each mode (unprofiled, median of ``--rounds``) and the grouped times in ms per step.

    python bench/bf16_profile.py [--configs M,L] [--steps 6] [--rounds 3]
"""
import argparse
import os
import statistics
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from train_step import CONFIGS, random_batches, step_ours, step_ours_bf16  # noqa: E402

from minitf.config import ModelConfig, TrainConfig  # noqa: E402
from minitf.environment import bf16_matrix_units  # noqa: E402
from minitf.fileio import atomic_write_json  # noqa: E402
from minitf.model import Transformer  # noqa: E402
from minitf.trainer import keep_freed_memory, make_optimizer  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
GROUPS = (("attention", ("scaled_dot_product", "flash_attention", "_efficient_attention", "attention")),
          ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "mkldnn", "onednn")),
          ("casts", ("aten::to", "aten::_to_copy", "aten::copy_", "aten::_autocast")),
          ("optimizer", ("_foreach", "adamw", "aten::_fused_adamw")),
          ("elementwise & norms", ("aten::",)))


def group_of(name: str) -> str:
    """The group of an operator name (first match in ``GROUPS``; 'other' for non-aten names)."""
    for group, needles in GROUPS:
        if any(n in name for n in needles):
            return group
    return "other"


def build(name: str, mode: str):
    layers, d, heads, ctx, vocab, batch, d_mlp = CONFIGS[name]
    torch.manual_seed(0)
    model = Transformer(ModelConfig(n_layers=layers, d_model=d, n_heads=heads, d_head=d // heads, d_mlp=d_mlp,
                                    vocab_size=vocab, n_ctx=ctx, attn_impl="sdpa"))
    if mode == "bf16_pure":
        model = model.to(torch.bfloat16)
    opt = make_optimizer(model, TrainConfig(lr=1e-3))
    fn = step_ours_bf16 if mode == "bf16_autocast" else step_ours
    return model, opt, fn, (vocab, batch, ctx)


def measure(name: str, mode: str, steps: int, rounds: int) -> dict:
    """Tokens/s (median over rounds, unprofiled) and grouped self time (ms per step, profiled)."""
    model, opt, fn, (vocab, batch, ctx) = build(name, mode)
    batches = random_batches(vocab, batch, ctx, steps, torch.Generator().manual_seed(1))
    for b in batches[:2]:  # warm-up (oneDNN picks its kernels on the first calls)
        fn(model, opt, b)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for b in batches:
            fn(model, opt, b)
        times.append((time.perf_counter() - start) / steps)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for b in batches:
            fn(model, opt, b)
    grouped = {}
    for event in prof.key_averages():
        g = group_of(event.key)
        grouped[g] = grouped.get(g, 0.0) + event.self_cpu_time_total / 1000 / steps
    return {"tokens_per_s": batch * ctx / statistics.median(times), "ms_per_step": statistics.median(times) * 1000,
            "self_ms_per_step": dict(sorted(grouped.items(), key=lambda kv: -kv[1]))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default="M,L", help=f"comma list from {', '.join(CONFIGS)}")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    names = [n for n in args.configs.split(",") if n]
    if not names or any(n not in CONFIGS for n in names):
        parser.error(f"--configs takes a comma list from {', '.join(CONFIGS)} (got {args.configs!r})")
    keep_freed_memory()
    results = {"threads": torch.get_num_threads(), "torch": torch.__version__, "bf16_units": bf16_matrix_units()}
    for name in names:
        rows = {mode: measure(name, mode, args.steps, args.rounds) for mode in ("fp32", "bf16_autocast", "bf16_pure")}
        base = rows["fp32"]["tokens_per_s"]
        for r in rows.values():
            r["speedup_over_fp32"] = r["tokens_per_s"] / base
        results[name] = rows
        groups = sorted({g for r in rows.values() for g in r["self_ms_per_step"]},
                        key=lambda g: -rows["bf16_autocast"]["self_ms_per_step"].get(g, 0.0))
        print(f"\n{name}: ms per step by operator group (self CPU time, profiled)")
        print(f"{'group':<22}" + "".join(f"{m:>15}" for m in rows))
        for g in groups:
            print(f"{g:<22}" + "".join(f"{r['self_ms_per_step'].get(g, 0.0):>15.1f}" for r in rows.values()))
        print(f"{'tokens/s (unprofiled)':<22}" + "".join(f"{r['tokens_per_s']:>15,.0f}" for r in rows.values()))
        print(f"{'÷ fp32':<22}" + "".join(f"{r['speedup_over_fp32']:>15.2f}" for r in rows.values()), flush=True)
    if not args.no_write:
        os.makedirs(RESULTS, exist_ok=True)
        atomic_write_json(os.path.join(RESULTS, "bf16_profile-cpu.json"), results)  # the project's one strict JSON writer
        print("wrote bench/results/bf16_profile-cpu.json")


if __name__ == "__main__":
    main()
