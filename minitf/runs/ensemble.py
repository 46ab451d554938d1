"""``--ensemble K``: run an experiment for K seeds, training their first phase as one ensemble.

Each member is an ordinary run folder (``out/seed<N>``) with its own config, seeded data
stream, metrics, checkpoint and report, so probes, ``minitf.load`` and ``--resume`` treat a
member exactly like a single run. How:
1. every member's configs and folder are checked, then the folders are created;
2. each member's ``run`` is started on a context that stops at its first ``ctx.train``
   (``RunContext.stop_at_first_phase``), which hands over the seeded model, the data
   sampler, the phase's stream and its per-step evaluation;
3. those first phases train together (``minitf.ensemble``: stacked weights + vmap), logged
   per member as a Trainer would, and each member's phase weights + a checkpoint marking
   the phase done are written;
4. each member then runs as ``--resume`` would: the finished phase loads from its weights,
   later phases (if any) train one member at a time, and the report is written.
Member losses equal single runs to float32 reordering (tests/test_ensemble.py).
"""
import dataclasses
import os
import time

from minitf import artifacts
from minitf.config import seed_range
from minitf.ensemble import Ensemble, train_ensemble
from minitf.errors import ConfigError, RunExistsError
from minitf.experiments.base import Experiment, PhaseReached, PhaseSpec, RunContext
from minitf.runs import folder
from minitf.runs.distributed import refuse
from minitf.runs.seeds import summarize_seeds
from minitf.runs.single import resolve_experiment, run
from minitf.trainer import Trainer, lr_at, progress_bar


def first_phase(ctx: RunContext) -> PhaseSpec:
    """The member's first phase, collected by running its experiment up to its first ``ctx.train``."""
    probe = dataclasses.replace(ctx, stop_at_first_phase=True, done=[])
    try:
        ctx.experiment.run(probe)
    except PhaseReached as reached:
        return reached.phase
    raise ConfigError(f"experiment {ctx.experiment.name!r} trains nothing, so it has nothing to ensemble")


def run_ensemble(experiment: Experiment | str | None, k: int, out: str | None = None, seed: int | None = None,
                 overrides=(), device: str | None = None, overwrite: bool = False) -> dict:
    """Train seeds seed..seed+k-1 (first phase batched), report each member and their mean."""
    refuse("--ensemble")
    if k < 2:
        raise ConfigError(f"--ensemble needs K >= 2 (got {k}); for one model run without it")
    if device == "cuda":
        raise ConfigError("--ensemble trains on CPU only; drop --device cuda")
    experiment, ref, out, prepared = prepare_seed_runs(experiment, k, out, seed, overrides, device, overwrite,
                                                       "ensemble")
    ctx0 = prepared[0]  # the K members train at once: K times one member's memory, checked before any folder
    folder.check_memory(ctx0.model_cfg, ctx0.train_cfg,
                        min(ctx0.model_cfg.n_ctx, experiment.max_seq_len(ctx0.task) - 1), members=k)
    contexts = [folder.create(ctx, ref) for ctx in prepared]
    phases = [first_phase(ctx) for ctx in contexts]
    cfg = phases[0].train_cfg
    t0 = time.perf_counter()
    train_members(contexts, phases, cfg)
    ensemble_s = time.perf_counter() - t0
    reports = [run(resume=ctx.run_dir, device=device) for ctx in contexts]
    extra = {"ensemble": {"members": k, "phase": phases[0].name, "steps": cfg.steps, "wall_s": round(ensemble_s, 2),
                          "member_steps_per_s": round(k * cfg.steps / ensemble_s, 2)}}
    return summarize_seeds(experiment, reports, out, extra)


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


def prepare_seed_runs(experiment, n_seeds: int, out, seed, overrides, device, overwrite, kind: str):
    """(experiment, ref, out, [RunContext per seed]): every seed's configs and folder checked, nothing written."""
    experiment, ref = resolve_experiment(experiment)
    seeds = seed_range(seed, n_seeds, "--ensemble" if kind == "ensemble" else "--seeds")
    out = out or os.path.join("runs", experiment.name, f"{kind}{seeds[0]}-{seeds[-1]}")
    check_parent(out, overwrite)
    return experiment, ref, out, [folder.prepare_run(experiment, d, s, overrides, device, overwrite)
                                  for d, s in zip(seed_dirs(out, seeds), seeds)]


def train_members(contexts: list[RunContext], phases: list[PhaseSpec], cfg) -> None:
    """One batched training of every member's first phase; logs and saves per member like Trainer.fit."""
    ensemble = Ensemble(lambda i: phases[i].model, list(range(len(phases))))
    trainers = [Trainer(p.model, cfg, None, ctx.run_dir, phase=p.name, evaluate=p.evaluate)
                for ctx, p in zip(contexts, phases)]
    batch_fns = [ctx.batch_fn(p.sample, p.stream, cfg.batch_size) for ctx, p in zip(contexts, phases)]
    bar = progress_bar(cfg.steps, 0, f"{phases[0].name} x{len(phases)}")

    def on_step(step: int, losses: list[float]) -> None:
        bar.update(1)
        log = step % cfg.log_every == 0 or step == cfg.steps
        evaluate = cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps
        for i, trainer in enumerate(trainers):
            trainer.step = step
            if log:
                trainer.log({"step": step, "loss": losses[i], "lr": lr_at(step - 1, cfg)})
            if evaluate and trainer.evaluate:
                trainer.model = ensemble.member(i)
                trainer.run_eval()

    train_ensemble(ensemble, cfg, batch_fns, on_step)
    bar.close()
    for i, trainer in enumerate(trainers):
        trainer.model = ensemble.member(i)
        trainer.finish([])
