"""In-context linear regression (Garg et al. 2022; Raventós et al. 2023; Wu et al. ICLR 2025).

A prompt is ``n_points`` pairs ``(x_i, y_i)`` with ``y_i = w·x_i + noise_std·ε_i`` for one task
vector ``w`` per prompt; the learner predicts each ``y_i`` from the pairs before it, so the last
pair is the query and every earlier pair is also a query for its own prefix (Garg's curves
over the number of in-context examples k). Pure numpy, seeded by the caller's Generator,
plain arrays out: nothing here knows about models or torch.

Task vectors: ``w ~ N(0, I_d)``; ``sparsity = s > 0`` keeps ``s`` coordinates (uniformly
chosen, Garg's sparse regression) and zeroes the rest; ``n_tasks = M > 0`` draws a fixed pool of
``M`` vectors once from ``pool_seed`` and each prompt picks one uniformly (Raventós's finite
pretraining task diversity; ``task_pool()`` returns it for the dMMSE baseline).

Prompt inputs, ``x_distribution`` (Garg et al. 2022 §4's out-of-distribution prompts, as their
released evaluation code defines them; the task vectors are unchanged):
  * ``"gaussian"``: ``x ~ N(0, I_d)``, the training distribution.
  * ``"scaled"``:   ``x = x_scale · z`` with ``z ~ N(0, I_d)``, for every point (Garg: 1/3, 1/2, 2, 3).
  * ``"skewed"``:   ``x ~ N(0, Σ)``, ``Σ = U diag(c) Uᵀ``, ``c_i ∝ i^(−skew_power)`` (Garg: 2, i.e.
    eigenvalues ∝ 1/i²), scaled so ``tr Σ = d`` (the same ``E‖x‖² = d`` as training); ``U`` is a
    Haar-random rotation drawn once from ``pool_seed`` (one fixed covariance, as Garg's).
  * ``"orthant"``:  each prompt draws a random sign pattern ``s ∈ {±1}^d``; its in-context x's are
    ``s ⊙ |z|`` (all in one orthant) while the point being queried is not: with
    ``orthant_query="gaussian"`` (Garg's definition) it is the plain draw ``z``, outside the
    context orthant with probability ``1 − 2^−d``; with ``"opposite"`` it is ``−s ⊙ |z|``,
    always in the opposite orthant. Because every position is a query for its prefix, the
    batch carries both versions of each point: ``xs`` (the point as context) and ``xs_query``
    (the point as the query); ``prompt_for_query(batch, k)`` assembles the sequence that scores
    position k. For the other distributions the two versions are equal.

Token layout for a model that reads a sequence of vectors (``interleave``): the tokens are
``x_1, y_1, x_2, y_2, …, x_n`` (the last y is never an input), ``2n − 1`` vectors of width
``d + 1``: an x token is ``(x, 0)``, a y token ``(0, …, 0, y)``. The prediction of ``y_i`` is read
at ``x_i``'s position ``2(i − 1)`` (``prediction_positions``): causally it sees x_1…x_i and
y_1…y_{i−1}, i.e. k = i − 1 in-context examples and the query x_i.
"""
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

X_DISTRIBUTIONS = ("gaussian", "scaled", "skewed", "orthant")
ORTHANT_QUERIES = ("gaussian", "opposite")


