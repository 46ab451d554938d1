"""The experiment contract: what a user subclasses to run their own experiment.

An experiment is data (a task dataclass from ``toy_tasks``) + default configs + ``run(ctx)``,
which trains its phases through ``ctx.train`` and returns the report dict. Everything around
it — validating configs, the run folder, resume, seeds, ensembles, sweeps, report.json, the
plots — is the runner's (``minitf.runs``). docs/experiments.md walks through a complete
example; in short:

    class MyExperiment(Experiment):
        name = "mine"
        task_cls = MyTask                     # a dataclass with validate() and vocab_tokens()
        def max_seq_len(self, task): ...      # longest example in tokens
        def run(self, ctx):
            model = ctx.new_model()
            ctx.train(model, ctx.task.sample, phase="train", evaluate=lambda m, step: {...})
            return {"results": {...}}

Rules the runner relies on (each is checked, with a clear error, where it can be):
- config keys are unique across the model, train, task and experiment configs, so
  ``--set key=value`` needs no prefix;
- ``sample(rng, n) -> list[Example]`` (or a ready ``Batch``, used as is: vector inputs) is a pure function of the generator it is given, so a
  resumed run sees exactly the batches an uninterrupted one would (a sample with the attribute
  ``wants_step = True`` is called ``sample(rng, n, step=step)``, for schedules such as curricula);
- ``phases`` (optional) lists every phase name in order; a phase's data stream is its index
  there. Without it, phases are numbered in the order they first train;
- for ``--ensemble``, whatever ``run`` does before its first ``ctx.train`` runs once more per
  member (to collect that phase), so keep it cheap and deterministic.
"""
import abc
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from minitf.artifacts import phase_weights
from minitf.checkpoint import load_weights
from minitf.config import ModelConfig, TrainConfig
from minitf.data import Batch, Vocab, collate
from minitf.errors import ConfigError
from minitf.model import Transformer
from minitf.trainer import Trainer


@dataclass
class NoSettings:
    """The experiment config of an experiment without settings of its own."""

    def validate(self):
        """Nothing to check; returns ``self``."""
        return self


class Experiment(abc.ABC):
    """Subclass this. Class attributes:

    name:        the name on the command line and in config.json
    description: one line for ``train.py --help``
    task_cls:    the task dataclass (toy_tasks); its fields are ``--set`` keys
    config_cls:  a dataclass of the experiment's own settings (e.g. steps of each phase);
                 its fields are ``--set`` keys too; it may define ``validate()``
    phases:      phase names in order (optional; see the module docstring)
    artifacts:   extra files the experiment writes into the run folder (its PNGs), so
                 ``--overwrite`` knows them as minitf's
    sweep_grid:  ``{key: (values...)}`` that ``--sweep`` runs (every combination)
    main_model:  the phase names whose weights ``minitf.load(run_dir)`` loads by default, the first
                 one the run trained (e.g. ``("mixture",)`` rather than a control trained after it);
                 empty: the last phase trained. Any phase loads by name: ``minitf.load(run_dir, model=NAME)``
    """

    name = ""
    description = ""
    task_cls: type = None
    config_cls: type = NoSettings
    phases: tuple[str, ...] = ()
    artifacts: tuple[str, ...] = ()
    sweep_grid: dict = {}
    main_model: tuple[str, ...] = ()

    def default_task(self):
        """The task with its defaults, ``task_cls()``; override to change them."""
        return self.task_cls()

    def default_config(self):
        """The experiment's own settings with their defaults, ``config_cls()``."""
        return self.config_cls()

    def default_model(self, task) -> ModelConfig:
        """The default ModelConfig for ``task`` (here ``ModelConfig()``; ``--set`` overrides it).
        Its ``vocab_size`` must hold the vocab and its ``n_ctx`` ``max_seq_len(task) - 1``, or the
        runner refuses the run with a ``ConfigError``."""
        return ModelConfig()

    def default_train(self) -> TrainConfig:
        """The default TrainConfig (here ``TrainConfig()``; ``--set`` overrides it)."""
        return TrainConfig()

    def vocab(self, task) -> Vocab:
        """The vocab: ``<pad>`` (id 0), then ``task.vocab_tokens()`` in order. Raises ``InputError``
        on duplicate tokens."""
        return Vocab(task.vocab_tokens())

    def pin_inputs(self, task):
        """The task with anything it reads from outside the run pinned (e.g. a hash of a user's
        file), called once when a run is created; a resume then refuses a changed input."""
        return task

    @abc.abstractmethod
    def max_seq_len(self, task) -> int:
        """Longest sequence the task produces, in tokens; n_ctx must hold it minus one."""

    @abc.abstractmethod
    def run(self, ctx: "RunContext") -> dict:
        """Train the experiment's phases and return its report (without the common keys)."""

    def summary(self, report: dict) -> str:
        """The text printed at the end of a run."""
        return ""

    def marks(self, report: dict) -> dict:
        """Labelled steps to draw on the loss plot, ``{label: step}``."""
        return {}

    def loss_branches(self) -> dict:
        """``{phase: parent phase}`` for phases that start from an earlier phase's weights rather
        than from the previous phase's (loss.png draws them as branches)."""
        return {}

    def plots(self, run_dir: str, report: dict) -> None:
        """Experiment-specific PNGs beside loss.png (list their names in ``artifacts``)."""

    def sweep_plot(self, out: str, grid: list[dict]) -> None:
        """A picture of a ``--sweep`` (rows of ``sweep.json``), written into ``out``."""

    def check(self, task, config, model_cfg: ModelConfig) -> None:
        """Raise ``ValueError`` naming the settings and the fix when the task, the experiment's
        settings and the model cannot run together (what one ``validate()`` alone cannot see);
        called before any run folder exists. Default: nothing to check."""

    def plots_sweep(self, grid_keys) -> bool:
        """Whether ``sweep_plot`` draws a ``--grid`` over these keys (default: only ``--sweep``'s own grid)."""
        return set(grid_keys) == set(self.sweep_grid)


