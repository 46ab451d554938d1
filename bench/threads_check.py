"""Thread-count reproducibility check: do an experiment's seed-0 numbers change between 1 and 2
intra-op threads?

"Same seed + same config => same numbers" is tested elsewhere within one thread count (kill and
resume, ``tests/test_resume.py``). This script measures whether it also holds *across*
thread counts: each experiment runs twice as a plain ``train.py`` subprocess with the same tiny
settings and ``--seed 0``, once with ``OMP_NUM_THREADS=1`` and once with ``OMP_NUM_THREADS=2``
(run folders in a temporary directory, one run at a time). The two ``report.json`` files are
compared recursively, ignoring ``wall_s``, ``run_dir`` and any timing/throughput key (``*_per_s``,
``*_seconds``, ``elapsed``...), and so are the ``metrics.jsonl`` loss rows (matched in order,
``tokens_per_s`` ignored). Prints one table row per experiment: identical yes/no, how many report
numbers differ (and how many other values: strings, booleans, list lengths), the largest absolute
difference with one example key path, and the same for the logged training losses (with the first
step whose loss differs). Each run's ``config.json`` ``environment`` block is read back to confirm
the thread count the run actually used.

The tiny settings (``TINY`` below) shorten training and evaluation only (steps, phase lengths,
eval sizes, recall off); model shapes and batch sizes stay at each experiment's defaults, since
they decide which kernels split work across threads. Each run takes up to ~30 s on a 2-core CPU;
the whole default list about 5-8 minutes.

    python bench/threads_check.py                      # every experiment in the default list
    python bench/threads_check.py --only induction,bursty --out /tmp/threads.json
    python bench/threads_check.py --threads 1,4        # another pair of thread counts
    python bench/threads_check.py --threads 2,2 --out /tmp/control.json   # control: same count twice

Writes the JSON result to ``--out`` (default bench/results/threads-cpu.json; a folder gets
threads-cpu.json inside it).
"""
import argparse
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "train.py")
DEFAULT_OUT = os.path.join(ROOT, "bench", "results", "threads-cpu.json")

# Per experiment: the --set overrides that make a run take ≤ ~30 s on a 2-core CPU. Only training
# length and evaluation sizes shrink; model and batch shapes stay as shipped.
TINY = {
    "induction": ["steps=100", "eval_every=50"],
    "bursty": ["steps=100", "eval_every=50"],
    "regression": ["steps=100", "eval_every=50", "eval_prompts=200"],
    "icl_gd": ["steps=100", "eval_every=50", "eval_prompts=200"],
    "metalearn": ["steps=60", "eval_every=30", "meta_steps=60", "tied_steps=60", "eval_tasks=200",
                  "bayes_steps=20"],
    "ginc": ["steps=100", "eval_every=50", "prompts_per_cell=20", "control_steps=50"],
    "headline": ["steps=40", "eval_every=20", "relation_steps=20", "phase2_steps=10", "recall=false"],
    "semantic": ["steps=40", "eval_every=20", "phase2_steps=10"],
}
DEFAULT_LIST = list(TINY)

# Keys never compared: wall time, the run folder's path, and anything timing/throughput.
IGNORED_KEYS = {"wall_s", "run_dir", "tokens_per_s"}
TIMING_KEY = re.compile(r"(^|_)(wall|elapsed|duration|seconds|time_s|secs)($|_)|_per_s$|_ms$")


def ignored(key) -> bool:
    """True for a dict key that holds a timing/throughput value or a machine-specific path."""
    return isinstance(key, str) and (key in IGNORED_KEYS or bool(TIMING_KEY.search(key)))


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _walk(a, b, path: str, out: dict) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if ignored(k):
                continue
            sub = f"{path}.{k}" if path else str(k)
            if k not in a or k not in b:
                out["other"].append({"path": sub, "a": a.get(k, "<missing>"), "b": b.get(k, "<missing>")})
            else:
                _walk(a[k], b[k], sub, out)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out["other"].append({"path": f"{path} (length)", "a": len(a), "b": len(b)})
        for i, (x, y) in enumerate(zip(a, b)):
            _walk(x, y, f"{path}[{i}]", out)
    elif _is_number(a) and _is_number(b):
        out["numbers"] += 1
        fa, fb = float(a), float(b)
        if fa == fb or (math.isnan(fa) and math.isnan(fb)):
            return
        diff = abs(fa - fb) if math.isfinite(fa) and math.isfinite(fb) else math.inf
        rel = diff / max(abs(fa), abs(fb)) if math.isfinite(diff) else math.inf
        out["diffs"].append({"path": path, "a": a, "b": b, "abs_diff": diff, "rel_diff": rel})
    elif a != b:
        out["other"].append({"path": path, "a": a, "b": b})


