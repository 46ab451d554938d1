"""Few-shot classification families whose optimal learner is known (Wu et al., ICLR 2025,
"Why in-context learning models are good few-shot learners?", code ovo67/Uni_ICL).

Every task is a binary problem in d dimensions: ``n_support`` labelled support points and one
query, all drawn for one task parameter. Labels are 0/1. Pure numpy, seeded by the caller's
Generator, plain arrays out: nothing here knows about models or torch. The families (the
paper's names; σ = ``point_std``, 1 in the paper):

* ``pairwise`` (pair-wise metric; matched learner: matching networks): each class c has
  ``n_protos`` prototype directions ``w_cj ~ N(0, I_d)``; inputs ``x ~ N(0, I_d)``; the label is
  the class with the larger ``Σ_j cos(x, w_cj)`` (``pairwise_rule="sum"``, the paper's code) or
  ``max_j cos(x, w_cj)`` (``"max"``). With "sum" the label is ``[x·v > 0]`` for the fixed normal
  ``v = Σ_j ŵ_1j − Σ_j ŵ_0j`` (``pairwise_normal``): a halfspace through the origin whose
  direction is uniform on the sphere, whatever ``n_protos`` is.
* ``prototype`` (class prototype; matched learner: prototypical networks): class centres
  ``μ_0, μ_1 ~ N(0, I_d)``; each point picks a centre uniformly and is ``μ_z + σ ε``; its label is
  the nearest centre (Euclidean), which need not be the one it was drawn around.
* ``amortization`` (matched learner: conditional neural processes): a task vector
  ``W ~ N(0, I_d)``; points ``x = W + σ ε``; label ``[Σ_j (x_j − W_j) > 0]``.
* ``unknown`` (test only; no classic learner's family): ``x ~ N(0, I_d)``, label ``[‖x‖ > r]`` with
  ``r`` the median of three independent ``‖z‖``, ``z ~ N(0, I_d)`` (so the share of class 0 in a
  task is Beta(2, 2): mean ½, rarely below ⅒).
* ``mixture`` (training only): each task is one of the three families, uniformly.

A shifted test set (``shift=True``) multiplies the spread of the inputs by ``shift_scale``
(``x ~ N(0, s²I)``, ``μ_z + sσε``, ``W + sσε``) for the support, the query or both
(``shift_on``); task parameters and labelling rules are unchanged.

Token layout for a sequence model (``tokens``): each support example is one vector
``[x, onehot(y)]`` (width d + 2) and the query ``[x_q, 0, 0]`` comes last.
"""
from dataclasses import dataclass

import numpy as np

FAMILIES = ("pairwise", "prototype", "amortization")
TEST_ONLY = ("unknown",)
PAIRWISE_RULES = ("sum", "max")
SHIFT_ON = ("both", "query", "support")
PARAM_KEYS = {"pairwise": "protos", "prototype": "centres", "amortization": "w", "unknown": "radius"}


