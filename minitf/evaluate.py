"""Evaluation: per-position loss, and accuracy by ranking candidate answers.

Ranking follows Lampinen et al. (2025): each candidate answer is scored by the model's
likelihood at the answer position; the options are never shown in context. Every result
states its chance level and a 95% interval so small differences are not over-read.
"""
import math

import torch
import torch.nn.functional as F

from minitf.data import Batch


@torch.no_grad()
def per_position_loss(model, batch: Batch, chunk: int = 256) -> torch.Tensor:
    """Mean next-token loss at each target position over the batch (nats), shape (seq-1,)."""
    total = torch.zeros(batch.inputs.shape[1])
    count = torch.zeros(batch.inputs.shape[1])
    for start in range(0, batch.inputs.shape[0], chunk):
        inp, tgt, mask = (t[start:start + chunk] for t in (batch.inputs, batch.targets, batch.mask))
        logits = model(inp)
        ce = F.cross_entropy(logits.transpose(1, 2), tgt, reduction="none")
        total += (ce * mask).sum(0).cpu()
        count += mask.sum(0).cpu()
    return total / count.clamp(min=1)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> list[float]:
    """95% Wilson score interval for a binomial proportion (sane at 0 and 1, unlike Wald)."""
    if n == 0:
        return [0.0, 1.0]
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return [max(0.0, centre - half), min(1.0, centre + half)]
