"""Evaluation: per-position loss, and accuracy by ranking candidate answers.

Ranking follows Lampinen et al. (2025): each candidate answer is scored by the model's
likelihood at the answer position; the options are never shown in context. Every result
states its chance level and a 95% interval so small differences are not over-read: a
proportion's Wilson interval (``proportion``), or over seeds the Student-t interval of a mean
(``mean_interval``, the one every merge of seeds uses).
"""
import math

import numpy as np
import torch
import torch.nn.functional as F

from minitf.data import Batch
from minitf.errors import InputError


@torch.no_grad()
def per_position_loss(model, batch: Batch, chunk: int = 256) -> torch.Tensor:
    """Mean next-token loss at each target position over the batch (nats), shape (seq-1,);
    a batch of 0 positions gives an empty tensor. ``InputError`` for a batch of no rows (no mean
    to take)."""
    if batch.inputs.shape[0] == 0:
        raise InputError("per_position_loss got a batch of 0 rows; there is no loss to average: pass at "
                         "least one example")
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


def proportion(successes, chance: float) -> dict:
    """The standard result record: accuracy, 95% interval, chance level, sample size."""
    n, k = len(successes), int(sum(bool(s) for s in successes))
    return {"acc": k / n if n else 0.0, "ci95": wilson_interval(k, n), "chance": chance, "n": n}


# two-sided 95% Student t quantiles by number of values (degrees of freedom + 1)
T_975 = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571, 7: 2.447, 8: 2.365, 9: 2.306, 10: 2.262}


def t975(n: int) -> float:
    """The two-sided 95% Student-t quantile for ``n`` values (n − 1 degrees of freedom): the table
    up to 10 values, then the Cornish-Fisher expansion (within 0.003 of the exact quantile from 11 values)."""
    if n in T_975:
        return T_975[n]
    z, df = 1.959964, max(n - 1, 1)
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def mean_interval(values) -> tuple[float, float]:
    """``(mean, half_width)`` of ``values`` (e.g. one per seed): the mean and the half-width of its
    two-sided 95% Student-t interval, ``t975(n) · sd / √n`` with the n − 1 standard deviation; a
    single value has half-width 0.0. The interval is ``[mean − half_width, mean + half_width]``."""
    arr = np.asarray(values, dtype=float)
    mean = float(arr.mean())
    half = t975(len(arr)) * float(arr.std(ddof=1)) / math.sqrt(len(arr)) if len(arr) > 1 else 0.0
    return mean, half


@torch.no_grad()
def answer_logprobs(model, examples, vocab, batch_size: int = 512) -> torch.Tensor:
    """Log-probabilities over the vocab at each example's answer position, (n, vocab).

    All candidates of an example are ranked from one forward pass, and examples are
    batched (right-padded; padding after the answer cannot affect it under causal masking).
    No examples give a (0, vocab) tensor; an example whose answer is its first token
    (``answer_pos`` 0: nothing to condition on) is an ``InputError``.
    """
    for n, ex in enumerate(examples):
        if ex.answer_pos < 0:
            raise InputError(f"example {n} has no answer position (answer_pos {ex.answer_pos}): rank only "
                             "examples made for ranked evaluation (answer_pos >= 1)")
        if ex.answer_pos == 0:
            raise InputError(f"example {n} has its answer at position 0: the model needs at least one token "
                             "before the answer to predict it; start examples with <bos>")
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        length = max(ex.answer_pos for ex in chunk)
        ids = torch.full((len(chunk), length), vocab.pad_id, dtype=torch.long)
        for row, ex in enumerate(chunk):
            ids[row, : ex.answer_pos] = torch.tensor(vocab.encode(ex.tokens[: ex.answer_pos]))
        logits = model(ids.to(device))
        last = torch.tensor([ex.answer_pos - 1 for ex in chunk], device=device)
        picked = logits[torch.arange(len(chunk), device=device), last]
        out.append(torch.log_softmax(picked.float(), -1).cpu())
    width = model.cfg.vocab_size if hasattr(model, "cfg") else len(vocab)  # the logits' width, as for n > 0
    return torch.cat(out) if out else torch.zeros(0, width)


def kway_correct(logprobs: torch.Tensor, examples, vocab) -> list[bool]:
    """The answer outranks every other candidate (ties count as wrong)."""
    hits = []
    for lp, ex in zip(logprobs, examples):
        scores = lp[vocab.encode(ex.candidates)]
        hits.append(bool(scores[0] > scores[1:].max()) if len(scores) > 1 else True)
    return hits


def top1_correct(logprobs: torch.Tensor, examples, vocab, pool: list[str], exclude=None) -> list[bool]:
    """The answer is the argmax over the whole ``pool`` (e.g. every entity), minus exclusions."""
    pool_ids = torch.tensor(vocab.encode(pool))
    index = {t: i for i, t in enumerate(pool)}
    hits = []
    for n, (lp, ex) in enumerate(zip(logprobs, examples)):
        scores = lp[pool_ids].clone()
        for token in (exclude[n] if exclude else ()):
            scores[index[token]] = float("-inf")
        hits.append(pool[int(scores.argmax())] == ex.answer)
    return hits
