"""The training loop: AdamW, warmup + cosine, clipping, metrics.jsonl, checkpoints, resume.

Data is a pure function of the step (``batch_fn(step)``, seeded by (seed, phase, step)),
so a resumed run sees exactly the batches an uninterrupted one would, without saving any
data-loader state. With the model, optimizer, RNG states and step restored from one
atomically written file, a resumed run's losses equal an uninterrupted run's.

Under torchrun (a ``torch.distributed`` process group of world size W > 1, set up by
``minitf.runs.distributed``) the model trains wrapped in DistributedDataParallel: every
process draws the same global batch from (seed, phase, step) and trains on its rows
``rank::W``, with the loss scaled so the averaged gradient is the global batch's; process 0
alone writes the log, the checkpoints and the weights.
"""
import ctypes
import json
import math
import os
import platform
import time
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F

from minitf import checkpoint
from minitf.artifacts import METRICS, TRAINER_STATE, WEIGHTS, phase_weights
from minitf.checkpoint import unwrap
from minitf.config import TrainConfig, architecture
from minitf.data import Batch
from minitf.environment import bf16_matrix_units
from minitf.errors import CheckpointError, NonFiniteLossError
from minitf.fileio import append_json_line, atomic_write_bytes, remove_stale_temp_files, to_json
from minitf.progress import Progress, StopAtStepEnd, progress_bar


def keep_freed_memory() -> bool:
    """Stop glibc from giving freed activation memory back to the OS between training steps.

    By default glibc serves blocks over its (adaptive) mmap threshold with fresh mmaps and trims
    the heap top, so every step page-faults its activations in again (hundreds to thousands of
    minor faults per step of bench/train_step.py's configs). A fixed 32 MB mmap threshold and a
    1 GB trim threshold keep that memory mapped (0–100 faults per step); the process holds its
    peak working set instead. The bench measures the speed-up (its ``allocator_speedup``; README,
    Performance). glibc only (a no-op elsewhere); ``MINITF_KEEP_FREED_MEMORY=0`` turns it off.
    Returns whether it applied.
    """
    if os.environ.get("MINITF_KEEP_FREED_MEMORY", "1") == "0" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # mallopt parameter numbers from <malloc.h>
    return bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))


def masked_loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Mean cross-entropy over scored positions only (nats/token).

    logits (batch, seq, vocab) with batch tensors (batch, seq) → a scalar; or, for an ensemble,
    logits (member, batch, seq, vocab) with (member, batch, seq) tensors → (member,), each
    member's own mean. The trainer and the ensemble share this one function.

    Float targets (a vector model, e.g. in-context regression): the mean squared error
    ``(pred − target)²`` over scored positions (units of target²), pred = ``logits[..., 0]``
    (the model's (…, seq, 1) output); shapes and reductions as above.
    """
    if batch.targets.is_floating_point():
        pred = logits[..., 0] if logits.dim() == batch.targets.dim() + 1 else logits
        se = (pred - batch.targets) ** 2 * batch.mask
        if se.dim() == 2:
            return se.sum() / batch.mask.sum().clamp(min=1.0)
        return se.sum(dim=(-2, -1)) / batch.mask.sum(dim=(-2, -1)).clamp(min=1.0)
    ce = F.cross_entropy(logits.flatten(0, -2), batch.targets.flatten(), reduction="none")
    ce = ce.view(batch.targets.shape) * batch.mask
    if ce.dim() == 2:
        return ce.sum() / batch.mask.sum().clamp(min=1.0)
    return ce.sum(dim=(-2, -1)) / batch.mask.sum(dim=(-2, -1)).clamp(min=1.0)


_precision_said: set = set()


def autocast(cfg: TrainConfig, device: torch.device):
    """The training forward pass's precision: bf16 autocast for ``precision="bf16"`` (matmuls and
    attention in bf16; weights, optimizer state and the loss's reduction stay fp32, so checkpoints
    are the same fp32 files), else a no-op. Says once per process what the CPU offers."""
    bf16 = cfg.precision == "bf16"
    if bf16 and device.type == "cpu" and "cpu" not in _precision_said:
        _precision_said.add("cpu")
        units = bf16_matrix_units()
        print(f"precision bf16: this CPU has bf16 matrix units ({units})" if units else
              "precision bf16: this CPU has no bf16 matrix units (amx_bf16 / avx512_bf16), so oneDNN "
              "emulates bf16 and training runs slower than fp32; use precision=fp32 here", flush=True)
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16)


def process_group() -> tuple[int, int]:
    """``(rank, world size)`` of the torch.distributed group this process trains in; ``(0, 1)``
    when there is none (a single process)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine decay to 10% of the peak."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def make_optimizer(params, cfg: TrainConfig, member_dims: int = 0) -> torch.optim.AdamW:
    """AdamW (betas 0.9, 0.95) with weight decay on matrices only: decaying biases and LayerNorm
    gains just fights the normalization. ``params``: a model, or a list of tensors; with
    ``member_dims=1`` every tensor has a leading member dimension (a stacked ensemble) that
    does not count as a matrix dimension. Tied tensors are taken once."""
    params = list(params.parameters()) if isinstance(params, torch.nn.Module) else list(params)
    seen, decay, no_decay = set(), [], []
    for p in params:
        if id(p) in seen or not p.requires_grad:  # tied embeddings appear twice
            continue
        seen.add(id(p))
        (decay if p.dim() - member_dims >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), foreach=True)