@dataclass
class MetaLearnTask:
    d: int = 2  # input dimension of every family (the paper: 2)
    n_support: int = 30  # K: most support examples before the query (the paper: up to 50)
    n_protos: int = 4  # pairwise family: prototype directions per class (the paper's meta-learner runs: 4)
    pairwise_rule: str = "sum"  # pairwise family: class score = sum (the paper's code) or max of the cosines
    point_std: float = 1.0  # prototype / amortization families: std σ of the points around μ_z / W (the paper: 1)
    shift_scale: float = 2.0  # shifted test sets: the inputs' spread is multiplied by this
    shift_on: str = "both"  # shifted test sets: which inputs are scaled, both | query | support

    def validate(self):
        if self.d < 1:
            raise ValueError(f"d must be >= 1 (got {self.d}); the paper uses d=2")
        if self.n_support < 1:
            raise ValueError(f"n_support must be >= 1 (got {self.n_support}); the paper uses up to 50")
        if self.n_protos < 1:
            raise ValueError(f"n_protos must be >= 1 (got {self.n_protos})")
        if self.pairwise_rule not in PAIRWISE_RULES:
            raise ValueError(f"pairwise_rule must be one of {', '.join(PAIRWISE_RULES)} (got {self.pairwise_rule!r})")
        if not (np.isfinite(self.point_std) and self.point_std > 0):
            raise ValueError(f"point_std must be finite and > 0 (got {self.point_std}); the paper uses 1")
        if not (np.isfinite(self.shift_scale) and self.shift_scale > 0):
            raise ValueError(f"shift_scale must be finite and > 0 (got {self.shift_scale}); 1 means no shift")
        if self.shift_on not in SHIFT_ON:
            raise ValueError(f"shift_on must be one of {', '.join(SHIFT_ON)} (got {self.shift_on!r})")
        return self

    def sample(self, rng: np.random.Generator, n: int, family: str, shift: bool = False) -> dict:
        """Draw ``n`` tasks of ``family`` (one of ``FAMILIES``, ``"unknown"`` or ``"mixture"``).

        Returns float64 / int64 arrays (K = ``n_support``): ``xs (n, K, d)``, ``ys (n, K)`` in {0, 1},
        ``xq (n, d)``, ``yq (n,)``, ``family (n,)`` (index into ``FAMILIES + TEST_ONLY``), and the
        task parameters of the family: ``protos (n, 2, n_protos, d)`` (pairwise), ``centres
        (n, 2, d)`` (prototype), ``w (n, d)`` (amortization), ``radius (n,)`` (unknown); a
        mixture carries every family's key, with zeros in the rows of the other families.
        ``shift=True`` scales the inputs' spread (see the module docstring). Raises ValueError
        for an unknown family, ``n < 0``, or a shift of the ``unknown`` or ``mixture`` family.
        """
        self.validate()
        if n < 0:
            raise ValueError(f"n must be >= 0 (got {n})")
        if family == "mixture":
            if shift:
                raise ValueError("shift applies to one family at a time; sample each family with shift=True")
            return self._mixture(rng, n)
        if family not in FAMILIES + TEST_ONLY:
            raise ValueError(f"family must be one of {', '.join(FAMILIES + TEST_ONLY + ('mixture',))} (got {family!r})")
        if shift and family in TEST_ONLY:
            raise ValueError(f"the {family!r} family has no shifted version; shift one of {', '.join(FAMILIES)}")
        k, d = self.n_support, self.d
        s_support = self.shift_scale if shift and self.shift_on in ("both", "support") else 1.0
        s_query = self.shift_scale if shift and self.shift_on in ("both", "query") else 1.0
        out = {"family": np.full(n, (FAMILIES + TEST_ONLY).index(family))}
        base, scale = 0.0, 1.0  # the points are base + scale · (per-input shift) · N(0, I)
        if family == "pairwise":
            out["protos"] = rng.standard_normal((n, 2, self.n_protos, d))
        elif family == "prototype":
            out["centres"] = rng.standard_normal((n, 2, d))
            pick = rng.integers(2, size=(n, k + 1))
            base, scale = np.take_along_axis(out["centres"], pick[..., None], axis=1), self.point_std
        elif family == "amortization":
            out["w"] = rng.standard_normal((n, d))
            base, scale = out["w"][:, None, :], self.point_std
        else:
            out["radius"] = np.median(np.linalg.norm(rng.standard_normal((n, 3, d)), axis=-1), axis=1)
        spread = np.concatenate([np.full(k, s_support), [s_query]])[None, :, None] * scale
        x = base + spread * rng.standard_normal((n, k + 1, d))
        y = labels(family, x, out, self.pairwise_rule)
        out.update(xs=x[:, :k], ys=y[:, :k], xq=x[:, k], yq=y[:, k])
        return out

    def _mixture(self, rng: np.random.Generator, n: int) -> dict:
        which = rng.integers(len(FAMILIES), size=n)
        parts = {f: self.sample(rng, int((which == i).sum()), f) for i, f in enumerate(FAMILIES)}
        out = {}
        for i, f in enumerate(FAMILIES):
            for key, value in parts[f].items():
                if key not in out:
                    out[key] = np.zeros((n,) + value.shape[1:], dtype=value.dtype)
                out[key][which == i] = value
        return out


