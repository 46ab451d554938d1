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
import math
from collections.abc import Callable

import torch
from torch.func import functional_call, stack_module_state

from minitf.config import TrainConfig
from minitf.data import Batch
from minitf.errors import NonFiniteLossError
from minitf.trainer import autocast, keep_freed_memory, lr_at, make_optimizer, masked_loss


class Ensemble:
    """K copies of ``make_model(seed)`` trained together; ``member(i)`` gives a plain model back."""

    def __init__(self, make_model: Callable[[int], torch.nn.Module], seeds: list[int]):
        self.seeds = list(seeds)
        members = [make_model(s) for s in self.seeds]
        # SDPA has no vmap batching rule on CPU (it would loop over members); explicit
        # matmul + softmax attention batches over the member dimension.
        self.template = copy.deepcopy(members[0]).to("meta").use_attention("naive")
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
        """Member ``index`` (0..K-1, in ``seeds`` order) as a plain model on CPU: a copy of its
        current weights (detached, not shared with the ensemble) and the config's attention
        backend (the ensemble itself runs the naive backend)."""
        model = copy.deepcopy(self.template).to_empty(device="cpu").use_attention(None)
        model.load_state_dict({k: v[index].detach().clone() for k, v in {**self.params, **self.buffers}.items()})
        return model


def train_ensemble(ensemble: Ensemble, cfg: TrainConfig, batch_fns: list[Callable[[int], Batch]],
                   on_step: Callable[[int, list[float]], None] | None = None) -> list[list[float]]:
    """Train every member for ``cfg.steps`` on its own data stream; returns per-member losses.

    The optimizer and the loss are the trainer's (``make_optimizer``, ``masked_loss``). A
    non-finite loss or gradient of any member stops training *before* the optimizer step, so
    no member's weights ever take a non-finite update; raises ``NonFiniteLossError``.
    """
    keep_freed_memory()
    params = list(ensemble.params.values())
    opt = make_optimizer(params, cfg, member_dims=1)
    history = [[] for _ in range(len(ensemble))]
    for step in range(cfg.steps):
        batch = stack_batches([fn(step) for fn in batch_fns])
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        with autocast(cfg, batch.inputs.device):
            logits = ensemble.logits(batch.inputs)
        losses = masked_loss(logits.float(), batch)
        losses.sum().backward()
        norms = clip_per_member(params, cfg.grad_clip)
        values = losses.detach().tolist()
        bad = [i for i, (v, n) in enumerate(zip(values, norms.tolist())) if not (math.isfinite(v) and math.isfinite(n))]
        if bad:
            raise NonFiniteLossError(f"non-finite loss or gradient at step {step + 1} for ensemble members {bad} "
                                     f"(losses {values}); no update was applied. Lower lr or raise warmup and "
                                     "start again")
        opt.step()
        opt.zero_grad(set_to_none=True)
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


def clip_per_member(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """clip_grad_norm_ for each member separately (dimension 0 indexes members) when
    max_norm > 0; returns each member's gradient norm before clipping, shape (K,)."""
    sq = sum(p.grad.flatten(1).square().sum(1) for p in params)  # (K,)
    norms = sq.sqrt()
    if max_norm > 0:
        scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for p in params:
            p.grad.mul_(scale.view(-1, *([1] * (p.dim() - 1))))
    return norms