def grad_norm(params, clip: float) -> torch.Tensor:
    """The global gradient norm, clipping to ``clip`` first when clip > 0. Computed whatever
    the clip setting, so a non-finite gradient is always seen before the optimizer step."""
    params = [p for p in params if p.grad is not None]
    if clip > 0:
        return torch.nn.utils.clip_grad_norm_(params, clip)
    return torch.nn.utils.get_total_norm([p.grad for p in params]) if params else torch.zeros(())


class Trainer:
    """Trains ``model`` for one phase of an experiment, writing into ``run_dir``.

    evaluate(model, step) -> dict is called every ``eval_every`` steps and at the end;
    its results are logged as ``{"step", "phase", "eval": {...}}`` rows.
    """

    def __init__(self, model, cfg: TrainConfig, batch_fn: Callable[[int], Batch], run_dir: str,
                 phase: str = "train", evaluate: Callable | None = None, step_loss: Callable | None = None):
        self.model, self.cfg, self.batch_fn = model, cfg, batch_fn
        self.run_dir, self.phase, self.evaluate = run_dir, phase, evaluate
        # step_loss(model, batch, step) -> (loss tensor or None, {name: float}) replaces the masked
        # language-model loss (e.g. REINFORCE); None = no update this step (e.g. every advantage 0).
        # Its numbers join the step's metrics row; the step still counts, like a skipped one.
        self.step_loss = step_loss
        self.device = torch.device(cfg.device)
        keep_freed_memory()
        self.optimizer = make_optimizer(model, cfg)
        self.progress: Progress | None = None
        self.step = 0
        self.losses: dict[int, float] = {}
        # This phase's metrics rows as metrics.jsonl holds them (parsed back from the same JSON), so
        # an experiment reads its evaluation history from here (RunContext.history), not from disk.
        self.rows: list[dict] = []
        self.last_checkpoint_step: int | None = None
        self.skipped: list[int] = []  # steps skipped for non-finite values (--skip-nonfinite)
        self.rank, self.world = process_group()
        self.writes = self.rank == 0  # under torchrun only process 0 writes files

    # -- state ---------------------------------------------------------------------------
    @property
    def state_path(self) -> str:
        """``run_dir/trainer_state.pt``: the path of the resume checkpoint."""
        return os.path.join(self.run_dir, TRAINER_STATE)

    def phase_weights_path(self, phase: str) -> str:
        """Path of the weights saved at the end of ``phase`` (``model-<phase>.safetensors``)."""
        return os.path.join(self.run_dir, phase_weights(phase))

    def save_checkpoint(self, phases_done: list[str]) -> None:
        """Write the resume state (weights, optimizer, torch RNG, phase, step, ``phases_done``) and
        ``model.safetensors``. Raises ``NonFiniteLossError`` (saving nothing) if any weight is
        NaN/inf."""
        model = unwrap(self.model)
        bad = [n for n, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:  # never let a checkpoint hold weights a resume would call "good"
            raise NonFiniteLossError(f"weights {bad[:3]} became non-finite by step {self.step} of phase "
                                     f"'{self.phase}'; nothing was saved. Lower lr or raise warmup and start again")
        state = {"phase": self.phase, "step": self.step, "phases_done": phases_done,
                 "model": model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "torch_rng": torch.get_rng_state(), "architecture": architecture(getattr(model, "cfg", None))}
        if self.writes:
            checkpoint.save_trainer_state(self.state_path, state)
            checkpoint.save_weights(model, os.path.join(self.run_dir, WEIGHTS))
        self._wait_for_writer()
        self.last_checkpoint_step = self.step

    def _wait_for_writer(self) -> None:
        """Under torchrun: every process waits until process 0's files are written (a later
        phase may read them)."""
        if self.world > 1:
            dist.barrier()

    def restore(self, state: dict) -> None:
        """Load weights, optimizer, torch RNG state and step from a ``load_trainer_state`` dict, then
        drop this phase's metrics rows logged after that step. Raises ``CheckpointError`` if the
        state does not fit this model/config."""
        checkpoint.check_architecture(unwrap(self.model), state.get("architecture"), self.state_path)
        try:
            unwrap(self.model).load_state_dict(checkpoint.strip_wrapper_prefixes(state["model"]))
            self.optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["torch_rng"])
            self.step = int(state["step"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"trainer state in {self.run_dir} does not match this model/config "
                                  f"({type(e).__name__}: {str(e)[:200]})") from None
        self.last_checkpoint_step = self.step
        self._truncate_metrics()

    def _truncate_metrics(self) -> None:
        """Drop log rows written after the checkpoint, so a resumed log reads like a clean one."""
        path = os.path.join(self.run_dir, METRICS)
        if not self.writes or not os.path.exists(path):
            return
        kept = []
        with open(path) as f:
            for line in f:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a line cut by the kill
                    continue
                if row.get("phase") != self.phase or row.get("step", 0) <= self.step:
                    kept.append(line if line.endswith("\n") else line + "\n")
        atomic_write_bytes(path, "".join(kept).encode())

    def log(self, row: dict) -> None:
        """Append ``{"phase": self.phase, **row}`` as one JSON line to ``run_dir/metrics.jsonl``
        (process 0 only, under torchrun)."""
        row = {"phase": self.phase, **row}
        self.rows.append(json.loads(to_json(row)))
        if self.writes:
            append_json_line(os.path.join(self.run_dir, METRICS), row)

    def _rows_on_disk(self) -> list[dict]:
        """This phase's rows of metrics.jsonl (on resume: what earlier processes logged)."""
        path = os.path.join(self.run_dir, METRICS)
        if not os.path.exists(path):
            return []
        with open(path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        return [r for r in rows if r.get("phase") == self.phase]

    # -- loop ----------------------------------------------------------------------------
    def fit(self, resume_state: dict | None = None, phases_before: list[str] = ()) -> None:
        """Train this phase to ``cfg.steps``; ``resume_state`` continues an interrupted run."""
        phases_done = list(phases_before)
        if resume_state is not None:
            if self.writes:
                remove_stale_temp_files(self.run_dir)
            if self.phase in resume_state.get("phases_done", []):
                checkpoint.load_weights(self.model, self.phase_weights_path(self.phase))
                self.rows = self._rows_on_disk()
                return
            if resume_state.get("phase") == self.phase:
                self.restore(resume_state)
            else:  # this phase had not reached a checkpoint: drop whatever it logged
                self._truncate_metrics()
            self.rows = self._rows_on_disk()
        model, cfg = self.model.to(self.device).train(), self.cfg
        forward = self._data_parallel(model) if self.world > 1 else None
        bar = progress_bar(cfg.steps, self.step, self.phase, enabled=self.writes)
        self.progress = Progress(self.phase, cfg.steps, self.step) if self.writes else None
        with StopAtStepEnd(enabled=self.world == 1) as stop:
            self._loop(model, cfg, forward, bar, stop, phases_done)
            bar.close()
            self.finish(phases_done)
            if stop.requested:  # Ctrl-C during the phase's end: it finished; stop before the next phase
                raise KeyboardInterrupt

    def _loop(self, model, cfg, forward, bar, stop: "StopAtStepEnd", phases_done: list[str]) -> None:
        t0, tokens_seen = time.perf_counter(), 0
        while self.step < cfg.steps:
            if stop.requested:  # Ctrl-C: keep every finished step (atomic checkpoint), then stop
                if self.step != self.last_checkpoint_step and self.step > 0:
                    self.save_checkpoint(phases_done)
                bar.close()
                raise KeyboardInterrupt
            batch = self.batch_fn(self.step)
            if isinstance(batch, Batch):
                tokens_seen += batch.inputs.shape[0] * batch.inputs.shape[1]  # positions (a vector is one token)
            lr = lr_at(self.step, cfg)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            extra = {}
            if self.step_loss is not None:
                with autocast(cfg, self.device):
                    loss, extra = self.step_loss(model, batch, self.step)
                if loss is None:  # nothing to learn from this step: no update, the step counts
                    self.step += 1
                    self.log({"step": self.step, "lr": lr, "no_update": True, **extra})
                    bar.update(1)
                    self._after_step(cfg, phases_done)
                    continue
                loss.backward()
                loss_value = loss.item()
            elif forward is None:
                batch = batch.to(self.device)
                with autocast(cfg, self.device):
                    logits = model(batch.inputs)
                loss = masked_loss(logits.float(), batch)  # fp32 reduction (a no-op cast in fp32)
                loss.backward()
                loss_value = loss.item()
            else:
                loss_value = self._data_parallel_step(forward, batch)
            norm = grad_norm(model.parameters(), cfg.grad_clip)
            if math.isfinite(loss_value) and math.isfinite(float(norm)):
                self.optimizer.step()
                self.losses[self.step + 1] = loss_value
            else:  # no update from this batch; the step still counts, so evals/checkpoints keep their schedule
                if len(self.skipped) >= cfg.skip_nonfinite:
                    self._stop_nonfinite(loss_value)
                self.skipped.append(self.step + 1)
                self.log({"step": self.step + 1, "skipped_nonfinite": loss_value})
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            if (self.step % cfg.log_every == 0 or self.step == cfg.steps) and self.step in self.losses:
                rate = tokens_seen / max(time.perf_counter() - t0, 1e-9)
                self.log({"step": self.step, "loss": loss_value, "lr": lr, "tokens_per_s": rate, **extra})
                bar.set_postfix(loss=f"{loss_value:.3f}", tok_s=f"{rate:,.0f}")
                if self.progress is not None:
                    self.progress.step(self.step, loss_value, rate)
            bar.update(1)
            self._after_step(cfg, phases_done)

    def _after_step(self, cfg, phases_done: list[str]) -> None:
        """The evaluation and checkpoint due after a step (not after the last: ``finish`` does those)."""
        if self.evaluate and cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.steps:
            self.run_eval()
        if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps:
            self.save_checkpoint(phases_done)

    def finish(self, phases_done: list[str]) -> None:
        """End of phase: the final evaluation, the phase's weights, and a checkpoint marking it done."""
        if self.evaluate:
            self.run_eval()
        if self.writes:
            checkpoint.save_weights(self.model, self.phase_weights_path(self.phase))
        self.save_checkpoint(list(phases_done) + [self.phase])

    # -- data parallel (torchrun) ----------------------------------------------------------
    def _data_parallel(self, model) -> torch.nn.Module:
        """``model`` wrapped in DistributedDataParallel (construction copies process 0's weights)."""
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index if self.device.index is not None else torch.cuda.current_device()] \
            if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def _data_parallel_step(self, forward, batch: Batch) -> float:
        """Forward/backward this process's rows of the global ``batch``; returns the global loss.

        The local loss is scaled by ``world · local scored / global scored`` positions, so the
        gradient DDP averages over processes is the global batch's mean-loss gradient (the
        single-process gradient, up to float summation order).
        """
        shard = batch.shard(self.rank, self.world).to(self.device)
        scale = self.world * shard.mask.sum().clamp(min=1.0) / batch.mask.sum().clamp(min=1.0).to(self.device)
        with autocast(self.cfg, self.device):
            logits = forward(shard.inputs)
        loss = masked_loss(logits.float(), shard) * scale
        loss.backward()
        total = loss.detach().clone()
        dist.all_reduce(total)
        return total.item() / self.world

    def run_eval(self) -> dict:
        """Call ``evaluate(model, step)`` in eval mode without gradients, log it as an ``eval`` row,
        print it (non-terminal output) and return the results dict; the model is back in train mode."""
        self.model.eval()
        with torch.no_grad():
            results = self.evaluate(self.model, self.step)
        self.model.train()
        self.log({"step": self.step, "eval": results})
        if self.progress is not None:
            self.progress.evaluation(self.step, results)
        return results

    def _stop_nonfinite(self, loss_value: float) -> None:
        where = (f"the last good checkpoint is step {self.last_checkpoint_step} in {self.state_path}"
                 if self.last_checkpoint_step is not None else "no checkpoint was written yet")
        skipped = f" (after skipping steps {self.skipped})" if self.skipped else ""
        raise NonFiniteLossError(
            f"non-finite loss or gradient ({loss_value}) at step {self.step + 1} of phase "
            f"'{self.phase}'{skipped}; {where}. Lower lr or raise warmup, then start again or --resume; "
            f"--skip-nonfinite N skips up to N such steps")
