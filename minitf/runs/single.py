"""One run of an ``Experiment``: ``run`` (or its resume), and what it needs — turning a name
into an experiment, writing the report, describing the run.

``run`` validates everything, then creates (or resumes) the run folder (``minitf.runs.folder``),
calls ``experiment.run(ctx)``, and writes the plots and finally report.json (whose presence marks a
finished run). Under torchrun (several processes) every process validates and trains, and
process 0 alone creates the folder and writes (``minitf.runs.distributed``). ``resolve_experiment``
turns a command-line name into an experiment: a registered name (``headline``) or an import path
(``my_pkg.my_module:MyExperiment``, or ``path/to/file.py:MyExperiment``). Seeds, sweeps and
ensembles are many of these runs (``minitf.runs.sweep``, ``minitf.runs.ensemble``).
"""
import dataclasses
import importlib
import importlib.util
import json
import os
import sys
import time

import torch

from minitf import artifacts, checkpoint
from minitf.config import ModelConfig
from minitf.errors import ConfigError, RunInterrupted
from minitf.experiments import DEFAULT_EXPERIMENT, EXPERIMENTS
from minitf.experiments.base import Experiment, RunContext
from minitf.fileio import unlock_run_folder
from minitf.report import plot_loss, write_report
from minitf.runs import distributed, folder


def resolve_experiment(ref: "Experiment | str | None") -> tuple[Experiment, str]:
    """``(experiment, ref)`` for an Experiment, a registered name or ``module:Class`` / ``file.py:Class``."""
    if isinstance(ref, Experiment):
        return ref, ref.name
    ref = ref or DEFAULT_EXPERIMENT
    if ref in EXPERIMENTS:
        return EXPERIMENTS[ref], ref
    if ":" not in ref:
        raise ConfigError(f"unknown experiment {ref!r}; choose one of: {', '.join(EXPERIMENTS)}, or give your own "
                          "as module.path:ClassName (see docs/experiments.md)")
    module_name, _, class_name = ref.rpartition(":")
    try:
        if module_name.endswith(".py"):
            if not os.path.isfile(module_name):
                raise ConfigError(f"experiment file {module_name} does not exist")
            spec = importlib.util.spec_from_file_location(os.path.basename(module_name)[:-3], module_name)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path:  # `python train.py my_pkg.mod:Cls` from the user's folder
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"cannot import {module_name!r} for experiment {ref!r} ({e}); run from the folder that "
                          "holds the module, or give path/to/file.py:ClassName") from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Experiment)):
        raise ConfigError(f"{ref!r}: {module_name} has no Experiment subclass named {class_name!r}")
    experiment = cls()
    problems = [a for a in ("name", "task_cls") if not getattr(experiment, a)]
    if problems:
        raise ConfigError(f"{ref!r}: set the class attribute(s) {', '.join(problems)} (docs/experiments.md)")
    return experiment, ref


def run(experiment: Experiment | str | None = None, out: str | None = None, seed: int | None = None,
        overrides=(), device: str | None = None, overwrite: bool = False, resume: str | None = None,
        quiet: bool = False) -> dict:
    """Run (or ``resume``) one experiment; returns its report, also written to report.json.

    Raises a ``MinitfError`` subclass, before anything is written, for any bad input.
    Under torchrun with several processes this trains one model data-parallel (every process
    calls ``run`` with the same arguments; process 0 writes and prints).
    """
    if resume:
        saved = checkpoint.read_run_config(resume)
        ref = saved.get("experiment_ref") or saved.get("experiment")
        if experiment is not None:
            chosen, _ = resolve_experiment(experiment)
            if chosen.name != saved.get("experiment"):
                raise ConfigError(f"{resume} is a run of experiment {saved.get('experiment')!r}, not "
                                  f"{chosen.name!r}; resume it with `train.py --resume {resume}` alone")
        exp, ref = resolve_experiment(ref)
        ctx = folder.open_for_resume(resume, exp, ref, saved, device)
        if ctx is None:
            if not quiet and distributed.is_main():
                print(f"{resume} is a finished run (its report.json is written); nothing to resume. "
                      "Start a new run with another --out, or --overwrite.")
            return read_report(resume)
        distributed.setup(exp, ctx.train_cfg)
        distributed.barrier()  # every process has checked the folder before process 0 changes it
        if distributed.is_main():
            folder.begin_resume(ctx)
        distributed.barrier()
        return execute(ctx, quiet)
    exp, ref = resolve_experiment(experiment)
    ctx = folder.prepare_run(exp, out, seed, overrides, device, overwrite)
    if distributed.setup(exp, ctx.train_cfg):
        ctx = dataclasses.replace(ctx, run_dir=distributed.from_main(ctx.run_dir))
        distributed.barrier()
        if distributed.is_main():
            folder.create(ctx, ref)
        distributed.barrier()
        return execute(ctx, quiet)
    return execute(folder.create(ctx, ref), quiet)


