"""Refactor check: does a source tree give the same numbers as another, experiment by experiment?

A refactor must not change a published number (same seed and config => same report). This script
runs every experiment once with ``--seed 0`` and tiny settings (``RUNS`` below: training length and
evaluation sizes shrink, model and batch shapes stay as shipped) as a plain ``train.py``
subprocess of the source tree given by ``--tree`` (a checkout or ``git worktree`` of the commit to
test), one thread (``OMP_NUM_THREADS=1``), one run at a time, and records the sha256 of

* ``report.json`` with every timing/throughput key and the run folder's path removed at every depth
  (the keys ``bench/threads_check.py`` ignores: ``wall_s``, ``run_dir``, ``*_per_s``, ...), and
* ``metrics.jsonl`` with the same keys removed from every row (so ``tokens_per_s`` goes).

Both are hashed as canonical JSON (sorted keys), so key order in the files does not matter but
every number, string and list does.

    git worktree add /tmp/before <old-commit> && git worktree add /tmp/after <new-commit>
    python bench/refactor_check.py --tree /tmp/before --out /tmp/before.json
    python bench/refactor_check.py --tree /tmp/after --out /tmp/after.json
    python bench/refactor_check.py --compare /tmp/before.json /tmp/after.json   # markdown table

``--only headline,induction`` runs a subset. A ``--compare`` exits with status 1 if any hash
differs, so it can gate a refactor.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from threads_check import TINY, ignored  # noqa: E402 — the same tiny settings and ignored keys

# The thread check's tiny settings, plus the headline with its recall phases (supervised and
# REINFORCE) on, which the thread check leaves out for time.
RUNS = dict(TINY)
RUNS["headline_recall"] = ["steps=40", "eval_every=20", "relation_steps=20", "phase2_steps=10", "recall_steps=20",
                           "rl_steps=4", "identity_fraction=0.25"]


def strip(value):
    """``value`` (parsed JSON) without any key :func:`threads_check.ignored` names, at every depth."""
    if isinstance(value, dict):
        return {k: strip(v) for k, v in value.items() if not ignored(k)}
    if isinstance(value, list):
        return [strip(v) for v in value]
    return value


def digest(value) -> str:
    """sha256 (first 16 hex digits) of ``value`` as canonical JSON."""
    return hashlib.sha256(json.dumps(strip(value), sort_keys=True).encode()).hexdigest()[:16]


def run_one(tree: str, label: str, sets: list[str], folder: str, timeout: float) -> dict:
    """``train.py`` of ``tree`` for experiment ``label`` (``headline_recall`` runs ``headline``)."""
    name = label.split("_recall")[0]
    out = os.path.join(folder, label)
    cmd = [sys.executable, os.path.join(tree, "train.py"), name, "--seed", "0", "--out", out]
    cmd += [x for s in sets for x in ("--set", s)]
    print(f"$ (cd {tree} && OMP_NUM_THREADS=1 python train.py {' '.join(cmd[2:])})", flush=True)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=tree, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=timeout, check=False)
    if r.returncode != 0:
        return {"error": f"exit {r.returncode}: {r.stdout[-1500:]}"}
    with open(os.path.join(out, "report.json")) as f:
        report = json.load(f)
    with open(os.path.join(out, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return {"report": digest(report), "metrics": digest(rows), "metrics_rows": len(rows),
            "wall_s": round(time.perf_counter() - t0, 1)}


def compare(a: dict, b: dict) -> tuple[str, bool]:
    """A markdown table of two ``--out`` files' hashes, and whether every one matches."""
    lines = [f"| experiment | report.json before | after | metrics.jsonl before | after | same |", "|---|---|---|---|---|---|"]
    same_all = True
    for name in a["runs"]:
        x, y = a["runs"][name], b["runs"].get(name, {"error": "missing"})
        same = "error" not in x and "error" not in y and x["report"] == y["report"] and x["metrics"] == y["metrics"]
        same_all &= same
        lines.append(f"| {name} | {x.get('report', 'error')} | {y.get('report', 'error')} | {x.get('metrics', 'error')} "
                     f"| {y.get('metrics', 'error')} | {'yes' if same else '**no**'} |")
    return "\n".join(lines), same_all


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tree", help="source tree (checkout) whose train.py runs")
    p.add_argument("--out", help="write the hashes here (JSON)")
    p.add_argument("--only", default="", help="comma-separated subset of: " + ", ".join(RUNS))
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per run")
    p.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"), help="print the table of two --out files")
    args = p.parse_args(argv)
    if args.compare:
        a, b = (json.load(open(f)) for f in args.compare)
        text, same = compare(a, b)
        print(f"before: {a['commit']}  after: {b['commit']}\n\n{text}")
        return 0 if same else 1
    if not args.tree or not args.out:
        p.error("give --tree and --out (or --compare BEFORE AFTER)")
    names = [n for n in args.only.split(",") if n] or list(RUNS)
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        p.error(f"unknown experiment(s) {unknown}; choose from {list(RUNS)}")
    tree = os.path.abspath(args.tree)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True).stdout.strip()
    result = {"commit": commit, "tree": tree, "runs": {}}
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            result["runs"][name] = run_one(tree, name, RUNS[name], folder, args.timeout)
            print(f"  {name}: {result['runs'][name]}", flush=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
