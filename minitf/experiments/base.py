"""What every experiment shares: config assembly, the run folder, resume, the report.

An experiment is data (a task dataclass from toy_tasks) + default model/train configs +
``run(ctx)``, which trains its phases and returns the report dict. ``run_experiment``
does everything around it: validation before any work, a fresh or resumed run folder,
config.json / vocab.json, report.json, the printed table and the loss plot.
"""
import abc
import dataclasses
import os
import shutil
import time
from dataclasses import dataclass

import numpy as np
import torch

from minitf import checkpoint
from minitf.config import ModelConfig, TrainConfig, apply_overrides, from_dict, to_dict
from minitf.data import Vocab, collate
from minitf.errors import ConfigError, RunExistsError
from minitf.fileio import remove_stale_temp_files
from minitf.model import Transformer
from minitf.report import plot_loss, write_report
from minitf.trainer import Trainer

RUN_ARTIFACTS = ("config.json", "vocab.json", "metrics.jsonl", "model.safetensors",
                 "report.json", "trainer_state.pt")


@dataclass
class RunContext:
    experiment: "Experiment"
    run_dir: str
    model_cfg: ModelConfig
    train_cfg: TrainConfig
    task: object
    vocab: Vocab
    resume_state: dict | None

    def new_model(self) -> Transformer:
        torch.manual_seed(self.train_cfg.seed)  # same seed ⇒ same initial weights
        return Transformer(self.model_cfg).to(self.train_cfg.device)

    def batch_fn(self, sample, phase_index: int = 0, batch_size: int | None = None):
        """Batches as a pure function of (seed, phase, step): resume needs no loader state."""
        seed, size = self.train_cfg.seed, batch_size or self.train_cfg.batch_size
        length = self.model_cfg.n_ctx + 1

        def batch(step: int):
            rng = np.random.default_rng([seed, phase_index, step])
            examples = sample(rng, size)
            return collate(examples, self.vocab, length=min(length, max(len(e.tokens) for e in examples)))

        return batch

    def train(self, model, sample, phase: str = "train", phase_index: int = 0, evaluate=None,
              train_cfg: TrainConfig | None = None, phases_before=()) -> Trainer:
        cfg = train_cfg or self.train_cfg
        trainer = Trainer(model, cfg, self.batch_fn(sample, phase_index, cfg.batch_size),
                          self.run_dir, phase=phase, evaluate=evaluate)
        trainer.fit(self.resume_state, phases_before=list(phases_before))
        return trainer

    def eval_rng(self, salt: int = 0) -> np.random.Generator:
        """A generator for evaluation data, independent of the training stream."""
        return np.random.default_rng([self.train_cfg.seed, 10_000 + salt])


class Experiment(abc.ABC):
    name = ""
    description = ""
    task_cls = None

    def default_task(self):
        return self.task_cls()

    def default_model(self, task) -> ModelConfig:
        return ModelConfig()

    def default_train(self) -> TrainConfig:
        return TrainConfig()

    def vocab(self, task) -> Vocab:
        return Vocab(task.vocab_tokens())

    @abc.abstractmethod
    def max_seq_len(self, task) -> int:
        """Longest sequence the task produces; n_ctx must hold it."""

    @abc.abstractmethod
    def run(self, ctx: RunContext) -> dict:
        """Train the experiment's phases and return its report (without the common keys)."""

    def summary(self, report: dict) -> str:
        return ""

    def marks(self, report: dict) -> dict:
        """Labelled steps to draw on the loss plot."""
        return {}

    def plots(self, run_dir: str, report: dict) -> None:
        """Experiment-specific PNGs beside loss.png."""


def build_configs(experiment: Experiment, overrides: list[str], seed: int | None = None,
                  device: str | None = None):
    """Task overrides apply first (model defaults such as vocab_size derive from the task)."""
    task_cls = experiment.task_cls
    task_keys = {f.name for f in dataclasses.fields(task_cls)}
    task_over = [o for o in overrides if o.split("=", 1)[0].strip() in task_keys]
    rest = [o for o in overrides if o not in task_over]
    (task,) = apply_overrides([experiment.default_task()], task_over)
    _validate_task(task)
    model_cfg, train_cfg = apply_overrides([experiment.default_model(task), experiment.default_train(), task], rest)[:2]
    if seed is not None:
        train_cfg = dataclasses.replace(train_cfg, seed=seed)
    if device is not None:
        train_cfg = dataclasses.replace(train_cfg, device=device)
    return model_cfg, train_cfg, task


