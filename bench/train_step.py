"""CPU training-step benchmark: minitf vs a plain reference GPT with the same shapes.

The reference is the textbook implementation a user would write (fused QKV linear, SDPA,
GELU MLP, pre-LN, AdamW), run as a plain PyTorch script. Each model trains in fresh child
processes on the same batches; the processes alternate (minitf, reference, minitf again with
glibc's default allocator) ``--repeats`` times and the median rate of each is reported, so
machine noise hits all alike. minitf runs as shipped, i.e. with
``minitf.trainer.keep_freed_memory``; the third run separates that runtime setting from the
step's arithmetic (``same_allocator_ratio``, ``allocator_speedup``). Prints tokens/s, their
ratio (minitf ÷ reference), FLOPs per token, achieved GFLOP/s and peak RSS. minitf also runs with
``precision=bf16`` (the trainer's bf16 autocast, fp32 weights and loss) in the same alternation:
``bf16_ratio`` = minitf bf16 ÷ reference fp32 (what a nanoGPT user runs on CPU), ``bf16_speedup`` =
minitf bf16 ÷ minitf fp32; bench/bf16_profile.py says where a bf16 step's time goes. The K = 8 ensemble
is timed in this process against sequential single steps, beside two bounds on any ensemble:
one model at 8x the batch, and one single-threaded process per core. Writes
bench/results/train_step-cpu.json.

    python bench/train_step.py [--rounds 5] [--steps 20] [--repeats 3] [--configs S,M,L]

Config L (4 layers, d_model 256, ctx 256) takes a step of ~0.5 s: it runs ``--steps`` ÷ 4 steps.
"""
import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from minitf.config import ModelConfig, TrainConfig  # noqa: E402
from minitf.data import Batch  # noqa: E402
from minitf.fileio import atomic_write_json  # noqa: E402
from minitf.model import Transformer  # noqa: E402
from minitf.trainer import autocast, keep_freed_memory, make_optimizer, masked_loss  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
CONFIGS = {  # name: (layers, d_model, heads, ctx, vocab, batch, d_mlp)
    "S": (2, 64, 4, 64, 256, 32, 256),
    "M": (2, 128, 4, 128, 512, 32, 512),
    "S_attn_only": (2, 64, 4, 64, 256, 32, 0),
    "L": (4, 256, 4, 256, 512, 8, 1024),
}
STEP_DIVISOR = {"L": 4}  # L's steps are slow: fewer of them per round
BF16 = TrainConfig(precision="bf16")


class ReferenceBlock(nn.Module):
    def __init__(self, d, heads, d_mlp):
        super().__init__()
        self.heads = heads
        self.ln1, self.qkv, self.proj = nn.LayerNorm(d), nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d_mlp), nn.GELU(), nn.Linear(d_mlp, d)) if d_mlp else None

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(x) if self.mlp is not None else x


class ReferenceGPT(nn.Module):
    def __init__(self, layers, d, heads, ctx, vocab, d_mlp):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(ctx, d)
        self.blocks = nn.ModuleList(ReferenceBlock(d, heads, d_mlp) for _ in range(layers))
        self.ln_f, self.head = nn.LayerNorm(d), nn.Linear(d, vocab, bias=False)

    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def flops_per_token(layers, d, ctx, vocab, d_mlp) -> float:
    """Training FLOPs per token: 6 × (matmul params) + attention scores/values (Kaplan et al.)."""
    params = layers * (4 * d * d + 2 * d * d_mlp) + d * vocab
    return 6 * params + 6 * layers * ctx * d  # causal attention: 2·(QKᵀ + PV)·½ × 3 for fwd+bwd


