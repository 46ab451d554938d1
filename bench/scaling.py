"""Scaling benchmark (#27): one model on 1 vs N DDP processes, and an 8-run seed sweep four ways.

1. DDP: training tokens/s of one model on the same global batch, read from metrics.jsonl
   (the trainer's rate over the phase, startup excluded): one process with 1 thread, one
   process with N threads, and ``torchrun --nproc_per_node N`` with 1 thread per process.
2. Sweep: wall time (process start to exit) of K seeds of the same config run as K
   sequential ``train.py --seed i`` processes, ``--seeds K`` in one process (``--workers 1``),
   ``--seeds K --workers W`` on a local Ray, and ``--ensemble K`` (CPU only).

Every command is a plain ``train.py`` command line, printed before it runs. Writes
bench/results/scaling-<device>.json. On this repository's 2-core machine the defaults take
about 5 minutes; on a many-core or GPU machine raise ``--procs`` / ``--workers`` (``--device
cuda`` puts one DDP process per GPU and skips the CPU-only ensemble).

    python bench/scaling.py [--steps 100] [--runs 8] [--procs 2] [--workers 2] [--device cpu]
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results")
TRAIN = os.path.join(ROOT, "train.py")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experiment", default="induction", help="experiment to train (default induction)")
    p.add_argument("--steps", type=int, default=100, help="training steps per run")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="more config overrides for every run (e.g. --set d_model=128 --set n_heads=8)")
    p.add_argument("--runs", type=int, default=8, help="seeds in the sweep comparison")
    p.add_argument("--procs", type=int, default=2, help="DDP processes (and threads of the 1-process run)")
    p.add_argument("--workers", type=int, default=2, help="Ray workers of the sweep")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--skip", action="append", default=[], choices=["ddp", "sequential", "inline", "ray", "ensemble"],
                   help="leave a measurement out (repeatable)")
    p.add_argument("--no-write", action="store_true", help="print only; do not write bench/results")
    return p.parse_args(argv)


def settings(args) -> list[str]:
    """The ``--set`` flags every run gets: the steps, no intermediate evaluation or checkpoint."""
    sets = [f"steps={args.steps}", "eval_every=0", "checkpoint_every=0", f"log_every={args.steps}", *args.overrides]
    return [x for s in sets for x in ("--set", s)] + ["--device", args.device]


def timed(cmd: list[str], threads: int | None) -> float:
    """Run ``cmd`` (OMP_NUM_THREADS=threads when given); its wall time in seconds. Raises on failure."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    print("$ " + ("" if not threads else f"OMP_NUM_THREADS={threads} ") + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-3000:]}")
    return wall


def train_rate(run_dir: str) -> float:
    """The last logged training rate (tokens/s over the phase) of a run folder."""
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [r for r in rows if "tokens_per_s" in r][-1]["tokens_per_s"]


def bench_ddp(args, tmp: str) -> dict:
    """tokens/s of one model: 1 process × 1 thread, 1 process × procs threads, procs DDP processes × 1 thread."""
    base = [args.experiment, *settings(args)]
    out = {}
    for name, launcher, threads in [
            ("one_process_1_thread", [sys.executable], 1),
            (f"one_process_{args.procs}_threads", [sys.executable], args.procs),
            (f"ddp_{args.procs}_processes_1_thread", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                      "--nproc_per_node", str(args.procs)], 1)]:
        run_dir = os.path.join(tmp, name)
        wall = timed([*launcher, TRAIN, *base, "--out", run_dir], threads)
        out[name] = {"tokens_per_s": round(train_rate(run_dir)), "wall_s": round(wall, 2)}
    one = out["one_process_1_thread"]["tokens_per_s"]
    for record in out.values():
        record["speedup"] = round(record["tokens_per_s"] / one, 3)
    return out


def bench_sweep(args, tmp: str) -> dict:
    """Wall time of ``runs`` seeds: sequential processes, --seeds in one process, on Ray, --ensemble."""
    base, k = [args.experiment, *settings(args)], args.runs
    out = {}
    if "sequential" not in args.skip:
        t0 = time.perf_counter()
        for seed in range(k):
            timed([sys.executable, TRAIN, *base, "--seed", str(seed), "--out", os.path.join(tmp, f"seq{seed}")], None)
        out["sequential_processes"] = time.perf_counter() - t0
    if "inline" not in args.skip:
        out["seeds_workers_1"] = timed([sys.executable, TRAIN, *base, "--seeds", str(k), "--out",
                                        os.path.join(tmp, "inline")], None)
    if "ray" not in args.skip:
        out[f"seeds_workers_{args.workers}_ray"] = timed(
            [sys.executable, TRAIN, *base, "--seeds", str(k), "--workers", str(args.workers), "--out",
             os.path.join(tmp, "ray")], None)
    if "ensemble" not in args.skip and args.device == "cpu":
        out[f"ensemble_{k}"] = timed([sys.executable, TRAIN, *base, "--ensemble", str(k), "--out",
                                      os.path.join(tmp, "ensemble")], None)
    first = out.get("sequential_processes") or next(iter(out.values()), 1.0)
    return {name: {"wall_s": round(wall, 2), "speedup_vs_sequential": round(first / wall, 3)}
            for name, wall in out.items()}


def main(argv=None) -> int:
    args = parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="minitf-scaling-")
    import torch

    result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                          "gpus": torch.cuda.device_count() if args.device == "cuda" else 0,
                          "load_average_before": list(os.getloadavg())},
              "command": "python bench/scaling.py " + " ".join((argv if argv is not None else sys.argv[1:])),
              "experiment": args.experiment, "steps": args.steps, "overrides": args.overrides, "device": args.device}
    try:
        if "ddp" not in args.skip:
            result["ddp"] = bench_ddp(args, tmp)
        result["sweep"] = bench_sweep(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["machine"]["load_average_after"] = list(os.getloadavg())
    print(json.dumps(result, indent=2))
    if not args.no_write:
        os.makedirs(RESULTS, exist_ok=True)
        path = os.path.join(RESULTS, f"scaling-{args.device}.json")
        with open(path, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