def _validate_task(task):
    try:
        task.validate()
    except ValueError as e:
        raise ConfigError(f"invalid {type(task).__name__}: {e}") from None


def check_compatible(experiment: Experiment, model_cfg: ModelConfig, train_cfg: TrainConfig, task, vocab):
    model_cfg.validate()
    train_cfg.validate()
    if len(vocab) > model_cfg.vocab_size:
        raise ConfigError(f"vocab_size={model_cfg.vocab_size} is smaller than the task's "
                          f"{len(vocab)} tokens; set --set vocab_size={len(vocab)} or larger")
    need = experiment.max_seq_len(task)
    if need - 1 > model_cfg.n_ctx:  # inputs are the sequence minus its last token
        raise ConfigError(f"n_ctx={model_cfg.n_ctx} is smaller than the task's sequences "
                          f"({need - 1} input tokens); set --set n_ctx={need - 1} or larger")
    if train_cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' but no CUDA GPU is available; use --device cpu")


def prepare_run_dir(run_dir: str, overwrite: bool) -> None:
    existing = [a for a in RUN_ARTIFACTS if os.path.exists(os.path.join(run_dir, a))]
    if existing and not overwrite:
        raise RunExistsError(f"{run_dir} already holds a run ({', '.join(existing)}); continue it with "
                             f"--resume {run_dir}, choose another --out, or pass --overwrite")
    if existing:
        shutil.rmtree(run_dir)
    os.makedirs(run_dir, exist_ok=True)


def run_experiment(experiment: Experiment, out: str | None = None, seed: int | None = None,
                   overrides: list[str] = (), device: str | None = None, overwrite: bool = False,
                   resume: str | None = None, quiet: bool = False) -> dict:
    """Validate everything, then run; returns the report (also written to report.json)."""
    if not resume:
        return _execute(create_run(experiment, out, seed, overrides, device, overwrite), quiet)
    saved = checkpoint.read_run_config(resume)
    if saved.get("experiment") != experiment.name:
        raise ConfigError(f"{resume} is a run of experiment {saved.get('experiment')!r}, not "
                          f"{experiment.name!r}; resume it with `train.py --resume {resume}` alone")
    model_cfg = from_dict(ModelConfig, saved["model"])
    train_cfg = from_dict(TrainConfig, saved["train"])
    task = from_dict(experiment.task_cls, saved["task"])
    if device is not None:
        train_cfg = dataclasses.replace(train_cfg, device=device)
    run_dir = resume
    vocab = experiment.vocab(task)
    check_compatible(experiment, model_cfg, train_cfg, task, vocab)
    remove_stale_temp_files(run_dir)
    state_path = os.path.join(run_dir, checkpoint.TRAINER_STATE)
    if os.path.exists(state_path):
        resume_state = checkpoint.load_trainer_state(state_path)
    else:  # killed before its first checkpoint: start over, keeping config and vocab
        resume_state = {"phase": None, "phases_done": []}
        for name in ("metrics.jsonl", checkpoint.WEIGHTS):
            if os.path.exists(os.path.join(run_dir, name)):
                os.unlink(os.path.join(run_dir, name))
    return _execute(RunContext(experiment, run_dir, model_cfg, train_cfg, task, vocab, resume_state), quiet)


def create_run(experiment: Experiment, out: str | None = None, seed: int | None = None, overrides=(),
               device: str | None = None, overwrite: bool = False) -> RunContext:
    """Validate the configs, then make a fresh run folder with config.json and vocab.json."""
    model_cfg, train_cfg, task = build_configs(experiment, list(overrides), seed, device)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = out or os.path.join("runs", experiment.name, f"seed{train_cfg.seed}-{stamp}")
    vocab = experiment.vocab(task)
    check_compatible(experiment, model_cfg, train_cfg, task, vocab)
    prepare_run_dir(run_dir, overwrite)
    checkpoint.write_run_config(run_dir, {"experiment": experiment.name, "model": to_dict(model_cfg),
                                          "train": to_dict(train_cfg), "task": to_dict(task)})
    vocab.save(os.path.join(run_dir, checkpoint.VOCAB))
    return RunContext(experiment, run_dir, model_cfg, train_cfg, task, vocab, None)


