"""The classic meta-learners as small torch models, and the Bayes-optimal learner of each task
family of ``toy_tasks.metalearn`` (Wu et al., ICLR 2025, compare in-context learning with both).

Meta-learners read the same token sequences as the in-context transformer
(``toy_tasks.metalearn.tokens``: support ``[x, onehot(y)]``, the query ``[x_q, 0, 0]`` last) and
return ``(batch, seq, 1)``: at the last position ``ŷ = p(y=1) − p(y=0) ∈ [−1, 1]`` for the query,
0 elsewhere, so ``minitf.trainer.masked_loss`` with targets ±1 at the query (squared error:
the Brier score ×4) trains them through ``RunContext.train`` like any model. Each has a
``cfg`` (``MetaLearnerConfig``) so its weights save with their config like a Transformer's.

Two versions of each. The paper-faithful ones (``matchnet``, ``protonet``, ``cnp``), after Wu et
al.'s code, are *tied to their family by structure*: embeddings of width d with LeakyReLU, built
residually (``x + MLP(x)``, last layer zero-initialised) so that at initialisation each computes its
family's rule exactly and narrow MLPs do not stall:

* ``matchnet`` (``CosineMatchNet``): an unnormalised cosine-sum vote,
  ``ŷ = tanh(a · Σ_i cos(f(x_q), f(x_i)) (2y_i − 1))`` — no softmax, no temperature (``a`` only
  scales the output for the squared-error loss; the decision is the sign of the sum). With f the
  identity this is ``sign(x_q · Σ_i s_i x̂_i)``: a halfspace through the origin, the pairwise
  family's form.
* ``protonet`` (``MeanProtoNet``): the nearest class mean of f(x); with f the identity, the
  perpendicular bisector of the two class means (the prototype family's Bayes rule for large k).
* ``cnp`` (``NarrowCNP``): encoder ``[x, onehot(y)]`` → width d + 4, mean-pooled, decoder
  ``[r, x_q]`` → logit, each ``linear + residual MLP``: it represents the amortised rule
  ``sign(Σ_j (x_qj − mean_i x_ij))`` with its linear parts.

The flexible ones (``matchnet_wide``, ``protonet_wide``, ``cnp_wide``; width ``hidden``, GELU)
are kernel smoothers or wide MLPs that can fit any of the three boundaries; kept as an ablation
(how much "matched beats mismatched" depends on how constrained the classic learners are):

* ``MatchNet`` (Vinyals et al. 2016, matching networks): an embedding MLP f, attention
  ``a_i = softmax_i(τ · cos(f(x_q), f(x_i)))`` over the support (τ learned), ``p(c) = Σ a_i [y_i = c]``;
  no full-context embeddings.
* ``ProtoNet`` (Snell et al. 2017, prototypical networks): prototypes ``c_k`` = the mean
  embedding of class k's support (the origin for a class with no support), logits
  ``−‖f(x_q) − c_k‖²``.
* ``CNP`` (Garnelo et al. 2018, conditional neural processes): encoder h([x_i, onehot(y_i)]),
  mean over the support (0 with none), decoder g([r, x_q]) → the logit difference.

Bayes learners (numpy in, numpy out; ``p1 (n,)`` = P(y_q = 1 | support, x_q) under the family's
training prior, so under a shift they are the exact rule with a misspecified prior): closed
form for ``amortization`` and ``unknown``; Markov chains for ``pairwise`` (sum rule; hit-and-run
in the version space) and ``prototype`` (random-walk Metropolis over both centres), each started
at the task's own parameter, which is an exact posterior draw when the task comes from the prior,
so no burn-in is needed in distribution (a short one is run anyway for shifted tasks).
"""
import abc
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

LEARNERS = ("matchnet", "protonet", "cnp")  # paper-faithful: tied to their family
WIDE = ("matchnet_wide", "protonet_wide", "cnp_wide")  # flexible: the ablation
KINDS = LEARNERS + WIDE


@dataclass
class MetaLearnerConfig:
    kind: str  # one of KINDS: "matchnet" | "protonet" | "cnp" (tied) or "<kind>_wide" (flexible)
    d: int  # input dimension of x (tokens are d + 2 wide)
    hidden: int = 64  # width of the MLPs' hidden layer
    d_embed: int = 32  # embedding / representation width

    def validate(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)} (got {self.kind!r})")
        for name in ("d", "hidden", "d_embed"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (got {getattr(self, name)})")
        return self


def mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    """Linear → GELU → Linear."""
    return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out))


