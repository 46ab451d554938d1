"""``--seeds N``: one run folder per seed, and a merged report with intervals over seeds.

The runs themselves go through the sweep mechanism (``minitf.runs.sweep``: a grid of one
cell); this module holds the merged report that ``--seeds``, a sweep cell with several
seeds and ``--ensemble`` write.
"""
import os

import numpy as np

from minitf import artifacts
from minitf.config import seed_range
from minitf.errors import RunExistsError
from minitf.experiments.base import Experiment
from minitf.fileio import atomic_write_json
from minitf.report import format_table

# two-sided 95% Student t quantiles by number of seeds (degrees of freedom + 1)
T_975 = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571, 7: 2.447, 8: 2.365, 9: 2.306, 10: 2.262}


def t975(n: int) -> float:
    """The two-sided 95% Student-t quantile for ``n`` values (n − 1 degrees of freedom): the table
    up to 10 values, then the Cornish-Fisher expansion (within 0.003 of the exact quantile from 11 values)."""
    if n in T_975:
        return T_975[n]
    z, df = 1.959964, max(n - 1, 1)
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def seed_dirs(out: str, seeds: list[int]) -> list[str]:
    """``out/seed<N>`` for each seed, in order."""
    return [os.path.join(out, f"seed{s}") for s in seeds]


def check_parent(out: str, overwrite: bool) -> None:
    """A multi-seed folder holds seed<N>/ run folders and the merged report.json."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise RunExistsError(f"--out {out} is an existing file, not a folder; choose another --out")
    if os.path.exists(os.path.join(out, artifacts.REPORT)) and not overwrite:
        raise RunExistsError(f"{out} already holds a merged report of several seeds; choose another --out, "
                             "or pass --overwrite")


def run_seeds(experiment: Experiment | str | None, n_seeds: int, out: str | None = None, seed: int | None = None,
              overrides=(), device: str | None = None, overwrite: bool = False, workers: int = 1,
              ray_address: str | None = None) -> dict:
    """Run seeds seed..seed+n-1 into ``out/seed<N>`` (every folder checked before the first
    run starts; finished seeds of an interrupted call are skipped, unfinished ones resumed) and
    write ``out/report.json``: each result record's mean over seeds with a 95% t-interval over
    seeds and the per-seed values. ``workers`` > 1 or ``ray_address`` run the seeds as Ray
    tasks (``minitf.runs.sweep.sweep``, which raises what it documents)."""
    from minitf.runs.sweep import sweep

    return sweep(experiment, {}, n_seeds, out, seed, overrides, device, overwrite, workers, ray_address)["report"]


def prepare_seed_runs(experiment, n_seeds: int, out, seed, overrides, device, overwrite, kind: str):
    """(experiment, ref, out, [RunContext per seed]): every seed's configs and folder checked, nothing written."""
    from minitf.runs import folder, resolve_experiment

    experiment, ref = resolve_experiment(experiment)
    seeds = seed_range(seed, n_seeds, "--ensemble" if kind == "ensemble" else "--seeds")
    out = out or os.path.join("runs", experiment.name, f"{kind}{seeds[0]}-{seeds[-1]}")
    check_parent(out, overwrite)
    return experiment, ref, out, [folder.prepare_run(experiment, d, s, overrides, device, overwrite)
                                  for d, s in zip(seed_dirs(out, seeds), seeds)]


def summarize_seeds(experiment: Experiment, reports: list[dict], out: str, extra: dict | None = None,
                    quiet: bool = False) -> dict:
    """``out/report.json``: every result record as its mean over the seeds' reports with a
    95% t-interval, and (``summary``) every number of the reports as mean ± 95% interval
    (``minitf.runs.summary.cell_summary``). Printed as a table unless ``quiet``."""
    from minitf.runs.summary import cell_summary

    merged = merge([r["results"] for r in reports]) if all("results" in r for r in reports) else {}
    report = {"experiment": experiment.name, "seeds": [r["seed"] for r in reports],
              "architecture": reports[0]["architecture"], "results": merged,
              "runs": [r["run_dir"] for r in reports], "wall_s": sum(r["wall_s"] for r in reports),
              "summary": cell_summary(reports), **(extra or {})}
    atomic_write_json(os.path.join(out, artifacts.REPORT), report)
    if not quiet:
        print(seeds_table(report, len(reports)))
        print(f"\nseed runs and the merged report.json are in {out}")
    return report


def seeds_table(report: dict, n: int) -> str:
    """The merged report as a table: each ``results`` accuracy as mean ± 95% half-width over the
    seeds; for a report without ``results`` records (e.g. induction's losses and scores), every
    number of its ``summary`` but ``wall_s``, the same way."""
    rows = [[path, f"{v['acc']:.3f} ±{(v['ci95'][1] - v['ci95'][0]) / 2:.3f}"] for path, v in flatten(report["results"])]
    if not rows:
        rows = [[path, f"{s['mean']:.4g} ±{(s['ci95'][1] - s['ci95'][0]) / 2:.3g}"]
                for path, s in report.get("summary", {}).items() if path != "wall_s"]
    return format_table(["result", f"mean over {n} seeds ± 95% CI half-width"], rows)


def merge(results: list):
    """Nested dicts of {"acc", "ci95", "chance", "n"} records → one record per leaf over seeds."""
    first = results[0]
    if isinstance(first, dict) and "acc" in first:
        accs = np.array([r["acc"] for r in results])
        mean = float(accs.mean())
        half = t975(len(accs)) * float(accs.std(ddof=1)) / np.sqrt(len(accs)) if len(accs) > 1 else 0.0
        return {"acc": mean, "ci95": [max(0.0, mean - half), min(1.0, mean + half)], "chance": first["chance"],
                "n": int(sum(r["n"] for r in results)), "per_seed": accs.tolist()}
    return {k: merge([r[k] for r in results]) for k in first if all(k in r for r in results)}


def flatten(tree, prefix=""):
    """``[(dotted path, record)]`` for every ``proportion`` record (a dict with ``"acc"``) in a
    nested report dict, depth first, e.g. ``("in_weights.reversal", {...})``."""
    if isinstance(tree, dict) and "acc" in tree:
        return [(prefix, tree)]
    return [item for k, v in tree.items() for item in flatten(v, f"{prefix}.{k}" if prefix else k)]
