"""A sweep's grid: ``--grid key=v1,v2`` flags (or an experiment's ``sweep_grid``) → cells.

A grid is ``{key: (value, ...)}``; its cells are every combination, ``{key: value}``, named
``key=value-key=value`` (the folder of the cell). Every check here runs before any run starts.
"""
import difflib
import itertools

from minitf.errors import ConfigError

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
    import dataclasses
    import typing

    from minitf.config import _coerce

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