class PhaseReached(Exception):
    """Raised by ``RunContext.train`` when the runner asked to stop at the first phase
    (``--ensemble`` collects every member's first phase this way and trains them together)."""

    def __init__(self, phase: "PhaseSpec"):
        super().__init__(phase.name)
        self.phase = phase


@dataclass
class PhaseSpec:
    """What ``ctx.train`` was asked to train: the runner's view of one phase."""

    name: str
    model: Transformer
    sample: object
    stream: int
    train_cfg: TrainConfig
    evaluate: object = None


@dataclass
class RunContext:
    """What ``Experiment.run`` gets: the configs, the vocab, the run folder, and ``train``.

    ``done`` lists the phases finished so far (the context keeps it); ``resume_state`` is the
    trainer state of an interrupted run (None for a fresh one).
    """

    experiment: Experiment
    run_dir: str
    model_cfg: ModelConfig
    train_cfg: TrainConfig
    task: object
    vocab: Vocab
    resume_state: dict | None
    config: object = field(default_factory=NoSettings)
    stop_at_first_phase: bool = False
    done: list = field(default_factory=list)
    histories: dict = field(default_factory=dict)  # {phase: its metrics rows} (``history``)

    def new_model(self) -> Transformer:
        """A freshly initialised model: same seed ⇒ same initial weights."""
        torch.manual_seed(self.train_cfg.seed)
        model = Transformer(self.model_cfg).to(self.train_cfg.device)
        model.vocab = self.vocab
        return model

    def stream(self, phase: str) -> int:
        """The data stream of ``phase``: its index in ``experiment.phases`` when declared, else
        the order in which phases first trained."""
        declared = self.experiment.phases
        if declared:
            if phase not in declared:
                raise ConfigError(f"phase {phase!r} is not in {type(self.experiment).__name__}.phases "
                                  f"{declared}; add it there")
            return declared.index(phase)
        return self.done.index(phase) if phase in self.done else len(self.done)

    def batch_fn(self, sample, stream: int = 0, batch_size: int | None = None):
        """``step -> Batch``, a pure function of (seed, stream, step): resume needs no loader state."""
        seed, size = self.train_cfg.seed, batch_size or self.train_cfg.batch_size
        length = self.model_cfg.n_ctx + 1

        def batch(step: int):
            rng = np.random.default_rng([seed, stream, step])
            # A sample with ``wants_step`` (a schedule over training, e.g. a curriculum) gets the step too.
            examples = sample(rng, size, step=step) if getattr(sample, "wants_step", False) else sample(rng, size)
            if isinstance(examples, Batch) or getattr(sample, "raw", False):
                return examples  # a task's own tensors (vector inputs), or a step_loss's own batch (raw)
            return collate(examples, self.vocab, length=min(length, max(len(e.tokens) for e in examples)))

        return batch

    def train(self, model, sample, phase: str = "train", evaluate=None,
              train_cfg: TrainConfig | None = None, step_loss=None) -> Trainer:
        """Train ``model`` on ``sample(rng, n) -> [Example]`` as phase ``phase``.

        ``evaluate(model, step) -> dict`` runs every ``eval_every`` steps and at the end (logged
        to metrics.jsonl); ``train_cfg`` overrides the run's TrainConfig for this phase (e.g.
        its steps). ``step_loss(model, batch, step) -> (loss or None, {name: float})`` replaces
        the language-model loss (``Trainer``; REINFORCE uses it): then ``sample`` may return
        anything if it has ``sample.raw = True``. On resume a finished phase loads its saved
        weights instead of training, and an unfinished one continues from its checkpoint.
        Its weights are saved as ``model-<phase>.safetensors`` (``phase_weights_path``).
        """
        if phase in self.done:
            raise ConfigError(f"phase {phase!r} was trained twice in one run; give each phase its own name")
        cfg = train_cfg or self.train_cfg
        stream = self.stream(phase)
        if isinstance(model, Transformer) and model.cfg != self.model_cfg:
            model.own_architecture = True  # its weights load with their own config (minitf.load)
        if self.stop_at_first_phase:
            raise PhaseReached(PhaseSpec(phase, model, sample, stream, cfg, evaluate))
        trainer = Trainer(model, cfg, self.batch_fn(sample, stream, cfg.batch_size), self.run_dir,
                          phase=phase, evaluate=evaluate, step_loss=step_loss)
        trainer.fit(self.resume_state, phases_before=list(self.done))
        self.done.append(phase)
        self.histories[phase] = trainer.rows
        return trainer

    def history(self, phase: str) -> list[dict]:
        """The metrics rows ``phase`` logged, in order, as metrics.jsonl holds them: training rows
        ``{"phase", "step", "loss", ...}`` and evaluation rows ``{"phase", "step", "eval": {...}}``
        (on resume, the rows of earlier processes included). Raises ``ConfigError`` for a phase
        that has not trained in this run."""
        if phase not in self.histories:
            raise ConfigError(f"phase {phase!r} has no history yet: phases trained so far {self.done}")
        return self.histories[phase]

    def phase_weights_path(self, phase: str) -> str:
        """Path of the weights saved at the end of ``phase``: ``run_dir/model-<phase>.safetensors``."""
        return os.path.join(self.run_dir, phase_weights(phase))

    def load_phase(self, model, phase: str) -> None:
        """Load the weights saved at the end of ``phase`` into ``model``."""
        load_weights(model, self.phase_weights_path(phase))

    def eval_rng(self, salt: int = 0) -> np.random.Generator:
        """A generator for evaluation data, independent of the training streams."""
        return np.random.default_rng([self.train_cfg.seed, 10_000 + salt])


def verdict(ok: bool) -> str:
    """How every summary states a check: ``PASS`` or ``MISS``."""
    return "PASS" if ok else "MISS"


def format_checks(targets: dict, label: str = "targets") -> str:
    """One summary line for a report's checks: ``"targets: name PASS, name MISS"``.

    ``targets`` is an experiment's ``targets`` record: ``{"pass": {name: bool}, ...figures}`` (the
    usual shape) or a flat ``{name: bool}``; figures beside ``"pass"`` are left to the summary."""
    checks = targets.get("pass", targets)
    return f"{label}: " + ", ".join(f"{name} {verdict(ok)}" for name, ok in checks.items())


def require_d_input(model_cfg, need: int, what: str) -> None:
    """For experiments on vector inputs: raises ``ValueError`` unless the model reads ``need``
    numbers per token (``d_input``); ``what`` says what they are, e.g. ``"d + 1"``."""
    if model_cfg.d_input != need:
        raise ValueError(f"d_input must be {what} = {need} for this task (got {model_cfg.d_input}); "
                         f"set --set d_input={need} or leave it to the default")