def compare(a, b) -> dict:
    """Compare two JSON values (e.g. two report.json dicts) recursively.

    Keys for which :func:`ignored` is true (``wall_s``, ``run_dir``, ``tokens_per_s``, ``*_per_s``
    ...) are skipped at every depth. Numbers compare by value (NaN equals NaN; ``True`` is not a
    number). Returns ``identical``, ``numbers`` (numbers compared), ``n_diff`` (numbers that
    differ), ``n_other`` (strings, booleans, missing keys or list lengths that differ),
    ``max_abs_diff`` (``None`` when no number differs; ``inf`` for a finite vs non-finite pair),
    ``max_rel_diff`` (largest ``|a - b| / max(|a|, |b|)``), ``example`` (key path of the largest
    difference, or of the first other difference), ``diffs`` (every differing number, largest
    first) and ``other`` (every other difference)."""
    out = {"numbers": 0, "diffs": [], "other": []}
    _walk(a, b, "", out)
    diffs = sorted(out["diffs"], key=lambda d: -d["abs_diff"])
    example = diffs[0]["path"] if diffs else (out["other"][0]["path"] if out["other"] else None)
    return {"identical": not diffs and not out["other"], "numbers": out["numbers"], "n_diff": len(diffs),
            "n_other": len(out["other"]), "max_abs_diff": diffs[0]["abs_diff"] if diffs else None,
            "max_rel_diff": max(d["rel_diff"] for d in diffs) if diffs else None,
            "example": example, "diffs": diffs, "other": out["other"]}


def loss_rows(rows: list[dict]) -> list[dict]:
    """The rows of a metrics.jsonl that log a training loss (evaluation rows left out)."""
    return [r for r in rows if "loss" in r]


def compare_losses(rows_a: list[dict], rows_b: list[dict]) -> dict:
    """:func:`compare` on the loss rows of two metrics.jsonl files, keyed ``phase:step`` (so a key
    path reads ``phase1:70.loss``; ``tokens_per_s`` ignored), plus ``rows`` (how many loss rows the
    first has) and ``first_step`` (``phase:step`` of the first row whose numbers differ, or ``None``)."""
    def keyed(rows):
        return {f"{r.get('phase', '')}:{r.get('step')}": r for r in loss_rows(rows)}
    a, b = keyed(rows_a), keyed(rows_b)
    result = compare(a, b)
    first = next((k for k in a if k in b and not compare(a[k], b[k])["identical"]), None)
    return {**result, "rows": len(a), "first_step": first}