class MetaLearner(nn.Module, abc.ABC):
    """Base class: splits ``inputs (n, T, d + 2)`` into support ``x (n, T−1, d)``, labels
    ``(n, T−1, 2)`` and query ``(n, d)``; ``predict`` returns ŷ ``(n,)``; ``forward`` places it
    at the last position of an ``(n, T, 1)`` output. Raises ValueError on a bad shape."""

    def __init__(self, cfg: MetaLearnerConfig):
        super().__init__()
        self.cfg = cfg.validate()

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        d = self.cfg.d
        if inputs.dim() != 3 or inputs.shape[-1] != d + 2 or inputs.shape[1] < 1:
            raise ValueError(f"inputs must be (batch, seq >= 1, d + 2 = {d + 2}); got {tuple(inputs.shape)}")
        y_hat = self.predict(inputs[:, :-1, :d], inputs[:, :-1, d:], inputs[:, -1, :d])
        out = torch.zeros(inputs.shape[:2] + (1,), dtype=inputs.dtype, device=inputs.device)
        out[:, -1, 0] = y_hat
        return out

    @abc.abstractmethod
    def predict(self, xs, onehot, xq) -> torch.Tensor:
        """ŷ ``(n,)`` for the query ``xq (n, d)`` from the support ``xs (n, k, d)`` and its
        one-hot labels ``onehot (n, k, 2)``; each meta-learner defines it."""


class MatchNet(MetaLearner):
    """Matching networks: cosine attention over the embedded support."""

    def __init__(self, cfg: MetaLearnerConfig):
        super().__init__(cfg)
        self.embed = mlp(cfg.d, cfg.hidden, cfg.d_embed)
        self.log_tau = nn.Parameter(torch.tensor(math.log(10.0)))

    def predict(self, xs, onehot, xq):
        if xs.shape[1] == 0:
            return torch.zeros(xq.shape[0], dtype=xq.dtype, device=xq.device)
        fs = nn.functional.normalize(self.embed(xs), dim=-1)
        fq = nn.functional.normalize(self.embed(xq), dim=-1)
        attn = torch.softmax(self.log_tau.exp() * torch.einsum("nkd,nd->nk", fs, fq), dim=-1)
        return torch.einsum("nk,nk->n", attn, onehot[..., 1] - onehot[..., 0])


class ProtoNet(MetaLearner):
    """Prototypical networks: nearest class-mean embedding (squared Euclidean)."""

    def __init__(self, cfg: MetaLearnerConfig):
        super().__init__(cfg)
        self.embed = mlp(cfg.d, cfg.hidden, cfg.d_embed)

    def predict(self, xs, onehot, xq):
        fs, fq = self.embed(xs), self.embed(xq)
        counts = onehot.sum(1).clamp(min=1.0)  # (n, 2)
        protos = torch.einsum("nkc,nke->nce", onehot, fs) / counts[..., None]
        logits = -((fq[:, None, :] - protos) ** 2).sum(-1)
        return torch.tanh((logits[:, 1] - logits[:, 0]) / 2)


class CNP(MetaLearner):
    """Conditional neural process: encoder, mean, decoder."""

    def __init__(self, cfg: MetaLearnerConfig):
        super().__init__(cfg)
        self.encoder = mlp(cfg.d + 2, cfg.hidden, cfg.d_embed)
        self.decoder = mlp(cfg.d_embed + cfg.d, cfg.hidden, 1)

    def predict(self, xs, onehot, xq):
        if xs.shape[1] == 0:
            r = torch.zeros(xq.shape[0], self.cfg.d_embed, dtype=xq.dtype, device=xq.device)
        else:
            r = self.encoder(torch.cat([xs, onehot], dim=-1)).mean(1)
        return torch.tanh(self.decoder(torch.cat([r, xq], dim=-1))[:, 0])


class Residual(nn.Module):
    """``x ↦ x + Linear → LeakyReLU → Linear (x)`` at width ``n``, the last layer zero-initialised:
    the identity at initialisation (narrow MLPs that start as the family's rule do not stall)."""

    def __init__(self, n: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(n, n), nn.LeakyReLU(), nn.Linear(n, n))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def forward(self, x):
        return x + self.mlp(x)