def make_pair(name):
    layers, d, heads, ctx, vocab, batch, d_mlp = CONFIGS[name]
    torch.manual_seed(0)
    ours = Transformer(ModelConfig(n_layers=layers, d_model=d, n_heads=heads, d_head=d // heads, d_mlp=d_mlp,
                                   vocab_size=vocab, n_ctx=ctx, attn_impl="sdpa"))
    ref = ReferenceGPT(layers, d, heads, ctx, vocab, d_mlp)
    cfg = TrainConfig(lr=1e-3)
    ours_opt = make_optimizer(ours, cfg)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.01)
    return (ours, ours_opt), (ref, ref_opt), (layers, d, ctx, vocab, batch, d_mlp)


def step_ours(model, opt, batch):
    loss = masked_loss(model(batch.inputs), batch)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


def step_ours_bf16(model, opt, batch):
    """The trainer's bf16 step: forward under bf16 autocast, fp32 loss reduction and update."""
    with autocast(BF16, torch.device("cpu")):
        logits = model(batch.inputs)
    loss = masked_loss(logits.float(), batch)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


def step_ref(model, opt, batch):
    logits = model(batch.inputs)
    loss = F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten())
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


def time_steps(fn, model, opt, batches) -> float:
    start = time.perf_counter()
    for b in batches:
        fn(model, opt, b)
    return (time.perf_counter() - start) / len(batches)


def random_batches(vocab, batch, ctx, steps, gen):
    batches = []
    for _ in range(steps):
        ids = torch.randint(0, vocab, (batch, ctx + 1), generator=gen)
        batches.append(Batch(ids[:, :-1], ids[:, 1:], torch.ones(batch, ctx)))
    return batches


def step_rate(name, which, rounds, steps, threads=0) -> float:
    """Tokens/s of one model's training step (median over rounds): what a --child process prints."""
    if threads:
        torch.set_num_threads(threads)
    ours, ref, (layers, d, ctx, vocab, batch, d_mlp) = make_pair(name)
    steps = max(2, steps // STEP_DIVISOR.get(name, 1))
    (model, opt), fn = {"minitf": (ours, step_ours), "minitf_bf16": (ours, step_ours_bf16),
                        "reference": (ref, step_ref)}[which]
    batches = random_batches(vocab, batch, ctx, steps, torch.Generator().manual_seed(1))
    time_steps(fn, model, opt, batches[:3])  # warm-up
    return batch * ctx / statistics.median(time_steps(fn, model, opt, batches) for _ in range(rounds))


def child_rates(name, which, allocator, rounds, steps, threads=0, processes=1) -> list[float]:
    """Tokens/s printed by ``processes`` --child processes run at once (``threads`` each; 0: torch's default)."""
    env = {**os.environ, "MINITF_KEEP_FREED_MEMORY": "1" if allocator else "0"}
    cmd = [sys.executable, __file__, "--child", name, which, "--rounds", str(rounds), "--steps", str(steps),
           "--child-threads", str(threads)]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(processes)]
    outs = [p.communicate() for p in procs]
    for p, (_, err) in zip(procs, outs):
        if p.returncode:
            raise RuntimeError(f"benchmark child {name} {which} failed:\n{err}")
    return [float(out.strip().splitlines()[-1]) for out, _ in outs]


def child_rate(name, which, allocator, rounds, steps) -> float:
    return child_rates(name, which, allocator, rounds, steps)[0]


def one_process_per_core(rounds, steps, repeats) -> dict:
    """The most any split of ensemble members over this machine's cores could reach (config S).

    Alternates one minitf S process using every thread (how sequential seeds run) with one
    single-threaded S process per thread, all at once (members spread over cores with nothing
    shared); the ratio of their aggregate tokens/s bounds any threaded or multi-process ensemble."""
    cores = torch.get_num_threads()
    alone, together = [], []
    for _ in range(repeats):
        alone.append(child_rate("S", "minitf", True, rounds, steps))
        together.append(sum(child_rates("S", "minitf", True, rounds, steps, threads=1, processes=cores)))
    one, many = statistics.median(alone), statistics.median(together)
    return {"processes": cores, "one_process_tokens_per_s": one, "one_process_per_core_tokens_per_s": many,
            "ratio": many / one, "runs_tokens_per_s": {"one_process": alone, "one_process_per_core": together}}