@dataclass
class RegressionTask:
    d: int = 5  # input dimension (the length of x and of w)
    n_points: int = 0  # (x, y) pairs per prompt, the last one the query; 0 = 2d + 1 (11 at d = 5)
    noise_std: float = 0.0  # σ: std of the Gaussian noise added to each y = w·x (units of y)
    sparsity: int = 0  # 0: dense w; s > 0: w has exactly s non-zero coordinates
    n_tasks: int = 0  # 0: a fresh w per prompt; M > 0: prompts draw from a fixed pool of M w's
    pool_seed: int = 0  # seeds the fixed draws: the task pool and the skewed covariance's rotation
    x_distribution: str = "gaussian"  # prompt inputs: gaussian | scaled | skewed | orthant (see above)
    x_scale: float = 1.0  # "scaled": the factor multiplying every x (dimensionless)
    skew_power: float = 2.0  # "skewed": covariance eigenvalue i ∝ i^(-skew_power)
    orthant_query: str = "gaussian"  # "orthant": query x ~ N(0, I) (Garg) or in the opposite orthant

    def validate(self):
        if self.d < 1:
            raise ValueError(f"d must be >= 1 (got {self.d})")
        if self.n_points < 0:
            raise ValueError(f"n_points must be >= 1, or 0 for 2d+1 (got {self.n_points})")
        if not (np.isfinite(self.noise_std) and self.noise_std >= 0):
            raise ValueError(f"noise_std must be finite and >= 0 (got {self.noise_std}); 0 is noiseless")
        if not 0 <= self.sparsity <= self.d:
            raise ValueError(f"sparsity must be in [0, d={self.d}] (got {self.sparsity}); 0 means a dense w")
        if self.n_tasks < 0:
            raise ValueError(f"n_tasks must be >= 0 (got {self.n_tasks}); 0 draws a fresh w per prompt")
        if self.x_distribution not in X_DISTRIBUTIONS:
            raise ValueError(f"x_distribution must be one of {', '.join(X_DISTRIBUTIONS)} "
                             f"(got {self.x_distribution!r})")
        if self.orthant_query not in ORTHANT_QUERIES:
            raise ValueError(f"orthant_query must be one of {', '.join(ORTHANT_QUERIES)} "
                             f"(got {self.orthant_query!r})")
        if not (np.isfinite(self.x_scale) and self.x_scale > 0):
            raise ValueError(f"x_scale must be finite and > 0 (got {self.x_scale})")
        if not (np.isfinite(self.skew_power) and self.skew_power >= 0):
            raise ValueError(f"skew_power must be finite and >= 0 (got {self.skew_power})")
        # A knob of another distribution would silently do nothing: say which setting it needs.
        for knob, default, needs in (("x_scale", 1.0, "scaled"), ("skew_power", 2.0, "skewed"),
                                     ("orthant_query", "gaussian", "orthant")):
            if getattr(self, knob) != default and self.x_distribution != needs:
                raise ValueError(f"{knob} applies only with x_distribution={needs!r} "
                                 f"(got x_distribution={self.x_distribution!r}); set x_distribution={needs}")
        return self

    @property
    def prompt_len(self) -> int:
        """The resolved number of (x, y) pairs per prompt (``n_points``, or 2d+1 when it is 0)."""
        return self.n_points or 2 * self.d + 1

    @property
    def seq_len(self) -> int:
        """Tokens in the ``interleave`` layout: ``2·prompt_len − 1``."""
        return 2 * self.prompt_len - 1

    def task_pool(self) -> np.ndarray:
        """The fixed pool of task vectors, shape ``(n_tasks, d)``, read-only; same for every call.

        Drawn from ``pool_seed`` alone (never from a prompt Generator), with ``sparsity`` applied.
        Raises ValueError when ``n_tasks == 0`` (no pool: every prompt has a fresh w).
        """
        if self.n_tasks == 0:
            raise ValueError("n_tasks == 0: tasks are fresh per prompt, there is no pool; set n_tasks=M")
        return _pool(self.d, self.n_tasks, self.sparsity, self.pool_seed)

    def skew_covariance(self) -> np.ndarray:
        """Σ of the ``"skewed"`` distribution, shape ``(d, d)``: eigenvalues ∝ i^(−skew_power), tr Σ = d."""
        c, rot = self._skew_parts()
        return (rot * c) @ rot.T

    def _skew_parts(self):
        c = np.arange(1, self.d + 1, dtype=float) ** -self.skew_power
        c *= self.d / c.sum()
        return c, _rotation(self.d, self.pool_seed)

    def sample(self, rng: np.random.Generator, n_prompts: int, active_dims: int | None = None) -> dict:
        """Draw ``n_prompts`` prompts.

        Returns a dict of float64 arrays (P = ``prompt_len``):
          ``xs (n, P, d)``, ``ys (n, P)``: the points as in-context examples;
          ``xs_query (n, P, d)``, ``ys_query (n, P)``: each point as the query of its prefix
          (differs from ``xs``/``ys`` only for ``"orthant"``; the noise is the same);
          ``ws (n, d)``: the task vectors.
        ``active_dims = k`` zeroes coordinates ``k..d−1`` of every x (Garg's and Wu et al.'s
        dimension curriculum; the schedule of k belongs to the experiment), so y depends only on
        ``w[:k]``; ``ws`` is returned whole. The draws from ``rng`` are in a fixed order (w and
        its support, z, noise, then the orthant signs), so with ``n_tasks = 0`` one seed gives the
        same z and ε whatever the noise level, sparsity or x distribution. Raises ValueError for ``n_prompts < 0`` or ``active_dims``
        outside ``[1, d]``.
        """
        self.validate()
        if n_prompts < 0:
            raise ValueError(f"n_prompts must be >= 0 (got {n_prompts})")
        if active_dims is not None and not 1 <= active_dims <= self.d:
            raise ValueError(f"active_dims must be in [1, d={self.d}] or None (got {active_dims})")
        d, p = self.d, self.prompt_len
        if self.n_tasks:
            ws = self.task_pool()[rng.integers(self.n_tasks, size=n_prompts)]
        else:  # the support draw is made even when dense, so the streams stay aligned
            ws = _sparsify(rng.standard_normal((n_prompts, d)), self.sparsity, rng.random((n_prompts, d)))
        z = rng.standard_normal((n_prompts, p, d))
        eps = self.noise_std * rng.standard_normal((n_prompts, p))
        xs, xq = self._inputs(z, rng)
        if active_dims is not None:
            xs[..., active_dims:] = 0.0
            xq[..., active_dims:] = 0.0
        ys = np.einsum("npd,nd->np", xs, ws) + eps
        yq = np.einsum("npd,nd->np", xq, ws) + eps
        return {"xs": xs, "ys": ys, "xs_query": xq, "ys_query": yq, "ws": ws}

    def _inputs(self, z: np.ndarray, rng: np.random.Generator):
        if self.x_distribution == "gaussian":
            return z, z.copy()
        if self.x_distribution == "scaled":
            xs = self.x_scale * z
            return xs, xs.copy()
        if self.x_distribution == "skewed":
            c, rot = self._skew_parts()
            xs = z @ ((rot * np.sqrt(c)) @ rot.T)  # the symmetric square root of Σ
            return xs, xs.copy()
        signs = np.where(rng.random((z.shape[0], 1, z.shape[2])) < 0.5, -1.0, 1.0)
        xs = signs * np.abs(z)
        return xs, (z.copy() if self.orthant_query == "gaussian" else -xs)


