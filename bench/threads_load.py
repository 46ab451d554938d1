"""Training speed on a busy machine: tokens/s alone and beside a competing CPU-bound process, for
each intra-op thread count and OpenMP wait policy.

torch starts one intra-op thread per core. Its OpenMP threads spin while they wait for each other
(GNU OpenMP's default), which costs nothing on an idle machine, but beside another busy process a
thread that is descheduled keeps its siblings spinning for its whole time slice. This script
measures that: each cell trains the quickstart headline model (``train.py``'s default, d_model 128)
for ``--steps`` steps in a fresh child process with ``OMP_NUM_THREADS`` = 1 … cores and
``OMP_WAIT_POLICY`` = (unset: the runtime's default) / ``PASSIVE`` (threads sleep while waiting),
once alone and once while ``--competitors`` single-threaded busy processes (a numpy matmul loop,
like a second experiment or a notebook) run beside it. Children alternate, ``--repeats`` times;
medians are reported. Writes bench/results/threads_load-cpu.json.

    python bench/threads_load.py [--steps 30] [--repeats 3] [--competitors 1]
"""
import argparse
import itertools
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from minitf.fileio import atomic_write_json  # noqa: E402

RESULTS = os.path.join(ROOT, "bench", "results")
POLICIES = ("default", "PASSIVE")

CHILD = r"""
import sys, time, torch
sys.path.insert(0, {root!r})
from minitf.experiments import EXPERIMENTS
from minitf.runs.folder import build_configs
from minitf.model import Transformer
from minitf.trainer import make_optimizer, masked_loss, keep_freed_memory
from minitf.data import collate
import numpy as np
keep_freed_memory()
exp = EXPERIMENTS["headline"]
model_cfg, train_cfg, task, _ = build_configs(exp, [], 0, "cpu")
torch.manual_seed(0)
model = Transformer(model_cfg)
opt = make_optimizer(model, train_cfg)
vocab = exp.vocab(task)
world = task.build_world(np.random.default_rng(0))
rng = np.random.default_rng(1)
batches = [collate([world.episode(rng) for _ in range(train_cfg.batch_size)], vocab) for _ in range({steps} + 3)]
def step(b):
    loss = masked_loss(model(b.inputs), b)
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
for b in batches[:3]:
    step(b)
tokens, t0 = 0, time.perf_counter()
for b in batches[3:]:
    step(b); tokens += b.inputs.numel()
print(tokens / (time.perf_counter() - t0), torch.get_num_threads())
"""

COMPETITOR = r"""
import os
os.environ["OMP_NUM_THREADS"] = "1"
import numpy as np
a = np.random.rand(400, 400)
while True:
    a = np.tanh(a @ a) + 0.01
"""


def child_rate(threads: int, policy: str, steps: int) -> tuple[float, int]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    env["OMP_NUM_THREADS"] = str(threads)
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    r = subprocess.run([sys.executable, "-c", CHILD.format(root=ROOT, steps=steps)], env=env, capture_output=True,
                       text=True, timeout=1800)
    if r.returncode:
        raise RuntimeError(f"child failed ({threads} threads, {policy}):\n{r.stderr[-2000:]}")
    rate, used = r.stdout.split()[-2:]
    return float(rate), int(used)


def measure(threads_list, steps, repeats, competitors) -> dict:
    cells = list(itertools.product(threads_list, POLICIES, ("alone", "busy")))
    runs = {c: [] for c in cells}
    for _ in range(repeats):
        for threads, policy, load in cells:  # interleaved: drift hits every cell alike
            procs = [subprocess.Popen([sys.executable, "-c", COMPETITOR]) for _ in range(competitors if load == "busy"
                                                                                          else 0)]
            try:
                time.sleep(0.5 if procs else 0)
                rate, used = child_rate(threads, policy, steps)
                assert used == threads, (used, threads)
                runs[(threads, policy, load)].append(rate)
            finally:
                for p in procs:
                    p.kill()
                    p.wait()
            print(f"  threads {threads} policy {policy:<8} {load:<5} {rate:>9,.0f} tok/s", flush=True)
    out = {}
    for (threads, policy, load), rates in runs.items():
        out.setdefault(f"threads_{threads}", {}).setdefault(policy, {})[load] = {
            "tokens_per_s": statistics.median(rates), "runs": rates}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--competitors", type=int, default=1, help="busy single-threaded processes beside it")
    parser.add_argument("--threads", default="", help="comma list of thread counts (default 1..cores)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    threads_list = [int(t) for t in args.threads.split(",") if t] or list(range(1, cores + 1))
    cells = measure(threads_list, args.steps, args.repeats, args.competitors)
    best_alone = max(c[p]["alone"]["tokens_per_s"] for c in cells.values() for p in POLICIES)
    lines = ["| threads | OMP_WAIT_POLICY | alone tok/s | beside a busy process tok/s | busy ÷ alone | ÷ best alone |",
             "|---|---|---|---|---|---|"]
    for name, by_policy in cells.items():
        for policy, r in by_policy.items():
            a, b = r["alone"]["tokens_per_s"], r["busy"]["tokens_per_s"]
            r["busy_over_alone"], r["busy_over_best_alone"] = b / a, b / best_alone
            lines.append(f"| {name.split('_')[1]} | {policy} | {a:,.0f} | {b:,.0f} | {b / a:.2f} | {b / best_alone:.2f} |")
    print("\n".join(lines))
    result = {"cores": cores, "competitors": args.competitors, "steps": args.steps, "repeats": args.repeats,
              "cells": cells, "table": lines}
    if not args.no_write:
        os.makedirs(RESULTS, exist_ok=True)
        atomic_write_json(os.path.join(RESULTS, "threads_load-cpu.json"), result)  # the project's one strict JSON writer
        print("wrote bench/results/threads_load-cpu.json")


if __name__ == "__main__":
    main()
