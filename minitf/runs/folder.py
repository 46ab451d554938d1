"""The run-folder lifecycle: create, refuse, overwrite (minitf's own files only), resume.

Every check runs before anything is written: a rejected command leaves the folder exactly as
it was, so the corrected command is never refused because of a half-made run. A finished run
(report.json present) is never rewritten by ``--resume``.
"""
import dataclasses
import math
import os
import time

import torch

from minitf import artifacts, checkpoint
from minitf.attention import backend_problem
from minitf.config import ModelConfig, TrainConfig, apply_overrides, from_dict, to_dict, value_problems
from minitf.errors import CheckpointError, CheckpointNotFoundError, ConfigError, RunExistsError
from minitf.environment import environment
from minitf.experiments.base import Experiment, RunContext
from minitf.fileio import lock_run_folder, remove_stale_temp_files


def build_configs(experiment: Experiment, overrides: list[str], seed: int | None = None,
                  device: str | None = None):
    """(model_cfg, train_cfg, task, config) with ``key=value`` overrides applied and validated.
    Task overrides apply first: model defaults (vocab_size, n_ctx) derive from the task."""
    task_keys = {f.name for f in dataclasses.fields(experiment.task_cls)}
    task_over = [o for o in overrides if o.split("=", 1)[0].strip() in task_keys]
    rest = [o for o in overrides if o not in task_over]
    (task,) = apply_overrides([experiment.default_task()], task_over)
    _validate(task)
    task = experiment.pin_inputs(task)
    model_cfg, train_cfg, _, config = apply_overrides(
        [experiment.default_model(task), experiment.default_train(), task, experiment.default_config()], rest)
    _validate(config)
    if seed is not None:
        train_cfg = dataclasses.replace(train_cfg, seed=seed)
    if device is not None:
        train_cfg = dataclasses.replace(train_cfg, device=device)
    return model_cfg, train_cfg, task, config


def _validate(cfg) -> None:
    """A task's or an experiment's settings: the numeric values every config must hold
    (``minitf.config.value_problems``), then the class's own ``validate()`` if it has one
    (optional: docs/experiments.md)."""
    problems = value_problems(cfg) if dataclasses.is_dataclass(cfg) else []
    if problems:
        raise ConfigError(f"invalid {type(cfg).__name__}: " + "; ".join(problems))
    validate = getattr(cfg, "validate", None)
    if not callable(validate):
        return
    try:
        validate()
    except ConfigError:
        raise
    except ValueError as e:  # several problems come one per line: the CLI prints one line
        raise ConfigError(f"invalid {type(cfg).__name__}: " + "; ".join(str(e).splitlines())) from None


def check_compatible(experiment: Experiment, model_cfg: ModelConfig, train_cfg: TrainConfig, task, vocab) -> None:
    """Everything that can make a run fail before it starts, as one ConfigError."""
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
    why = backend_problem(model_cfg.attn_impl, model_cfg.d_head, train_cfg.device)
    if why:
        raise ConfigError(why)
    check_memory(model_cfg, train_cfg, min(model_cfg.n_ctx, need - 1))


GIB = 1024 ** 3


def memory_estimate(model_cfg: ModelConfig, train_cfg: TrainConfig, seq_len: int) -> dict:
    """A lower bound of the memory one training step of this config needs, in bytes, without
    allocating it (the model is built on the ``meta`` device): ``{"bytes", "params", "parts":
    {part: (bytes, what to lower)}}``. Parameters count 16 bytes each (fp32 weights, gradients and
    AdamW's two moments); activations at least the logits and their gradient plus one residual
    stream per layer, for ``batch_size × seq_len`` positions. A model too large for torch to
    describe counts its embeddings only."""
    from minitf.model import Transformer

    try:
        with torch.device("meta"):
            model = Transformer(model_cfg)
        params = [(n, tuple(p.shape)) for n, p in model.named_parameters()]
        buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    except Exception:  # noqa: BLE001 — too large for torch to describe (an overflow), or unbuildable:
        # the embeddings alone, a lower bound that needs no model
        params = [("embed.weight", (model_cfg.vocab_size, model_cfg.d_model))] + (
            [("pos_embed.weight", (model_cfg.n_ctx, model_cfg.d_model))] if model_cfg.positional == "learned" else [])
        buffers = 0
    n_params = sum(math.prod(shape) for _, shape in params)
    name, biggest = max(params, key=lambda item: math.prod(item[1]), default=("", ()))
    sizes = {"pos_embed": "n_ctx (learned positions have n_ctx × d_model weights) or d_model",
             "embed": "vocab_size or d_model", "unembed": "vocab_size or d_model"}
    hint = next((v for k, v in sizes.items() if name.startswith(k)), "d_model, d_mlp or n_layers")
    width = model_cfg.vocab_size if not model_cfg.d_input else 1
    positions = train_cfg.batch_size * max(seq_len, 1)
    parts = {
        f"weights ({n_params:,} parameters at 16 bytes with gradients and AdamW state; the largest, {name}, "
        f"{' × '.join(map(str, biggest))})": (16 * n_params, hint),
        f"logits (batch_size {train_cfg.batch_size} × {seq_len} positions × {width} outputs, with their gradient)":
            (8 * positions * width, "batch_size" + (" or vocab_size" if not model_cfg.d_input else "")),
        f"activations (batch_size {train_cfg.batch_size} × {seq_len} positions × {model_cfg.n_layers} layers × "
        f"d_model {model_cfg.d_model})": (4 * positions * model_cfg.n_layers * model_cfg.d_model,
                                          "batch_size, n_layers or d_model"),
    }
    return {"bytes": sum(b for b, _ in parts.values()) + buffers, "params": n_params, "parts": parts}