def interleave(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """The model input: tokens ``x_1, y_1, …, x_n`` as vectors, shape ``(N, 2n − 1, d + 1)``.

    ``xs (N, n, d)``, ``ys (N, n)``; an x token is ``(x, 0)``, a y token ``(0, …, 0, y)``; the last y
    is left out (it is only a target). Read the prediction of ``y_i`` at ``prediction_positions(n)``.
    Raises ValueError on mismatched shapes.
    """
    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    if xs.ndim != 3 or ys.shape != xs.shape[:2] or xs.shape[1] < 1:
        raise ValueError(f"need xs (N, n, d) and ys (N, n) with n >= 1; got xs {xs.shape}, ys {ys.shape}")
    n_prompts, n, d = xs.shape
    out = np.zeros((n_prompts, 2 * n - 1, d + 1))
    out[:, 0::2, :d] = xs
    out[:, 1::2, d] = ys[:, :-1]
    return out


def prediction_positions(n_points: int) -> np.ndarray:
    """Token positions (in ``interleave``'s layout) where y_1…y_n are predicted: ``0, 2, …, 2(n−1)``."""
    return 2 * np.arange(n_points)


def prompt_for_query(batch: dict, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(xs, ys)`` whose point k (0-based) is the query version and points before it the context.

    For scoring the model at ``prediction_positions(n)[k]`` on ``"orthant"`` prompts (one
    forward pass per k, as Garg's evaluation does); later points do not matter to a causal
    model and are taken from the query version. For other distributions this returns
    ``batch["xs"], batch["ys"]`` values. Raises ValueError for k outside ``[0, n)``.
    """
    n = batch["xs"].shape[1]
    if not 0 <= k < n:
        raise ValueError(f"k must be in [0, {n}) (got {k})")
    xs = np.concatenate([batch["xs"][:, :k], batch["xs_query"][:, k:]], axis=1)
    ys = np.concatenate([batch["ys"][:, :k], batch["ys_query"][:, k:]], axis=1)
    return xs, ys


def _sparsify(ws: np.ndarray, sparsity: int, u: np.ndarray) -> np.ndarray:
    """Keep the ``sparsity`` coordinates of each row with the smallest uniforms ``u`` (a random subset)."""
    if sparsity == 0:
        return ws
    keep = np.argsort(u, axis=1)[:, :sparsity]
    mask = np.zeros(ws.shape, dtype=bool)
    np.put_along_axis(mask, keep, True, axis=1)
    return np.where(mask, ws, 0.0)


@lru_cache(maxsize=8)
def _pool(d: int, n_tasks: int, sparsity: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 0])
    pool = _sparsify(rng.standard_normal((n_tasks, d)), sparsity, rng.random((n_tasks, d)))
    pool.setflags(write=False)
    return pool


@lru_cache(maxsize=8)
def _rotation(d: int, seed: int) -> np.ndarray:
    """A Haar-random orthogonal matrix (QR of a Gaussian matrix with the signs of R's diagonal fixed)."""
    q, r = np.linalg.qr(np.random.default_rng([seed, 1]).standard_normal((d, d)))
    q = q * np.sign(np.diag(r))
    q.setflags(write=False)
    return q


if __name__ == "__main__":
    b = RegressionTask(d=3).sample(np.random.default_rng(0), 2)
    print({k: v.shape for k, v in b.items()})
    print(interleave(b["xs"], b["ys"])[0].round(2))