class ResidualEmbedding(MetaLearner):
    """The tied learners' shared parts: an embedding f = ``Residual`` at width d (the identity at
    initialisation) and a learned output scale ``a = exp(log_scale)``; subclasses define the rule."""

    def __init__(self, cfg: MetaLearnerConfig):
        super().__init__(cfg)
        self.embed = Residual(cfg.d)
        self.log_scale = nn.Parameter(torch.zeros(()))


class CosineMatchNet(ResidualEmbedding):
    """Wu et al.'s matching network: ``tanh(a · Σ_i cos(f(x_q), f(x_i)) (2y_i − 1))``, f residual at width d."""

    def predict(self, xs, onehot, xq):
        fs = nn.functional.normalize(self.embed(xs), dim=-1)
        fq = nn.functional.normalize(self.embed(xq), dim=-1)
        vote = torch.einsum("nkd,nd,nk->n", fs, fq, onehot[..., 1] - onehot[..., 0])
        return torch.tanh(self.log_scale.exp() * vote)


class MeanProtoNet(ResidualEmbedding):
    """Wu et al.'s prototypical network: nearest class mean of f(x), f residual at width d."""

    def predict(self, xs, onehot, xq):
        fs, fq = self.embed(xs), self.embed(xq)
        counts = onehot.sum(1).clamp(min=1.0)
        protos = torch.einsum("nkc,nke->nce", onehot, fs) / counts[..., None]
        logits = -((fq[:, None, :] - protos) ** 2).sum(-1)
        return torch.tanh(self.log_scale.exp() * (logits[:, 1] - logits[:, 0]) / 2)


class NarrowCNP(MetaLearner):
    """Wu et al.'s conditional neural process at width d + 4: encoder and decoder each
    ``Linear + residual MLP``, the representation mean-pooled over the support."""

    def __init__(self, cfg: MetaLearnerConfig):
        super().__init__(cfg)
        w = cfg.d + 4
        self.encoder = nn.Sequential(nn.Linear(cfg.d + 2, w), Residual(w))
        self.decoder = nn.Sequential(nn.Linear(w + cfg.d, w), Residual(w), nn.Linear(w, 1))

    def predict(self, xs, onehot, xq):
        if xs.shape[1] == 0:
            r = torch.zeros(xq.shape[0], self.cfg.d + 4, dtype=xq.dtype, device=xq.device)
        else:
            r = self.encoder(torch.cat([xs, onehot], dim=-1)).mean(1)
        return torch.tanh(self.decoder(torch.cat([r, xq], dim=-1))[:, 0])


def build(kind: str, d: int, hidden: int = 64, d_embed: int = 32) -> MetaLearner:
    """A fresh meta-learner of ``kind`` (``KINDS``) for d-dimensional inputs; ``hidden`` and
    ``d_embed`` size the ``_wide`` learners only (the tied ones are width d, the CNP d + 4)."""
    cfg = MetaLearnerConfig(kind, d, hidden, d_embed).validate()
    return {"matchnet": CosineMatchNet, "protonet": MeanProtoNet, "cnp": NarrowCNP, "matchnet_wide": MatchNet,
            "protonet_wide": ProtoNet, "cnp_wide": CNP}[kind](cfg)


# -- Bayes-optimal learners ------------------------------------------------------------------
def _t(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=float), dtype=torch.float64)


def _masked_extreme(values, mask, fill: float, largest: bool) -> torch.Tensor:
    """Row-wise max (``largest``) or min of ``values (n, k)`` where ``mask``; ``fill`` where none (or k = 0)."""
    pad = torch.full((values.shape[0], 1), fill, dtype=torch.float64)
    kept = torch.cat([torch.where(mask, values, torch.tensor(fill, dtype=torch.float64)), pad], dim=1)
    return kept.amax(1) if largest else kept.amin(1)


def _check(xs, ys, xq):
    xs, ys, xq = np.asarray(xs, dtype=float), np.asarray(ys), np.asarray(xq, dtype=float)
    if xs.ndim != 3 or ys.shape != xs.shape[:2] or xq.shape != (xs.shape[0], xs.shape[2]):
        raise ValueError(f"need xs (n, k, d), ys (n, k), xq (n, d); got {xs.shape}, {ys.shape}, {xq.shape}")
    return xs, ys, xq


