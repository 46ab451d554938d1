"""Induction-head probes, ablation and patching (Olsson et al. 2022; Elhage et al. 2021).

Every score is an array indexed [layer][head]. Attention patterns come from
``hook_pattern``: hooking it makes the model take the pattern-materializing path whatever
``attn_impl`` says (see ``minitf.attention``), so a fused backend never yields a wrong score.

- previous-token score: mean attention from position i to i−1.
- duplicate-token score: mean attention from a repeated token to its earlier occurrence.
- prefix-matching score: on a random segment repeated, mean attention from each token of
  a later repeat to the token right *after* its earlier occurrence (what an induction head does).
- copying score: for each head's full OV circuit M = W_E · W_V · W_O · W_U, Σλ / Σ|λ| over
  M's eigenvalues; near 1 means the head copies the token it attends to. LayerNorm: its
  gains are folded into W_V (the block's ln1) and W_U (ln_final); centring and the
  per-token scale are ignored, as in Elhage et al.'s attention-only analysis.
- ICL score: loss at a late token minus loss at an early token (more negative = more ICL).

Per position (``score_curves``): the attention scores above are means over query positions, and
a head can work at some positions only — in tests/data/induction_run the previous-token heads
attend to i−1 with 0.98–0.99 up to position ≈ 60 and 0.00 from 64 on, a mean of 0.48.
``head_verdicts`` reports where each head works (``position_range``) and decides ``formed`` on
the positions training covered, so a head is never called absent where it works.
"""
import contextlib

import numpy as np
import torch

from minitf.data import Batch
from minitf.errors import InputError
from minitf.evaluate import per_position_loss
from minitf.hooks import hooks


def repeated_random_tokens(rng: np.random.Generator, token_ids: list[int], n_seq: int, segment: int,
                           repeats: int = 2, bos_id: int | None = None) -> torch.Tensor:
    """(n_seq, [1 +] repeats·segment): a random segment repeated, optionally after a BOS."""
    seg = rng.choice(np.asarray(token_ids), size=(n_seq, segment))
    tokens = np.tile(seg, (1, repeats))
    if bos_id is not None:
        tokens = np.concatenate([np.full((n_seq, 1), bos_id), tokens], axis=1)
    return torch.as_tensor(tokens, dtype=torch.long)


@torch.no_grad()
def attention_patterns(model, tokens: torch.Tensor) -> torch.Tensor:
    """(layer, batch, head, query, key) attention probabilities."""
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("attn.hook_pattern"))
    return torch.stack([cache["pattern", i] for i in range(model.cfg.n_layers)])


def _mean_offset(patterns, queries: range, offset: int) -> np.ndarray:
    """Mean attention from each query position q to key q − offset, per (layer, head)."""
    if len(queries) == 0:
        raise InputError(f"the probe tokens ({patterns.shape[-1]} positions) hold no query position for this "
                         "score; pass longer sequences (a repeated segment: at least segment + 1 tokens)")
    q = torch.tensor(list(queries))
    vals = patterns[:, :, :, q, q - offset]  # (layer, batch, head, n)
    return vals.mean(dim=(1, 3)).cpu().numpy()


def previous_token_score(model, tokens: torch.Tensor) -> np.ndarray:
    """(layer, head) floats in [0, 1]: mean attention from each position i ≥ 1 to i − 1, over
    ``tokens`` (batch, seq) int64 (Olsson et al. 2022)."""
    return _mean_offset(attention_patterns(model, tokens), range(1, tokens.shape[1]), 1)


def prefix_matching_score(model, tokens: torch.Tensor, segment: int, start: int = 0) -> np.ndarray:
    """``tokens`` hold a segment of length ``segment`` repeated from position ``start`` on."""
    queries = range(start + segment, tokens.shape[1])
    return _mean_offset(attention_patterns(model, tokens), queries, segment - 1)


def duplicate_token_score(model, tokens: torch.Tensor, segment: int, start: int = 0) -> np.ndarray:
    """(layer, head) floats in [0, 1]: mean attention from each position q of a later repeat to
    q − ``segment``, the same token's earlier occurrence. ``tokens`` (batch, seq) int64 hold a
    segment of length ``segment`` repeated from position ``start`` on (e.g. from
    ``repeated_random_tokens``; Olsson et al. 2022)."""
    return _mean_offset(attention_patterns(model, tokens), range(start + segment, tokens.shape[1]), segment)