def read_metrics(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def run_once(name: str, threads: int, sets: list[str], folder: str, timeout: float, label: str = "") -> dict:
    """``train.py NAME --seed 0`` with OMP_NUM_THREADS=threads into FOLDER/NAME-LABEL-t<threads>;
    its report, metrics rows, config environment and wall time."""
    out = os.path.join(folder, f"{name}-{label}t{threads}")
    cmd = [sys.executable, TRAIN, name, "--seed", "0", "--out", out] + [x for s in sets for x in ("--set", s)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    print(f"$ OMP_NUM_THREADS={threads} python train.py {' '.join(cmd[2:])}", flush=True)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, check=False, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{name} with {threads} thread(s) failed (exit {r.returncode}):\n{r.stdout[-2000:]}")
    with open(os.path.join(out, "report.json")) as f:
        report = json.load(f)
    with open(os.path.join(out, "config.json")) as f:
        environment = json.load(f).get("environment", {})
    return {"report": report, "metrics": read_metrics(os.path.join(out, "metrics.jsonl")),
            "environment": environment, "wall_s": round(wall, 1)}


def check(name: str, sets: list[str], folder: str, threads: tuple[int, int], timeout: float) -> dict:
    """Run ``name`` at both thread counts and compare; a dict for the JSON result."""
    a, b = (run_once(name, t, sets, folder, timeout, label=f"run{i}-") for i, t in enumerate(threads, 1))
    rep, loss = compare(a["report"], b["report"]), compare_losses(a["metrics"], b["metrics"])
    keep = 10  # the largest differences, for the JSON
    return {
        "experiment": name, "settings": sets,
        "identical": rep["identical"] and loss["identical"],
        "intra_op_threads": [a["environment"].get("intra_op_threads"), b["environment"].get("intra_op_threads")],
        "wall_s": [a["wall_s"], b["wall_s"]],
        "report": {k: rep[k] for k in ("identical", "numbers", "n_diff", "n_other", "max_abs_diff", "max_rel_diff",
                                       "example")}
        | {"largest": rep["diffs"][:keep], "other": rep["other"][:keep]},
        "losses": {k: loss[k] for k in ("identical", "rows", "numbers", "n_diff", "n_other", "max_abs_diff",
                                        "max_rel_diff", "example", "first_step")} | {"largest": loss["diffs"][:keep]},
    }


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3g}"


def table(results: list[dict], threads=(1, 2)) -> str:
    """A markdown table of the results."""
    lines = [(f"| experiment | identical at {threads[0]} vs {threads[1]} threads | report numbers differing "
              "| largest abs. diff | example key | loss rows differing | largest loss diff | first differing step |"),
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['experiment']} | error: {r['error'].splitlines()[0]} | | | | | | |")
            continue
        rep, loss = r["report"], r["losses"]
        other = f" (+{rep['n_other']} other)" if rep["n_other"] else ""
        example = f"`{rep['example']}`" if rep["example"] else "-"
        lines.append(f"| {r['experiment']} | {'yes' if r['identical'] else 'no'} | {rep['n_diff']} / {rep['numbers']}"
                     f"{other} | {_fmt(rep['max_abs_diff'])} | {example}"
                     f" | {loss['n_diff']} / {loss['numbers']} | {_fmt(loss['max_abs_diff'])} "
                     f"| {loss['first_step'] or '-'} |")
    return "\n".join(lines)


def environment() -> dict:
    import torch
    commit = subprocess.run(["git", "rev-parse", "HEAD"], check=False, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True).stdout.strip() or None
    return {"torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(), "commit": commit}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="", metavar="NAME,...",
                   help=f"experiments to check (default: {','.join(DEFAULT_LIST)})")
    p.add_argument("--out", default=DEFAULT_OUT, help="JSON result file, or a folder for threads-cpu.json "
                                                      "(default bench/results/threads-cpu.json)")
    p.add_argument("--threads", default="1,2", help="the two OMP_NUM_THREADS values (default 1,2)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="extra override for every run (after the tiny settings)")
    p.add_argument("--timeout", type=float, default=600, help="seconds allowed per run")
    p.add_argument("--keep", action="store_true", help="keep the run folders (their path is printed)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or DEFAULT_LIST
    threads = tuple(int(t) for t in args.threads.split(","))
    if len(threads) != 2 or min(threads) < 1:
        sys.exit("--threads takes two thread counts >= 1, e.g. 1,2")
    from minitf.experiments import EXPERIMENTS
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        sys.exit(f"unknown experiment(s): {', '.join(unknown)} (known: {', '.join(EXPERIMENTS)})")
    out = args.out
    if os.path.isdir(out) or out.endswith(os.sep):
        out = os.path.join(out, "threads-cpu.json")
    folder = tempfile.mkdtemp(prefix="threads_check-")
    results = []
    try:
        for name in names:
            sets = TINY.get(name, ["steps=100", "eval_every=50"]) + args.overrides
            try:
                results.append(check(name, sets, folder, threads, args.timeout))
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                print(e, file=sys.stderr)
                results.append({"experiment": name, "settings": sets, "identical": None, "error": str(e)})
            r = results[-1]
            if "error" not in r:
                print(f"  {name}: identical={r['identical']}  report diffs {r['report']['n_diff']}, "
                      f"loss diffs {r['losses']['n_diff']}  (threads used {r['intra_op_threads']}, "
                      f"wall {r['wall_s']} s)", flush=True)
    finally:
        if args.keep:
            print(f"run folders kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    print()
    print(table(results, threads))
    result = {"what": f"seed-0 numbers at OMP_NUM_THREADS={threads[0]} vs {threads[1]}",
              "command": "python bench/threads_check.py" + (f" --only {args.only}" if args.only else ""),
              "threads": list(threads), "environment": environment(), "results": results}
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1, default=str)
        f.write("\n")
    os.replace(tmp, out)
    print(f"\nwrote {out}")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