def bayes_amortization(xs, ys, xq, point_std: float = 1.0) -> np.ndarray:
    """P(y_q = 1) ``(n,)`` for the amortization family, exactly.

    Only ``S = Σ_j W_j ~ N(0, d)`` matters: ``u = Σ_j x_j = S + N(0, dσ²)`` and ``y = [u > S]``. The
    posterior of S given the support and the query's u_q is the Gaussian from the u's (prior
    included) truncated to ``[max u_i (y_i = 0), min u_i (y_i = 1)]``; the answer is its mass below
    u_q. ``xs (n, k, d)``, ``ys (n, k)``, ``xq (n, d)``; σ = ``point_std``.
    """
    xs, ys, xq = _check(xs, ys, xq)
    n, k, d = xs.shape
    u, uq = _t(xs.sum(-1)), _t(xq.sum(-1))
    y = torch.as_tensor(ys, dtype=torch.bool)
    prec = 1.0 / d + (k + 1) / (d * point_std ** 2)
    mean, sd = (u.sum(1) + uq) / (d * point_std ** 2) / prec, math.sqrt(1.0 / prec)
    lo, hi = _masked_extreme(u, ~y, -math.inf, True), _masked_extreme(u, y, math.inf, False)
    return _truncated_mass_below(mean, sd, lo, hi, uq).numpy()


def _truncated_mass_below(mean, sd, lo, hi, at):
    """P(Z < at) for Z ~ N(mean, sd²) truncated to [lo, hi], computed in whichever tail is precise."""
    flip = (lo + hi) / 2 > mean  # work in the lower tail: mirror an interval above the mean (nan: no)
    a, b, c = ((torch.where(flip, -hi, lo) - torch.where(flip, -mean, mean)) / sd,
               (torch.where(flip, -lo, hi) - torch.where(flip, -mean, mean)) / sd,
               (torch.where(flip, -at, at) - torch.where(flip, -mean, mean)) / sd)
    fa, fb = torch.special.ndtr(a), torch.special.ndtr(b)
    frac = ((torch.special.ndtr(c.clamp(a, b)) - fa) / (fb - fa)).clamp(0, 1)
    frac = torch.where(fb > fa, frac, (c > (a + b) / 2).double())  # vanishing mass: the midpoint decides
    return torch.where(flip, 1 - frac, frac)


def bayes_unknown(xs, ys, xq) -> np.ndarray:
    """P(y_q = 1) ``(n,)`` for the unknown family (``y = [‖x‖ > r]``), exactly.

    With F the χ_d distribution function, ``F(r) ~ Beta(2, 2)`` (r is the median of three χ_d
    draws); the support confines r to ``[max ‖x_i‖ (y_i = 0), min ‖x_i‖ (y_i = 1))`` and the answer
    is the posterior mass of r below ‖x_q‖, ``G(F(·))`` with ``G(u) = 3u² − 2u³``.
    """
    xs, ys, xq = _check(xs, ys, xq)
    d = xs.shape[2]
    rad, rq = _t(np.linalg.norm(xs, axis=-1)), _t(np.linalg.norm(xq, axis=-1))
    y = torch.as_tensor(ys, dtype=torch.bool)
    lo, hi = _masked_extreme(rad, ~y, 0.0, True), _masked_extreme(rad, y, math.inf, False)

    def g(r):  # G(F(r)), F(r) = P(d/2, r²/2): the χ_d distribution function
        f = torch.special.gammainc(torch.tensor(d / 2, dtype=torch.float64), torch.nan_to_num(r, posinf=1e300) ** 2 / 2)
        return 3 * f ** 2 - 2 * f ** 3

    glo, ghi = g(lo), g(hi)
    p = ((g(torch.minimum(rq, hi)) - glo) / (ghi - glo)).clamp(0, 1)
    return torch.where(ghi > glo, p, (rq > (lo + hi) / 2).double()).numpy()