@torch.no_grad()
def copying_score(model) -> np.ndarray:
    """Σλ/Σ|λ| of each head's full OV circuit (LayerNorm gains folded in; see module docstring)."""
    cfg = model.cfg
    w_e = model.embed.weight.double()  # (vocab, d)
    w_u = model.unembed.weight.double().T  # (d, vocab)
    if model.ln_final.ln is not None:
        w_u = model.ln_final.ln.weight.double()[:, None] * w_u
    scores = np.zeros((cfg.n_layers, cfg.n_heads))
    for layer, block in enumerate(model.blocks):
        w_v, w_o = block.attn.head_weights()
        gain = block.ln1.ln.weight.double() if block.ln1.ln is not None else torch.ones(cfg.d_model, dtype=torch.float64)
        for h in range(cfg.n_heads):
            ov = (gain[:, None] * w_v[h].double()) @ w_o[h].double()  # (d, d)
            # eig(W_E·OV·W_U) equals eig(OV·W_U·W_E) on its non-zero part: a d×d problem, not vocab×vocab
            lam = torch.linalg.eigvals(ov @ w_u @ w_e)
            scores[layer, h] = float(lam.real.sum() / lam.abs().sum())
    return scores


def icl_score(model, batch: Batch, early: int, late: int, window: int = 2, losses=None) -> float:
    """Mean loss around target index ``late`` minus around ``early`` (nats). Pass ``losses``
    (from ``per_position_loss``) when they are already computed, to skip the forward pass."""
    losses = per_position_loss(model, batch) if losses is None else losses
    around = lambda i: losses[max(0, i - window): i + window + 1].mean().item()  # noqa: E731
    return around(late) - around(early)


# -- interventions --------------------------------------------------------------------------
@contextlib.contextmanager
def ablate_heads(model, heads: list[tuple[int, int]], mode: str = "zero", means: dict | None = None):
    """Zero- or mean-ablate the outputs (hook_z) of the given (layer, head)s for the block.

    Mean ablation needs ``means[layer]``: the head outputs averaged over a reference batch,
    shape (head, d_head) — see ``mean_head_outputs``.
    """
    if mode not in ("zero", "mean"):
        raise ValueError(f"ablation mode must be 'zero' or 'mean' (got {mode!r})")
    if mode == "mean" and means is None:
        raise ValueError("mean ablation needs means=mean_head_outputs(model, tokens)")
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        if not (0 <= layer < model.cfg.n_layers and 0 <= head < model.cfg.n_heads):
            raise ValueError(f"head ({layer}, {head}) does not exist in a {model.cfg.n_layers}-layer, "
                             f"{model.cfg.n_heads}-head model")
        by_layer.setdefault(layer, []).append(head)

    def make(layer, hs):
        def fn(z, hook):
            z = z.clone()
            z[:, :, hs] = 0.0 if mode == "zero" else means[layer][hs].to(z)
            return z
        return fn

    with hooks(model, [(f"blocks.{layer}.attn.hook_z", make(layer, hs)) for layer, hs in by_layer.items()]):
        yield


@torch.no_grad()
def mean_head_outputs(model, tokens: torch.Tensor) -> dict[int, torch.Tensor]:
    """{layer: (head, d_head) floats}: each head's output ``hook_z`` averaged over the batch and
    positions of ``tokens`` (batch, seq) int64; the ``means`` for mean ablation in ``ablate_heads``."""
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("attn.hook_z"))
    return {i: cache["z", i].mean(dim=(0, 1)) for i in range(model.cfg.n_layers)}


@contextlib.contextmanager
def patch_activations(model, patches: dict[str, torch.Tensor]):
    """Replace the named activations (e.g. from a cache of a clean run) for the block."""
    with hooks(model, [(name, lambda act, hook, v=value: v.to(act)) for name, value in patches.items()]):
        yield


def select_heads(scores, threshold: float | None = None, top: int | None = None,
                 min_layer: int = 1) -> list[list[int]]:
    """[layer, head] pairs of layers ≥ ``min_layer`` by a per-head score ([layer][head] array),
    highest first (ties in layer-major order): those scoring ≥ ``threshold`` (or, if none
    does, the best one), or the ``top`` best. The one head-selection rule every ablation uses."""
    arr = np.asarray(scores, dtype=float)
    ranked = sorted(((layer, h) for layer in range(min_layer, arr.shape[0]) for h in range(arr.shape[1])),
                    key=lambda lh: -arr[lh])
    if not ranked:
        return []
    if top is not None:
        return [list(lh) for lh in ranked[:top]]
    if threshold is None:
        raise ValueError("select_heads needs threshold= or top=")
    return [list(lh) for lh in ranked if arr[lh] >= threshold] or [list(ranked[0])]