def bench_config(name, rounds, steps, repeats) -> dict:
    """Each model in fresh processes, alternating, ``repeats`` times; medians.

    minitf runs as shipped (with keep_freed_memory), the reference as a plain PyTorch script
    (glibc's defaults), and minitf once more with the defaults, which isolates the allocator:
    ratio = shipped ÷ reference, same_allocator_ratio = minitf ÷ reference with both on defaults.
    """
    runs = {"minitf": [], "reference": [], "minitf_default_allocator": [], "minitf_bf16": []}
    for _ in range(repeats):  # interleaved so drift in machine load affects all four
        runs["minitf"].append(child_rate(name, "minitf", True, rounds, steps))
        runs["reference"].append(child_rate(name, "reference", False, rounds, steps))
        runs["minitf_default_allocator"].append(child_rate(name, "minitf", False, rounds, steps))
        runs["minitf_bf16"].append(child_rate(name, "minitf_bf16", True, rounds, steps))
    ours, ref, ours_default, ours_bf16 = (statistics.median(runs[k]) for k in runs)
    layers, d, heads, ctx, vocab, batch, d_mlp = CONFIGS[name]
    fpt = flops_per_token(layers, d, ctx, vocab, d_mlp)
    return {"config": dict(zip(("layers", "d_model", "ctx", "vocab", "batch", "d_mlp"), (layers, d, ctx, vocab, batch, d_mlp))),
            "minitf_tokens_per_s": ours, "reference_tokens_per_s": ref, "ratio": ours / ref,
            "minitf_default_allocator_tokens_per_s": ours_default, "same_allocator_ratio": ours_default / ref,
            "allocator_speedup": ours / ours_default, "minitf_bf16_tokens_per_s": ours_bf16,
            "bf16_ratio": ours_bf16 / ref, "bf16_speedup": ours_bf16 / ours, "runs_tokens_per_s": runs,
            "flops_per_token": fpt, "minitf_gflops": ours * fpt / 1e9, "reference_gflops": ref * fpt / 1e9}


