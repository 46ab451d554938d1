"""Planning a sweep: ``--grid key=v1,v2`` flags (or an experiment's ``sweep_grid``) → cells →
every run of every cell × seed, checked and classified before any run starts (``plan``).

A grid is ``{key: (value, ...)}``; its cells are every combination, ``{key: value}``, named
``key=value-key=value`` (the folder of the cell). Each run's folder is classified: finished
(report.json: skipped), unfinished with the same settings (resumed from its checkpoint) or new;
a bad cell raises one error naming it, and nothing is written. ``minitf.runs.sweep`` runs the plan.
"""
import dataclasses
import difflib
import itertools
import json
import os
import typing

from minitf import artifacts, checkpoint
from minitf.config import _coerce, seed_range, to_dict
from minitf.errors import ConfigError, MinitfError, RunExistsError
from minitf.experiments.base import Experiment
from minitf.fileio import to_json
from minitf.runs import folder
from minitf.runs.single import resolve_experiment
from minitf.runs.workers import RunSpec

GRID_SYNTAX = "--grid takes KEY=V1,V2,... (e.g. --grid lr=1e-3,3e-3); repeat --grid for more keys"


def parse_grid(flags: list[str]) -> dict[str, tuple[str, ...]]:
    """``["lr=1e-3,3e-3", "n_layers=1,2"]`` → ``{"lr": ("1e-3", "3e-3"), "n_layers": ("1", "2")}``
    (values stay strings; the config's own types parse them, as for ``--set``). Raises
    ``ConfigError`` naming the flag for: no ``=``, an empty key or value, a key given twice, a
    value repeated, or a value holding ``/`` (values become folder names)."""
    grid: dict[str, tuple[str, ...]] = {}
    for flag in flags:
        key, eq, values = flag.partition("=")
        key = key.strip()
        items = tuple(v.strip() for v in values.split(","))
        if not eq or not key or not all(items):
            raise ConfigError(f"--grid {flag!r}: {GRID_SYNTAX}")
        if key in grid:
            raise ConfigError(f"--grid {key} is given twice; put all its values in one flag: "
                              f"--grid {key}={','.join(grid[key] + items)}")
        repeated = sorted({v for v in items if items.count(v) > 1})
        if repeated:
            raise ConfigError(f"--grid {flag!r} repeats the value {repeated[0]!r}")
        if any("/" in v for v in items):
            raise ConfigError(f"--grid {flag!r}: values name folders, so they may not contain '/'")
        grid[key] = items
    return grid


def check_keys(grid: dict, valid: list[str], overrides=()) -> None:
    """Raise ``ConfigError`` for a grid key that is no config key (naming the nearest valid
    one) or that an override (``--set key=value``) also sets."""
    for key in grid:
        if key not in valid:
            near = difflib.get_close_matches(key, valid, n=1)
            hint = f"did you mean {near[0]}? " if near else ""
            raise ConfigError(f"--grid {key}: unknown config key; {hint}`python train.py EXPERIMENT --show-config` "
                              "lists every key")
    swept = [o for o in overrides if o.split("=", 1)[0].strip() in grid]
    if swept:
        raise ConfigError(f"--set {swept[0]} sets a key the sweep varies ({', '.join(grid)}); drop one of them")


def check_distinct(grid: dict, configs) -> None:
    """Raise ``ConfigError`` when two values of a grid key are the same setting once parsed by the
    key's type (``lr=1e-3,0.001``, ``n_layers=2,02``, ``layer_norm=true,1``): each would train the
    same model again. Values that do not parse are left to the run's own check, which names them."""
    types = {f.name: typing.get_type_hints(type(cfg))[f.name] for cfg in configs for f in dataclasses.fields(cfg)}
    for key, values in grid.items():
        if key not in types:
            continue
        seen: dict = {}
        for value in values:
            try:
                parsed = _coerce(key, value, types[key]) if isinstance(value, str) else value
            except ConfigError:
                continue
            if parsed in seen:
                raise ConfigError(f"--grid {key}: {seen[parsed]} and {value} are the same value ({parsed!r}) and "
                                  f"would train the same model twice; give each value once")
            seen[parsed] = value


def cells(grid: dict) -> list[dict]:
    """Every combination of ``{key: (values...)}`` as ``{key: value}`` dicts, the last key varying
    fastest; ``[{}]`` (one cell, no settings) for an empty grid."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def cell_name(cell: dict) -> str:
    """A cell's folder name, ``key=value-key=value`` in the grid's key order ("" for no settings)."""
    return "-".join(f"{k}={v}" for k, v in cell.items())


def cell_overrides(cell: dict) -> list[str]:
    """The cell's settings as ``--set`` overrides, ``["key=value", ...]``."""
    return [f"{k}={v}" for k, v in cell.items()]