def bayes_pairwise(xs, ys, xq, start, n_steps: int = 200, seed: int = 0) -> np.ndarray:
    """P(y_q = 1) ``(n,)`` for the pairwise family with the "sum" rule (``y = [x·v > 0]``, v's
    direction uniform), by hit-and-run in the version space.

    The posterior of v's direction is uniform on the cone ``{v : (2y_i − 1) x_i·v > 0}``; the chain
    samples a standard Gaussian restricted to the cone (whose direction has that law) exactly along
    random lines (each step a 1-D truncated normal). ``start (n, d)``: a point of the cone, e.g. the
    task's ``pairwise_normal`` (then the chain starts at an exact posterior draw: its direction
    with a χ_d radius). The answer is the share of the ``n_steps`` states with ``v·x_q > 0``.
    """
    xs, ys, xq = _check(xs, ys, xq)
    n, k, d = xs.shape
    gen = torch.Generator().manual_seed(seed)
    a = _t((2 * ys - 1)[..., None] * xs)
    v = _t(start)
    v = v / v.norm(dim=1, keepdim=True) * torch.randn(n, d, generator=gen, dtype=torch.float64).norm(dim=1, keepdim=True)
    q, votes = _t(xq), torch.zeros(n, dtype=torch.float64)
    for _ in range(n_steps):
        u = torch.randn(n, d, generator=gen, dtype=torch.float64)
        u = u / u.norm(dim=1, keepdim=True)
        av, au = torch.einsum("nkd,nd->nk", a, v), torch.einsum("nkd,nd->nk", a, u)
        ratio = -av / torch.where(au == 0, torch.ones_like(au), au)
        lo, hi = _masked_extreme(ratio, au > 0, -math.inf, True), _masked_extreme(ratio, au < 0, math.inf, False)
        t = _truncated_normal(-(v * u).sum(1), lo.clamp(max=0.0), hi.clamp(min=0.0), gen)
        v = v + t[:, None] * u
        votes += ((v * q).sum(1) > 0).double()
    return (votes / n_steps).numpy()


def _truncated_normal(mean, lo, hi, gen):
    """One draw of N(mean, 1) truncated to [lo, hi] per row (inverse CDF in the precise tail)."""
    flip = (lo + hi) / 2 > mean  # sample in the lower tail, where the CDF is precise
    a = torch.where(flip, mean - hi, lo - mean)
    b = torch.where(flip, mean - lo, hi - mean)
    fa, fb = torch.special.ndtr(a), torch.special.ndtr(b)
    p = fa + torch.rand(mean.shape, generator=gen, dtype=torch.float64) * (fb - fa)
    z = torch.special.ndtri(p.clamp(1e-300, 1 - 1e-16)).clamp(a, b)
    z = torch.where(fb > fa, z, torch.zeros_like(z).clamp(a, b))
    return torch.where(flip, mean - z, mean + z)


def bayes_prototype(xs, ys, xq, start, point_std: float = 1.0, n_steps: int = 300, burn_in: int = 50,
                    seed: int = 0, step_scale: float = 1.0) -> np.ndarray:
    """P(y_q = 1) ``(n,)`` for the prototype family, by random-walk Metropolis over both centres.

    Target: prior ``N(0, I)`` on each centre × the mixture density ``½N(x; μ_0, σ²) + ½N(x; μ_1, σ²)``
    of every support point and the query × [every support label is its point's nearest centre].
    ``start (n, 2, d)`` must label the support correctly (the task's own centres do, and are an
    exact posterior draw in distribution). The answer is the share of the states after
    ``burn_in`` whose nearest centre to x_q is centre 1. Proposal std ``step_scale · σ / sqrt(k/2 + 1)``.
    """
    xs, ys, xq = _check(xs, ys, xq)
    n, k, d = xs.shape
    gen = torch.Generator().manual_seed(seed)
    pts = torch.cat([_t(xs), _t(xq)[:, None]], dim=1)  # (n, k + 1, d)
    y = torch.as_tensor(ys, dtype=torch.long)
    var = point_std ** 2

    def log_target(mu):  # (n, 2, d) → (n,)
        dist2 = ((pts[:, :, None, :] - mu[:, None]) ** 2).sum(-1)  # (n, k + 1, 2)
        ok = ((dist2[:, :k, 1] < dist2[:, :k, 0]).long() == y).all(1)
        lp = -0.5 * (mu ** 2).sum((1, 2)) + torch.logsumexp(-dist2 / (2 * var), dim=-1).sum(1)
        return torch.where(ok, lp, torch.tensor(-math.inf, dtype=torch.float64))

    mu = _t(start).clone()
    lp = log_target(mu)
    step = step_scale * point_std / math.sqrt(k / 2 + 1)
    votes = torch.zeros(n, dtype=torch.float64)
    for i in range(burn_in + n_steps):
        prop = mu + step * torch.randn(mu.shape, generator=gen, dtype=torch.float64)
        lp_prop = log_target(prop)
        accept = torch.log(torch.rand(n, generator=gen, dtype=torch.float64)) < lp_prop - lp
        mu, lp = torch.where(accept[:, None, None], prop, mu), torch.where(accept, lp_prop, lp)
        if i >= burn_in:
            dq = ((_t(xq)[:, None] - mu) ** 2).sum(-1)
            votes += (dq[:, 1] < dq[:, 0]).double()
    return (votes / n_steps).numpy()
