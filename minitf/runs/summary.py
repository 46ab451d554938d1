"""A sweep's summary: ``sweep.json``, a printed table and one plot per sweep axis, from each
cell's ``summary`` (every report number as mean ± 95% interval over its seeds, made by
``minitf.runs.seeds.cell_summary``)."""
import itertools
import math
import os

from minitf import artifacts
from minitf.fileio import atomic_write_json
from minitf.report import format_table, plot_interval, save_figure, subplots

MAX_PANELS = 6  # metrics drawn per axis plot


def result_means(summary: dict) -> dict[str, float]:
    """``{name: mean}`` of the top-level ``results`` records (the columns of ``sweep.json``'s rows,
    as ``--sweep`` always wrote them)."""
    return {p[len("results."):]: s["mean"] for p, s in summary.items()
            if p.startswith("results.") and "." not in p[len("results."):]}


def write_sweep(out: str, grid: dict, seeds: list[int], cells: list[dict], failed: list[dict]) -> dict:
    """Write ``out/sweep.json``: ``grid`` (one row per finished cell: its settings and each
    ``results`` accuracy, averaged over seeds), ``axes``, ``seeds``, ``cells`` (per cell: name,
    settings, run folders, ``summary`` of every number) and ``failed`` runs. Returns it."""
    data = {"grid": [{**c["settings"], **result_means(c["summary"])} for c in cells],
            "axes": {k: list(v) for k, v in grid.items()}, "seeds": seeds, "cells": cells, "failed": failed}
    atomic_write_json(os.path.join(out, artifacts.SWEEP), data)
    return data


def print_table(cells: list[dict], n_seeds: int) -> None:
    """One line per cell: each top-level ``results`` accuracy as mean ± 95% half-width (or, for a
    report without ``results``, its first numbers)."""
    if not cells:
        return
    metrics = plotted_metrics(cells)
    rows = []
    for c in cells:
        s = c["summary"]
        rows.append([c["name"] or "(all)"] + [
            "-" if m not in s else f"{s[m]['mean']:.3f}" if n_seeds == 1 else
            f"{s[m]['mean']:.3f} ±{(s[m]['ci95'][1] - s[m]['ci95'][0]) / 2:.3f}" for m in metrics])
    title = "one seed" if n_seeds == 1 else f"mean ± 95% CI half-width over {n_seeds} seeds"
    print(format_table(["cell"] + [m.removeprefix("results.") for m in metrics], rows, title=title))


def plotted_metrics(cells: list[dict]) -> list[str]:
    """The numbers a sweep's table and plots show: its ``results.*`` accuracies, else its other
    top-level numbers but ``wall_s``; at most ``MAX_PANELS``."""
    paths = list(cells[0]["summary"])
    chosen = [p for p in paths if p.startswith("results.") and p.count(".") == 1]
    chosen = chosen or [p for p in paths if "." not in p and p != "wall_s"]
    return chosen[:MAX_PANELS]


def plot_axes(out: str, grid: dict, cells: list[dict]) -> list[str]:
    """``out/sweep-<key>.png`` for each axis of ``grid``: for each shown metric, the mean over
    seeds (error bars: 95% interval) against that axis, one line per combination of the other
    axes. Returns the file names written."""
    if not cells or not grid:
        return []
    metrics = plotted_metrics(cells)
    if not metrics:
        return []
    names, ncols = [], min(3, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    for axis, values in grid.items():
        others = [k for k in grid if k != axis]
        fig, axes = subplots(nrows, ncols, figsize=(3.8 * ncols + 0.4, 3.2 * nrows), squeeze=False)
        for ax in axes.flat[len(metrics):]:
            ax.set_visible(False)
        for ax, metric in zip(axes.flat, metrics):
            for combo in itertools.product(*(tuple(map(str, grid[k])) for k in others)):
                line = [next((c for c in cells if str(c["cell"][axis]) == str(v)
                              and tuple(str(c["cell"][k]) for k in others) == combo), None) for v in values]
                xs = [i for i, c in enumerate(line) if c is not None and metric in c["summary"]]
                stats = [line[i]["summary"][metric] for i in xs]
                if not xs:
                    continue
                plot_interval(ax, xs, [s["mean"] for s in stats], [s["ci95"][0] for s in stats],
                              [s["ci95"][1] for s in stats], style="bars", capsize=3,
                              label=", ".join(f"{k}={v}" for k, v in zip(others, combo)) or None)
            ax.set_xticks(range(len(values)), [str(v) for v in values])
            ax.set_xlabel(axis)
            ax.set_title(metric, fontsize=9)
            if metric.startswith("results."):  # accuracies
                ax.set_ylim(-0.03, 1.03)
            if others and ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        names.append(os.path.basename(save_figure(fig, out, f"sweep-{axis}.png", dpi=90)))
    return names