@dataclasses.dataclass
class SweepPlan:
    """Every run of a sweep, checked: ``cells`` holds ``(cell, settings, [(spec, status)])`` per
    cell, ``settings`` the cell's keys as the configs parsed them, ``status`` "done", "resume" or
    "new"; ``threads``: each Ray task's torch threads (None: not on Ray)."""

    experiment: Experiment
    out: str
    seeds: list[int]
    cells: list[tuple[dict, dict, list[tuple[RunSpec, str]]]]
    threads: int | None


def plan(experiment, grid: dict, n_seeds: int, out: str | None, seed: int | None, overrides=(),
         device: str | None = None, overwrite: bool = False, on_ray: bool = False) -> SweepPlan:
    """Every run of ``cells(grid) × seeds`` (``out`` default: ``runs/<name>/sweep``, or
    ``runs/<name>/seeds<first>-<last>`` for no grid), each checked by ``plan_run``; writes nothing.
    Raises ``ConfigError`` (a bad grid key, repeated values, a cell's bad config naming the cell)
    and ``RunExistsError`` (``out`` is a file; a run folder holds other settings)."""
    exp, ref = resolve_experiment(experiment)
    seeds = seed_range(seed, n_seeds)
    out = out or os.path.join("runs", exp.name, "sweep" if grid else f"seeds{seeds[0]}-{seeds[-1]}")
    if os.path.exists(out) and not os.path.isdir(out):
        raise RunExistsError(f"--out {out} is an existing file, not a folder; choose another --out")
    configs = folder.build_configs(exp, list(overrides), seed, device)
    keys = [f.name for cfg in configs for f in dataclasses.fields(cfg)]
    check_keys(grid, keys, overrides)
    check_distinct(grid, configs)
    threads = (int(os.environ.get("OMP_NUM_THREADS", "1") or 1) if on_ray else None)
    target = experiment if isinstance(experiment, Experiment) else ref
    planned = []
    for cell in cells(grid):
        name = cell_name(cell)
        runs, settings = [], {}
        for s in seeds:
            label = " ".join(filter(None, [name, f"seed {s}" if n_seeds > 1 or not grid else ""]))
            run_dir = os.path.join(out, *filter(None, [name, f"seed{s}" if n_seeds > 1 or not grid else ""]))
            cfg_overrides = (*overrides, *cell_overrides(cell))
            status, settings = plan_run(exp, ref, label, run_dir, s, cfg_overrides, device, overwrite, list(cell))
            runs.append((RunSpec(label, target, run_dir, s, cfg_overrides, device, overwrite, status == "resume",
                                 os.getcwd(), threads), status))
        planned.append((cell, settings, runs))
    return SweepPlan(exp, out, seeds, planned, threads)


def plan_run(experiment, ref: str, label: str, run_dir: str, seed: int, overrides, device, overwrite: bool,
             keys: list[str]) -> tuple[str, dict]:
    """``(status, settings)`` of one run: "done" (finished: skip), "resume" (unfinished, same
    settings) or "new"; ``settings`` are the ``keys``' values as the configs parsed them. Checks
    everything a run would before it starts, writing nothing; every error names ``label``."""
    try:
        if not overwrite and os.path.exists(os.path.join(run_dir, artifacts.CONFIG)):
            configs = folder.build_configs(experiment, list(overrides), seed, device)
            saved = checkpoint.read_run_config(run_dir)
            check_same_settings(experiment, configs, saved, run_dir)
            status = "done" if os.path.exists(os.path.join(run_dir, artifacts.REPORT)) else "resume"
            if status == "resume":
                folder.open_for_resume(run_dir, experiment, ref, saved, device)
        else:
            ctx = folder.prepare_run(experiment, run_dir, seed, overrides, device, overwrite)
            configs, status = (ctx.model_cfg, ctx.train_cfg, ctx.task, ctx.config), "new"
    except MinitfError as e:
        raise type(e)(f"{'cell ' if keys else ''}{label}: {e}") from None
    values = {k: v for cfg in configs for k, v in to_dict(cfg).items()}
    return status, {k: values[k] for k in keys}


def check_same_settings(experiment, configs, saved: dict, run_dir: str) -> None:
    """Raise ``RunExistsError`` unless the run in ``run_dir`` (its config.json, ``saved``) was made
    with ``configs`` (device aside, which a resume may change)."""
    if saved.get("experiment") != experiment.name:
        raise RunExistsError(f"{run_dir} holds a run of experiment {saved.get('experiment')!r}; choose another --out")
    old, new = ({k: v for cfg in group for k, v in json.loads(to_json(to_dict(cfg))).items()}
                for group in (folder.saved_configs(experiment, saved), configs))
    diff = [f"{k}={old.get(k)!r} there, {v!r} here" for k, v in new.items() if k != "device" and old.get(k) != v]
    if diff:
        raise RunExistsError(f"{run_dir} holds a run with other settings ({'; '.join(diff[:3])}); re-run with its "
                             "settings to continue it, choose another --out, or pass --overwrite")