def bench_ensemble(rounds, steps, members=8) -> dict:
    """Aggregate model-tokens/s of a K-member ensemble ÷ that of K sequential single runs (config S).

    Also times one model at K × the batch: the same per-step shapes with no member dimension,
    i.e. what perfect batching of K members could reach at best (``ceiling_ratio``)."""
    from minitf.ensemble import Ensemble, train_ensemble

    layers, d, heads, ctx, vocab, batch, d_mlp = CONFIGS["S"]
    cfg = ModelConfig(n_layers=layers, d_model=d, n_heads=heads, d_head=d // heads, d_mlp=d_mlp, vocab_size=vocab,
                      n_ctx=ctx)

    def make(seed):
        torch.manual_seed(seed)
        return Transformer(cfg)

    gen = torch.Generator().manual_seed(2)
    streams = [random_batches(vocab, batch, ctx, steps, gen) for _ in range(members)]
    train_cfg = TrainConfig(steps=steps, lr=1e-3, warmup=1)
    single, wide = make(0), make(0)
    single_opt, wide_opt = make_optimizer(single, train_cfg), make_optimizer(wide, train_cfg)
    wide_batches = random_batches(vocab, members * batch, ctx, steps, gen)
    ens_t, single_t, wide_t = [], [], []
    for r in range(rounds + 1):  # round 0 warms up
        ensemble = Ensemble(make, list(range(members)))
        start = time.perf_counter()
        train_ensemble(ensemble, train_cfg, [lambda step, s=s: s[step] for s in streams])
        ens = (time.perf_counter() - start) / steps
        one = time_steps(step_ours, single, single_opt, streams[0])
        one_wide = time_steps(step_ours, wide, wide_opt, wide_batches)
        if r:
            ens_t.append(ens)
            single_t.append(one)
            wide_t.append(one_wide)
    tokens = batch * ctx
    ens_tps = members * tokens / statistics.median(ens_t)
    seq_tps = tokens / statistics.median(single_t)  # K sequential runs: same aggregate rate as one
    wide_tps = members * tokens / statistics.median(wide_t)
    return {"members": members, "ensemble_model_tokens_per_s": ens_tps, "sequential_model_tokens_per_s": seq_tps,
            "ratio": ens_tps / seq_tps, "one_model_wide_batch_tokens_per_s": wide_tps,
            "ceiling_ratio": wide_tps / seq_tps}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per model and config")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma list from {', '.join(CONFIGS)}")
    parser.add_argument("--child", nargs=2, metavar=("CONFIG", "MODEL"), help=argparse.SUPPRESS)
    parser.add_argument("--child-threads", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    keep_freed_memory()  # what minitf's Trainer does; a no-op when MINITF_KEEP_FREED_MEMORY=0
    if args.child:
        print(step_rate(*args.child, args.rounds, args.steps, args.child_threads))
        return
    results = {"threads": torch.get_num_threads(), "torch": torch.__version__}
    names = [n for n in args.configs.split(",") if n]
    if not names or any(n not in CONFIGS for n in names):
        parser.error(f"--configs takes a comma list from {', '.join(CONFIGS)} (got {args.configs!r})")
    for name in names:
        r = bench_config(name, args.rounds, args.steps, args.repeats)
        results[name] = r
        results[f"ratio_{name}"] = r["ratio"]
        results[f"bf16_ratio_{name}"] = r["bf16_ratio"]
        print(f"{name:<12} minitf {r['minitf_tokens_per_s']:>9,.0f} tok/s  reference {r['reference_tokens_per_s']:>9,.0f} "
              f"tok/s  ratio {r['ratio']:.2f}  (same allocator {r['same_allocator_ratio']:.2f}, allocator "
              f"{r['allocator_speedup']:.2f}x; {r['flops_per_token'] / 1e6:.2f} MFLOP/token, minitf "
              f"{r['minitf_gflops']:.1f} GFLOP/s)\n{'':<12} minitf bf16 {r['minitf_bf16_tokens_per_s']:>9,.0f} tok/s: "
              f"{r['bf16_ratio']:.2f}x the reference fp32, {r['bf16_speedup']:.2f}x minitf fp32", flush=True)
    e = bench_ensemble(args.rounds, args.steps)
    results["ensemble_S_K8"] = e
    results["ensemble_ratio_K8"] = e["ratio"]
    results["ensemble_ceiling_K8"] = e["ceiling_ratio"]
    print(f"ensemble K=8 (S): {e['ensemble_model_tokens_per_s']:,.0f} model-tok/s vs 8 sequential runs "
          f"{e['sequential_model_tokens_per_s']:,.0f}: ratio {e['ratio']:.2f}; one model at 8x the batch "
          f"{e['one_model_wide_batch_tokens_per_s']:,.0f} tok/s: ceiling {e['ceiling_ratio']:.2f}", flush=True)
    c = one_process_per_core(args.rounds, args.steps, args.repeats)
    results["one_process_per_core_S"] = c
    results["ensemble_core_parallel_ceiling"] = c["ratio"]
    print(f"one single-threaded S process per core ({c['processes']}): {c['one_process_per_core_tokens_per_s']:,.0f} "
          f"tok/s vs one {c['one_process_tokens_per_s']:,.0f}: ceiling {c['ratio']:.2f}", flush=True)
    results["peak_rss_mb"] = max(resource.getrusage(who).ru_maxrss for who in
                                 (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024
    print(f"peak RSS {results['peak_rss_mb']:.0f} MB")
    if not args.no_write:
        os.makedirs(RESULTS, exist_ok=True)
        atomic_write_json(os.path.join(RESULTS, "train_step-cpu.json"), results)  # the project's one strict JSON writer
        print("wrote bench/results/train_step-cpu.json")


if __name__ == "__main__":
    main()