def available_memory(device: str) -> int | None:
    """Bytes this process can use on ``device``: the GPU's total memory, or the machine's RAM (or a
    smaller cgroup limit); None if unknown."""
    if device == "cuda":
        return torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available() else None
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                limit = f.read().strip()
            if limit.isdigit():
                total = min(total, int(limit))
        except OSError:
            pass
    return total


def check_memory(model_cfg: ModelConfig, train_cfg: TrainConfig, seq_len: int, members: int = 1) -> None:
    """Raise ``ConfigError`` (before any work) when a config cannot fit in this machine's memory:
    the estimate (``memory_estimate``, a lower bound; × ``members`` for an ``--ensemble`` that
    trains them at once), what there is, and its largest part with the settings that size it."""
    need = memory_estimate(model_cfg, train_cfg, seq_len)
    have = available_memory(train_cfg.device)
    if have is None or members * need["bytes"] <= have:
        return
    part, (size, lower) = max(need["parts"].items(), key=lambda item: item[1][0])
    where = "GPU" if train_cfg.device == "cuda" else "machine"
    times = f" ({members} ensemble members)" if members > 1 else ""
    raise ConfigError(f"this config needs at least {members * need['bytes'] / GIB:,.1f} GiB to train{times}, more "
                      f"than this {where}'s {have / GIB:,.1f} GiB; the largest part is {members * size / GIB:,.1f} "
                      f"GiB of {part}: lower {lower}" + (" or the ensemble's K" if members > 1 else ""))


def check_new_folder(run_dir: str, experiment: Experiment, overwrite: bool) -> None:
    """Refuse a path that is a file, or a folder that holds a run (unless ``overwrite``)."""
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise RunExistsError(f"--out {run_dir} is an existing file, not a folder; choose another --out")
    existing = artifacts.own_files(run_dir, experiment.artifacts)
    if existing and not overwrite:
        raise RunExistsError(f"{run_dir} already holds a run ({', '.join(existing[:6])}); continue it with "
                             f"--resume {run_dir}, choose another --out, or pass --overwrite (which replaces "
                             "minitf's files there and keeps your own)")


def clear_own_files(run_dir: str, experiment: Experiment) -> None:
    """``--overwrite``: remove minitf's artifacts; files the user keeps there stay."""
    for name in artifacts.own_files(run_dir, experiment.artifacts):
        os.unlink(os.path.join(run_dir, name))


def default_run_dir(experiment: Experiment, seed: int) -> str:
    """``runs/<experiment>/seed<seed>-<YYYYmmdd-HHMMSS>`` (local time), relative to the working directory."""
    return os.path.join("runs", experiment.name, f"seed{seed}-{time.strftime('%Y%m%d-%H%M%S')}")


def prepare_run(experiment: Experiment, out: str | None = None, seed: int | None = None, overrides=(),
                device: str | None = None, overwrite: bool = False) -> RunContext:
    """Validate everything for a new run; writes nothing (``create`` does)."""
    model_cfg, train_cfg, task, config = build_configs(experiment, list(overrides), seed, device)
    run_dir = out or default_run_dir(experiment, train_cfg.seed)
    vocab = experiment.vocab(task)
    check_compatible(experiment, model_cfg, train_cfg, task, vocab)
    try:  # settings that are each valid but not together (Experiment.check)
        experiment.check(task, config, model_cfg)
    except ValueError as e:
        raise ConfigError(f"invalid settings for {experiment.name}: {e}") from None
    check_new_folder(run_dir, experiment, overwrite)
    return RunContext(experiment, run_dir, model_cfg, train_cfg, task, vocab, None, config)