def read_report(run_dir: str) -> dict:
    """The parsed ``run_dir/report.json`` of a finished run (``FileNotFoundError`` if absent)."""
    with open(os.path.join(run_dir, artifacts.REPORT)) as f:
        return json.load(f)


def execute(ctx: RunContext, quiet: bool = False) -> dict:
    """Run the experiment in a created or resumable context; plots, then report.json last
    (under torchrun: written and printed by process 0 only; every process returns the report)."""
    experiment, run_dir = ctx.experiment, ctx.run_dir
    main = distributed.is_main()
    quiet = quiet or not main
    if not quiet:
        print(f"run folder: {run_dir}\n{threads_line()}", flush=True)
    t0 = time.perf_counter()
    try:
        try:
            report = experiment.run(ctx)
        except KeyboardInterrupt:
            raise RunInterrupted(run_dir) from None
        report = {"experiment": experiment.name, "run_dir": run_dir, "seed": ctx.train_cfg.seed,
                  "architecture": describe_architecture(ctx.model_cfg), **report,
                  "wall_s": round(time.perf_counter() - t0, 2)}
        if main:
            plot_loss(run_dir, experiment.marks(report), parents=experiment.loss_branches())
            experiment.plots(run_dir, report)
            write_report(run_dir, report)
    finally:
        unlock_run_folder(run_dir)
    if not quiet:
        print(experiment.summary(report))
        print(f"\nrun folder: {run_dir}  (wall {report['wall_s']:.1f} s)")
        if line := describe_models(run_dir):
            print(line)
    return report


def threads_line() -> str:
    """The start line on threads: torch's intra-op thread count and the OpenMP wait policy, with
    the advice for a shared machine (docs/performance.md, "Threads on a busy machine")."""
    policy = os.environ.get("OMP_WAIT_POLICY", "the runtime's default (spin)")
    return (f"threads: {torch.get_num_threads()} (OMP_WAIT_POLICY {policy}); sharing this machine with "
            "other busy processes? start with OMP_NUM_THREADS=1")


def describe_models(run_dir: str) -> str:
    """One line naming the model ``minitf.load(run_dir)`` loads and the others it loads by name
    ("" for a run with one model)."""
    found = checkpoint.models(run_dir)
    default, names = found["default"], found["names"]
    if len(names) < 2:
        return ""
    which = f"the {default!r} model" if default else "model.safetensors (the last phase trained)"
    return (f"minitf.load(run_dir) loads {which}; any other by name, minitf.load(run_dir, model=NAME): "
            f"{', '.join(n for n in names if n != default)}")


def show_config(experiment: Experiment | str | None, overrides=(), seed: int | None = None,
                device: str | None = None) -> str:
    """Every ``--set`` key of an experiment with its value (after ``overrides``), by section."""
    exp, _ = resolve_experiment(experiment)
    configs = folder.build_configs(exp, list(overrides), seed, device)
    lines = [f"# {exp.name}: every --set key and its value"]
    for title, cfg in zip(("model", "train", "task", "experiment"), configs):
        fields = dataclasses.fields(cfg)
        if fields:
            lines.append(f"\n[{title}: {type(cfg).__name__}]")
            lines += [f"{f.name} = {getattr(cfg, f.name)!r}" for f in fields]
    return "\n".join(lines)


def describe_architecture(cfg: ModelConfig) -> str:
    """One line for reports and plot titles, e.g. "2 layers, d_model 64, 4 heads, attention-only,
    no conv, learned positions, pre-LN"."""
    mlp = f"MLP {cfg.d_mlp}" if cfg.d_mlp else "attention-only"
    conv = f", causal conv {cfg.conv_kernel}" if cfg.conv_kernel else ", no conv"
    extra = (f", vector read-in d_input {cfg.d_input}" if cfg.d_input else "") + (
        f", {cfg.attention} attention" if cfg.attention != "softmax" else "")
    layers = f"{cfg.n_layers} layer{'s' if cfg.n_layers != 1 else ''}"
    positions = "no positions" if cfg.positional == "none" else f"{cfg.positional} positions"
    return (f"{layers}, d_model {cfg.d_model}, {cfg.n_heads} heads, {mlp}{conv}, "
            f"{positions}, {'pre-LN' if cfg.layer_norm else 'no LN'}{extra}")
