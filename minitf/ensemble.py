"""Train K independent models (different seeds) in one process as one batched computation.

How: the K members' weights are stacked on a leading member dimension
(``torch.func.stack_module_state``) and the forward pass is ``torch.func.functional_call``
vmapped over that dimension, so every matmul runs once for all members (batched matmuls
instead of K small ones: the per-op overhead that bounds tiny models on CPU is paid once).
The loss is the *sum* of the member losses; members share no weights, so its gradient with
respect to the stacked weights is exactly each member's own gradient. AdamW is elementwise,
so one AdamW over the stacked tensors is K independent AdamWs; gradient clipping is done per
member, on each member's own global norm. Batched matmuls sum in another order than single
ones, so members match single runs to ~1e-6 per step, not bitwise.
"""
import copy
import dataclasses
import math
from collections.abc import Callable

import torch
from torch.func import functional_call, stack_module_state

from minitf.config import TrainConfig
from minitf.data import Batch
from minitf.errors import NonFiniteLossError
from minitf.trainer import keep_freed_memory, lr_at


class Ensemble:
    """K copies of ``make_model(seed)`` trained together; ``member(i)`` gives a plain model back."""

    def __init__(self, make_model: Callable[[int], torch.nn.Module], seeds: list[int]):
        self.seeds = list(seeds)
        members = [make_model(s) for s in self.seeds]
        self.template = copy.deepcopy(members[0]).to("meta")
        # SDPA has no vmap batching rule on CPU (it would loop over members); explicit
        # matmul + softmax attention batches over the member dimension.
        fast = dataclasses.replace(members[0].cfg, attn_impl="naive")
        for block in self.template.blocks:
            block.attn.cfg = fast
        params, buffers = stack_module_state(members)
        self.params = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
        self.buffers = buffers
        self.cfg = members[0].cfg

    def __len__(self) -> int:
        return len(self.seeds)

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """inputs (K, batch, seq) → logits (K, batch, seq, vocab)."""
        # Token checks need data-dependent Python control flow, which vmap forbids: check all
        # members' tokens once here, with the model's own check (it reads only the config).
        template = self.template
        template.check_tokens(inputs.flatten(0, 1))

        def one(params, buffers, x):
            return functional_call(template, (params, buffers), (x,), kwargs={"check": False})

        return torch.vmap(one)(self.params, self.buffers, inputs)

    def member(self, index: int) -> torch.nn.Module:
        model = copy.deepcopy(self.template).to_empty(device="cpu")
        for block in model.blocks:
            block.attn.cfg = self.cfg
        model.load_state_dict({k: v[index].detach().clone() for k, v in {**self.params, **self.buffers}.items()})
        return model


def member_losses(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Masked mean cross-entropy per member: logits (K, B, T, V), batch tensors (K, B, T) → (K,)."""
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 2), batch.targets.flatten(), reduction="none")
    ce = ce.view(batch.targets.shape) * batch.mask
    return ce.sum(dim=(1, 2)) / batch.mask.sum(dim=(1, 2)).clamp(min=1.0)


def train_ensemble(ensemble: Ensemble, cfg: TrainConfig, batch_fns: list[Callable[[int], Batch]],
                   on_step: Callable[[int, list[float]], None] | None = None) -> list[list[float]]:
    """Train every member for ``cfg.steps`` on its own data stream; returns per-member losses."""
    keep_freed_memory()
    params = list(ensemble.params.values())
    decay = [p for p in params if p.dim() >= 3]  # (member, ...) matrices decay; biases and gains do not
    no_decay = [p for p in params if p.dim() < 3]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(0.9, 0.95), foreach=True)
    history = [[] for _ in range(len(ensemble))]
    for step in range(cfg.steps):
        batch = stack_batches([fn(step) for fn in batch_fns])
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        losses = member_losses(ensemble.logits(batch.inputs), batch)
        losses.sum().backward()
        if cfg.grad_clip > 0:
            clip_per_member(params, cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        values = losses.detach().tolist()
        if not all(math.isfinite(v) for v in values):
            bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
            raise NonFiniteLossError(f"non-finite loss at step {step + 1} for ensemble members {bad} "
                                     f"({values}); lower lr or raise warmup and start again")
        for i, v in enumerate(values):
            history[i].append(v)
        if on_step:
            on_step(step + 1, values)
    return history


def stack_batches(batches: list[Batch]) -> Batch:
    """Members' batches → one (K, B, T) batch. Tasks collate to their longest sequence, so
    members' lengths differ: shorter ones are right-padded with pad id 0 and mask 0, which
    changes none of their losses (causal attention: later positions never affect earlier ones)."""
    length = max(b.inputs.shape[1] for b in batches)

    def pad(t):
        return torch.nn.functional.pad(t, (0, length - t.shape[1]))

    return Batch(*(torch.stack([pad(getattr(b, f)) for b in batches]) for f in ("inputs", "targets", "mask")))


def clip_per_member(params: list[torch.Tensor], max_norm: float) -> None:
    """clip_grad_norm_ for each member separately (dimension 0 indexes members)."""
    sq = sum(p.grad.flatten(1).square().sum(1) for p in params)  # (K,)
    scale = (max_norm / (sq.sqrt() + 1e-6)).clamp(max=1.0)
    for p in params:
        p.grad.mul_(scale.view(-1, *([1] * (p.dim() - 1))))