def create(ctx: RunContext, experiment_ref: str) -> RunContext:
    """Make the prepared run's folder with config.json and vocab.json (replacing minitf's
    files of an earlier run there, which ``prepare_run`` allowed only with overwrite)."""
    os.makedirs(ctx.run_dir, exist_ok=True)
    lock_run_folder(ctx.run_dir)  # one writer: another process writing here is refused, nothing changed
    clear_own_files(ctx.run_dir, ctx.experiment)
    checkpoint.write_run_config(ctx.run_dir, {
        "experiment": ctx.experiment.name, "experiment_ref": experiment_ref, "model": to_dict(ctx.model_cfg),
        "train": to_dict(ctx.train_cfg), "task": to_dict(ctx.task), "experiment_config": to_dict(ctx.config),
        "default_model": list(ctx.experiment.main_model), "environment": environment()})
    ctx.vocab.save(os.path.join(ctx.run_dir, artifacts.VOCAB))
    return ctx


def saved_configs(experiment: Experiment, saved: dict):
    """The four configs of a config.json. Runs written before schedule settings moved from the
    task to the experiment config keep them under "task": they are moved over."""
    task_data, config_data = dict(saved["task"]), dict(saved.get("experiment_config", {}))
    for f in dataclasses.fields(experiment.config_cls):
        if f.name in task_data:
            config_data.setdefault(f.name, task_data.pop(f.name))
    return (from_dict(ModelConfig, saved["model"]), from_dict(TrainConfig, saved["train"]),
            from_dict(experiment.task_cls, task_data), from_dict(experiment.config_cls, config_data))


def restart_command(experiment_ref: str, experiment: Experiment, run_dir: str, configs) -> str:
    """The exact command that starts this run again from scratch in the same folder."""
    model_cfg, train_cfg, task, config = configs
    defaults = build_configs(experiment, [], train_cfg.seed, train_cfg.device)
    sets = [f"--set {f.name}={getattr(cfg, f.name)}" for cfg, default in zip(configs, defaults)
            for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != getattr(default, f.name)
            and f.name not in ("seed", "device")]
    device = " --device cuda" if train_cfg.device == "cuda" else ""
    return " ".join([f"python train.py {experiment_ref} --out {run_dir} --seed {train_cfg.seed}{device} --overwrite",
                     *sets])


def open_for_resume(run_dir: str, experiment: Experiment, experiment_ref: str, saved: dict,
                    device: str | None = None) -> RunContext | None:
    """Check that the run can continue, without changing anything; None if it is finished.

    Raises one CheckpointError / ConfigError naming the fix; for a damaged checkpoint the fix
    is the exact command that restarts the run in place (``--overwrite``, the same settings).
    """
    configs = saved_configs(experiment, saved)
    model_cfg, train_cfg, task, config = configs
    _validate(task)
    _validate(config)
    if device is not None:
        train_cfg = dataclasses.replace(train_cfg, device=device)
    vocab = experiment.vocab(task)
    check_compatible(experiment, model_cfg, train_cfg, task, vocab)
    if os.path.exists(os.path.join(run_dir, artifacts.REPORT)):
        return None
    restart = restart_command(experiment_ref, experiment, run_dir, configs)
    state_path = os.path.join(run_dir, artifacts.TRAINER_STATE)
    state = {"phase": None, "phases_done": []}  # killed before its first checkpoint
    try:
        if os.path.exists(state_path):
            state = checkpoint.load_trainer_state(state_path)
        for phase in state.get("phases_done", []):
            checkpoint.check_weights_file(os.path.join(run_dir, artifacts.phase_weights(phase)))
    except (CheckpointError, CheckpointNotFoundError) as e:
        raise CheckpointError(f"cannot resume {run_dir}: {e}. Start it again from scratch (your own "
                              f"files there are kept): {restart}") from None
    return RunContext(experiment, run_dir, model_cfg, train_cfg, task, vocab, state, config)


def begin_resume(ctx: RunContext) -> None:
    """The first change a resume makes, after every check passed: drop a killed write's temp
    files, and a run that never checkpointed starts over (its log and weights go). Raises
    ``RunBusyError`` first, changing nothing, while another process writes the folder."""
    lock_run_folder(ctx.run_dir)
    remove_stale_temp_files(ctx.run_dir)
    if ctx.resume_state.get("phase") is None and not ctx.resume_state.get("phases_done"):
        for name in (artifacts.METRICS, artifacts.WEIGHTS):
            path = os.path.join(ctx.run_dir, name)
            if os.path.exists(path):
                os.unlink(path)