def _execute(ctx: RunContext, quiet: bool) -> dict:
    experiment, run_dir, model_cfg, train_cfg = ctx.experiment, ctx.run_dir, ctx.model_cfg, ctx.train_cfg
    t0 = time.perf_counter()
    report = experiment.run(ctx)
    report = {"experiment": experiment.name, "run_dir": run_dir, "seed": train_cfg.seed,
              "architecture": describe_architecture(model_cfg), **report,
              "wall_s": round(time.perf_counter() - t0, 2)}
    write_report(run_dir, report)
    plot_loss(run_dir, experiment.marks(report))
    experiment.plots(run_dir, report)
    if not quiet:
        print(experiment.summary(report))
        print(f"\nrun folder: {run_dir}  (wall {report['wall_s']:.1f} s)")
    return report


def describe_architecture(cfg: ModelConfig) -> str:
    mlp = f"MLP {cfg.d_mlp}" if cfg.d_mlp else "attention-only"
    conv = f", causal conv {cfg.conv_kernel}" if cfg.conv_kernel else ", no conv"
    return (f"{cfg.n_layers} layers, d_model {cfg.d_model}, {cfg.n_heads} heads, {mlp}{conv}, "
            f"{cfg.positional} positions, {'pre-LN' if cfg.layer_norm else 'no LN'}")


T_975 = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571, 7: 2.447, 8: 2.365, 9: 2.306, 10: 2.262}


def run_seeds(experiment: Experiment, n_seeds: int, out: str | None = None, seed: int | None = None,
              overrides: list[str] = (), device: str | None = None, overwrite: bool = False) -> dict:
    """Run ``n_seeds`` seeds into ``out/seed<N>`` and write ``out/report.json`` with, for every
    result record, the mean accuracy over seeds and a 95% t-interval over seeds."""
    first = 0 if seed is None else seed
    out = out or os.path.join("runs", experiment.name, f"seeds{first}-{first + n_seeds - 1}")
    reports = [run_experiment(experiment, out=os.path.join(out, f"seed{s}"), seed=s, overrides=overrides,
                              device=device, overwrite=overwrite) for s in range(first, first + n_seeds)]
    return summarize_seeds(experiment, reports, out)


def summarize_seeds(experiment: Experiment, reports: list[dict], out: str, extra: dict | None = None) -> dict:
    """``out/report.json``: every result record as its mean over the seeds' reports with a 95% t-interval."""
    from minitf.fileio import atomic_write_json
    from minitf.report import format_table

    merged = _merge([r["results"] for r in reports]) if all("results" in r for r in reports) else {}
    report = {"experiment": experiment.name, "seeds": [r["seed"] for r in reports],
              "architecture": reports[0]["architecture"], "results": merged,
              "runs": [r["run_dir"] for r in reports], "wall_s": sum(r["wall_s"] for r in reports), **(extra or {})}
    atomic_write_json(os.path.join(out, "report.json"), report)
    rows = [[path] + [f"{v['acc']:.3f} ±{(v['ci95'][1] - v['ci95'][0]) / 2:.3f}"] for path, v in _flatten(merged)]
    print(format_table(["result", f"mean over {len(reports)} seeds ± 95% CI half-width"], rows))
    print(f"\nseed runs and the merged report.json are in {out}")
    return report


def _merge(results: list):
    """Nested dicts of {"acc", "ci95", "chance", "n"} records → one record per leaf over seeds."""
    first = results[0]
    if isinstance(first, dict) and "acc" in first:
        accs = np.array([r["acc"] for r in results])
        mean = float(accs.mean())
        half = T_975.get(len(accs), 1.96) * float(accs.std(ddof=1)) / np.sqrt(len(accs)) if len(accs) > 1 else 0.0
        return {"acc": mean, "ci95": [max(0.0, mean - half), min(1.0, mean + half)], "chance": first["chance"],
                "n": int(sum(r["n"] for r in results)), "per_seed": accs.tolist()}
    return {k: _merge([r[k] for r in results]) for k in first if all(k in r for r in results)}


def _flatten(tree, prefix=""):
    if isinstance(tree, dict) and "acc" in tree:
        return [(prefix, tree)]
    return [item for k, v in tree.items() for item in _flatten(v, f"{prefix}.{k}" if prefix else k)]