def labels(family: str, x: np.ndarray, params: dict, rule: str = "sum") -> np.ndarray:
    """Labels ``(n, m)`` of points ``x (n, m, d)`` under the ``family``'s rule and the task
    parameters in ``params`` (``sample``'s keys). Raises ValueError for an unknown family."""
    if family not in PARAM_KEYS:
        raise ValueError(f"family must be one of {', '.join(PARAM_KEYS)} (got {family!r})")
    p = params[PARAM_KEYS[family]]
    if family == "pairwise":
        return label_pairwise(x, p, rule)
    return {"prototype": label_prototype, "amortization": label_amortization, "unknown": label_unknown}[family](x, p)


def label_pairwise(x: np.ndarray, protos: np.ndarray, rule: str = "sum") -> np.ndarray:
    """Labels ``(n, m)`` of points ``x (n, m, d)`` under prototype directions ``protos (n, 2, P, d)``:
    the class with the larger sum (``rule="sum"``) or max (``"max"``) of cosine similarities."""
    unit = protos / np.linalg.norm(protos, axis=-1, keepdims=True)
    xn = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-300)
    cos = np.einsum("nmd,ncpd->nmcp", xn, unit)
    score = cos.sum(-1) if rule == "sum" else cos.max(-1)
    return (score[..., 1] > score[..., 0]).astype(np.int64)


def pairwise_normal(protos: np.ndarray) -> np.ndarray:
    """``v (n, d) = Σ_j ŵ_1j − Σ_j ŵ_0j``: under the "sum" rule the label of x is ``[x·v > 0]``."""
    unit = protos / np.linalg.norm(protos, axis=-1, keepdims=True)
    return unit[:, 1].sum(1) - unit[:, 0].sum(1)


def label_prototype(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Labels ``(n, m)``: the index of the nearest of ``centres (n, 2, d)`` to each ``x (n, m, d)``."""
    dist2 = ((x[:, :, None, :] - centres[:, None]) ** 2).sum(-1)
    return (dist2[..., 1] < dist2[..., 0]).astype(np.int64)


def label_amortization(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Labels ``(n, m)``: ``[Σ_j (x_j − W_j) > 0]`` for ``x (n, m, d)``, ``w (n, d)``."""
    return ((x - w[:, None, :]).sum(-1) > 0).astype(np.int64)


def label_unknown(x: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Labels ``(n, m)``: ``[‖x‖ > r]`` for ``x (n, m, d)``, ``radius (n,)``."""
    return (np.linalg.norm(x, axis=-1) > radius[:, None]).astype(np.int64)


def tokens(xs: np.ndarray, ys: np.ndarray, xq: np.ndarray) -> np.ndarray:
    """The sequence-model input ``(n, k + 1, d + 2)``: support tokens ``[x_i, onehot(y_i)]`` then
    the query ``[x_q, 0, 0]``. ``xs (n, k, d)``, ``ys (n, k)`` in {0, 1}, ``xq (n, d)``; k may be 0.
    Raises ValueError on mismatched shapes or labels outside {0, 1}."""
    xs, ys, xq = np.asarray(xs, dtype=float), np.asarray(ys), np.asarray(xq, dtype=float)
    if xs.ndim != 3 or ys.shape != xs.shape[:2] or xq.shape != (xs.shape[0], xs.shape[2]):
        raise ValueError(f"need xs (n, k, d), ys (n, k), xq (n, d); got {xs.shape}, {ys.shape}, {xq.shape}")
    if ys.size and not np.isin(ys, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    n, k, d = xs.shape
    out = np.zeros((n, k + 1, d + 2))
    out[:, :k, :d] = xs
    out[:, :k, d] = ys == 0
    out[:, :k, d + 1] = ys == 1
    out[:, k, :d] = xq
    return out


if __name__ == "__main__":
    task = MetaLearnTask()
    for fam in FAMILIES + TEST_ONLY:
        b = task.sample(np.random.default_rng(0), 2000, fam)
        print(fam, {k: v.shape for k, v in b.items()}, "share of class 1:", b["ys"].mean().round(3))
