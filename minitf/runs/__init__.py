"""The runner: one run, seeds, ensembles and sweeps of any ``Experiment`` — the package face.

This file only re-exports; the modules, each importing only modules listed above it:

- ``distributed``: torchrun's environment → a process group (one model on several processes);
- ``folder``: the run-folder lifecycle (configs, checks, create, resume);
- ``single``: one run — ``run``, ``resolve_experiment``, ``execute``, ``read_report``, ``show_config``;
- ``seeds``: merging the reports of several seeds (means and 95% t-intervals over seeds);
- ``workers``: where a sweep's runs execute (this process, or Ray tasks);
- ``grid``: planning a sweep — grid flags → cells → every run checked and classified;
- ``summary``: a sweep's ``sweep.json``, table and plots;
- ``sweep``: ``run_seeds`` and ``run_sweep`` (``--seeds``, ``--sweep``, ``--grid``): plan, run, merge;
- ``ensemble``: ``run_ensemble`` (``--ensemble K``).

Modules inside the package import each other by their own names, never this face
(tests/test_imports.py checks it, and that there is no import cycle).
"""
from minitf.runs.ensemble import run_ensemble
from minitf.runs.single import (describe_architecture, describe_models, execute, read_report,  # noqa: F401 — public
                                resolve_experiment, run, show_config)
from minitf.runs.sweep import run_seeds, run_sweep

__all__ = ["run", "run_seeds", "run_ensemble", "run_sweep", "resolve_experiment", "execute", "show_config"]
