"""``--sweep``: every combination of an experiment's ``sweep_grid``, each an ordinary run folder.

``out/<key>=<value>-<key>=<value>/`` per cell, then ``out/sweep.json`` (one row per cell: its
settings and every accuracy of its report's ``results``) and the experiment's sweep plot.
Every cell's configs and folder are checked before the first cell runs.
"""
import itertools
import os

from minitf import artifacts
from minitf.errors import ConfigError
from minitf.experiments.base import Experiment
from minitf.fileio import atomic_write_json


def cells(grid: dict) -> list[dict]:
    """Every combination of ``{key: (values...)}`` as ``{key: value}`` dicts, the last key varying fastest."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def cell_name(cell: dict) -> str:
    """A cell's folder name, ``key=value-key=value`` in the grid's key order."""
    return "-".join(f"{k}={v}" for k, v in cell.items())


def run_sweep(experiment: Experiment | str | None, out: str | None = None, seed: int | None = None,
              overrides=(), device: str | None = None, overwrite: bool = False) -> dict:
    """Run every cell of ``experiment.sweep_grid`` as an ordinary run in ``out/<cell_name>``
    (default ``runs/<name>/sweep``), after preparing (validating) all cells first; then write
    ``out/sweep.json`` and the experiment's ``sweep_plot``. Returns ``{"grid": rows}``, one row
    per cell: its settings plus each ``results`` entry's accuracy in [0, 1]. Raises
    ``ConfigError`` for an empty grid or an override of a swept key, ``RunExistsError`` for an
    ``out`` that is a file or holds a merged report (unless ``overwrite``), and whatever
    ``prepare_run`` raises for a cell."""
    from minitf.runs import execute, folder, resolve_experiment
    from minitf.runs.seeds import check_parent

    experiment, ref = resolve_experiment(experiment)
    if not experiment.sweep_grid:
        raise ConfigError(f"experiment {experiment.name!r} has no --sweep grid (its sweep_grid is empty)")
    out = out or os.path.join("runs", experiment.name, "sweep")
    check_parent(out, overwrite)
    grid = cells(experiment.sweep_grid)
    swept = [o for o in overrides if o.split("=", 1)[0].strip() in experiment.sweep_grid]
    if swept:
        raise ConfigError(f"--set {swept[0]} sets a key the sweep varies ({', '.join(experiment.sweep_grid)})")
    prepared = [folder.prepare_run(experiment, os.path.join(out, cell_name(c)), seed, [
        *overrides, *(f"{k}={v}" for k, v in c.items())], device, overwrite) for c in grid]
    rows = []
    for cell, ctx in zip(grid, prepared):
        report = execute(folder.create(ctx, ref), quiet=True)
        accs = {k: r["acc"] for k, r in report.get("results", {}).items() if isinstance(r, dict) and "acc" in r}
        rows.append({**cell, **accs})
        print(f"{cell_name(cell)}: " + "  ".join(f"{k} {v:.3f}" for k, v in accs.items()), flush=True)
    atomic_write_json(os.path.join(out, artifacts.SWEEP), {"grid": rows})
    experiment.sweep_plot(out, rows)
    return {"grid": rows}
