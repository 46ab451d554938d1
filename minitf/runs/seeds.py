"""Merging seeds: the reports of one setting's seed runs → one report with intervals over seeds.

``--seeds N``, a sweep cell with several seeds and ``--ensemble K`` all merge here (the runs
themselves go through ``minitf.runs.sweep``, or ``minitf.runs.ensemble``). Every interval is the
mean ± 95% Student-t half-width over seeds of ``minitf.evaluate.mean_interval``:

- ``merge``: each ``results`` record (a ``proportion``: ``acc``, ``ci95``, ...) over seeds;
- ``cell_summary``: every number of the reports (``numbers``) as ``interval``;
- ``summarize_seeds``: both, written as ``out/report.json`` and printed (``seeds_table``).
"""
import math
import os

import numpy as np

from minitf import artifacts
from minitf.evaluate import mean_interval
from minitf.experiments.base import Experiment
from minitf.fileio import atomic_write_json
from minitf.report import format_table

SKIPPED = ("seed",)  # report numbers that are settings, not results


def summarize_seeds(experiment: Experiment, reports: list[dict], out: str, extra: dict | None = None,
                    quiet: bool = False) -> dict:
    """``out/report.json``: every result record as its mean over the seeds' reports with a
    95% t-interval, and (``summary``) every number of the reports as mean ± 95% interval
    (``cell_summary``). Printed as a table unless ``quiet``."""
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
    """Nested dicts of {"acc", "ci95", "chance", "n"} records → one record per leaf over seeds
    (the interval clipped to [0, 1])."""
    first = results[0]
    if isinstance(first, dict) and "acc" in first:
        accs = np.array([r["acc"] for r in results])
        mean, half = mean_interval(accs)
        return {"acc": mean, "ci95": [max(0.0, mean - half), min(1.0, mean + half)], "chance": first["chance"],
                "n": int(sum(r["n"] for r in results)), "per_seed": accs.tolist()}
    return {k: merge([r[k] for r in results]) for k in first if all(k in r for r in results)}


def flatten(tree, prefix=""):
    """``[(dotted path, record)]`` for every ``proportion`` record (a dict with ``"acc"``) in a
    nested report dict, depth first, e.g. ``("in_weights.reversal", {...})``."""
    if isinstance(tree, dict) and "acc" in tree:
        return [(prefix, tree)]
    return [item for k, v in tree.items() for item in flatten(v, f"{prefix}.{k}" if prefix else k)]


def numbers(report: dict, prefix: str = "") -> dict[str, float]:
    """``{dotted path: value}`` for every number in a report (nested dicts, depth first): a
    ``proportion`` record (a dict with ``"acc"``) counts as its accuracy; booleans, strings
    and lists (e.g. per-head score tables) are left out, and so is the top-level ``seed``."""
    out = {}
    for key, value in report.items():
        path = f"{prefix}.{key}" if prefix else key
        if not prefix and key in SKIPPED:
            continue
        if isinstance(value, dict):
            if "acc" in value and isinstance(value["acc"], (int, float)):
                out[path] = float(value["acc"])
            else:
                out.update(numbers(value, path))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[path] = float(value)
    return out


def interval(values: list[float]) -> dict:
    """``{"mean", "ci95": [lo, hi], "n", "per_seed"}``: the mean and its two-sided 95% Student-t
    interval over ``values`` (one per seed; a single value has a zero-width interval)."""
    arr = np.asarray(values, dtype=float)
    mean, half = mean_interval(arr)
    return {"mean": mean, "ci95": [mean - half, mean + half], "n": len(arr), "per_seed": arr.tolist()}


def cell_summary(reports: list[dict]) -> dict[str, dict]:
    """``{path: interval(...)}`` for every number that all of a cell's seed ``reports`` have."""
    per_report = [numbers(r) for r in reports]
    paths = [p for p in per_report[0] if all(p in n for n in per_report)]
    return {p: interval([n[p] for n in per_report]) for p in paths}