def ablation_effect(model, heads, metric, mode: str = "zero", means=None) -> dict:
    """How ``metric(model) -> float`` changes when ``heads`` are ablated."""
    base = metric(model)
    with ablate_heads(model, heads, mode, means):
        ablated = metric(model)
    return {"heads": [list(h) for h in heads], "base": base, "ablated": ablated, "delta": ablated - base}


THRESHOLD = 0.5  # a score above it: the head does the thing (the report's "formed" rule)
MIN_RUN = 8  # consecutive query positions a head must work at to count as working somewhere
MAX_GAP = 2  # dips below the threshold of at most this many positions do not end a run


def score_curves(model, tokens: torch.Tensor, segment: int, start: int) -> dict:
    """Each attention score per query position, the ``report.json`` format:
    ``{score: {"positions": [q, ...], "score": [layer][head][i]}}`` for ``previous_token``
    (q = 1..n−1, attention to q − 1), ``prefix_matching`` (q in the later repeats, to
    q − segment + 1) and ``duplicate_token`` (to q − segment), each the mean over the batch of
    ``tokens`` (batch, n) (a segment of length ``segment`` repeated from position ``start``)."""
    patterns = attention_patterns(model, tokens)
    n = tokens.shape[1]
    out = {}
    for name, queries, offset in (("previous_token", range(1, n), 1),
                                  ("prefix_matching", range(start + segment, n), segment - 1),
                                  ("duplicate_token", range(start + segment, n), segment)):
        if len(queries) == 0:
            raise InputError(f"the probe tokens ({n} positions) hold no query position for {name}; pass longer "
                             "sequences (a repeated segment: at least segment + 1 tokens)")
        q = torch.tensor(list(queries))
        curve = patterns[:, :, :, q, q - offset].mean(dim=1)  # (layer, head, n_queries)
        out[name] = {"positions": list(queries), "score": np.round(curve.cpu().numpy(), 4).tolist()}
    return out


def position_range(curve, positions, threshold: float = THRESHOLD, min_run: int = MIN_RUN,
                   max_gap: int = MAX_GAP) -> list[int] | None:
    """``[first, last]``: the longest run of consecutive query ``positions`` where ``curve`` (one
    head's per-position score) is above ``threshold``, dips of up to ``max_gap`` positions inside
    a run bridged (a noisy 0.55 curve is one run, not many); None when no run spans ``min_run``
    positions (a head attending to <bos> scores 1.0 at position 1 alone: no previous-token head)."""
    works = [i for i, v in enumerate(curve) if v > threshold]
    runs = []  # [first index, last index] of runs, gaps ≤ max_gap bridged
    for i in works:
        if runs and i - runs[-1][1] - 1 <= max_gap:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    runs = [r for r in runs if r[1] - r[0] + 1 >= min_run]
    if not runs:
        return None
    first, last = max(runs, key=lambda r: r[1] - r[0])  # the first of equally long runs
    return [int(positions[first]), int(positions[last])]


def head_verdicts(curves: dict, trained_positions: int, threshold: float = THRESHOLD) -> dict:
    """Where each head works and whether it formed, from ``score_curves`` output, judged on the
    query positions training covered (< ``trained_positions``, the training data's sequence
    length): ``{"position_range": {score: [layer][head] [first, last] or None}, "formed": {score:
    [layer][head] bool}, "score_trained": {score: [layer][head] mean over covered positions}}``.
    A head formed when its mean over the covered positions is above ``threshold`` or it works
    (``position_range``) on a run of covered positions: never called absent where it works."""
    out = {"position_range": {}, "formed": {}, "score_trained": {}}
    for name, c in curves.items():
        keep = [i for i, q in enumerate(c["positions"]) if q < trained_positions]
        positions = [c["positions"][i] for i in keep]
        ranges, formed, means = [], [], []
        for layer in c["score"]:
            ranges.append([position_range([head[i] for i in keep], positions) if keep else None for head in layer])
            means.append([round(float(np.mean([head[i] for i in keep])), 4) if keep else None for head in layer])
            formed.append([bool(r is not None or (m is not None and m > threshold))
                           for r, m in zip(ranges[-1], means[-1])])
        out["position_range"][name], out["formed"][name], out["score_trained"][name] = ranges, formed, means
    return out


def all_scores(model, tokens: torch.Tensor, segment: int, start: int) -> dict:
    """Every per-head score as nested lists, the ``report.json`` format."""
    patterns = attention_patterns(model, tokens)
    n = tokens.shape[1]
    return {"previous_token": _mean_offset(patterns, range(1, n), 1).tolist(),
            "prefix_matching": _mean_offset(patterns, range(start + segment, n), segment - 1).tolist(),
            "duplicate_token": _mean_offset(patterns, range(start + segment, n), segment).tolist(),
            "copying": copying_score(model).tolist()}
