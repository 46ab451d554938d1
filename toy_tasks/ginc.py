"""GINC: in-context learning as implicit Bayesian inference (Xie et al. 2021), in tokens.

After p-lambda/incontext-learning ``generate_data.py`` (GINC), at a size a 2-core CPU trains
in minutes. A *concept* is a hidden Markov model over states ``(entity e, property p)``,
index ``e · n_properties + p``:

- transition ``T[(e, p) → (e', p')] = E[e, e'] · P_c[p, p']`` (``np.kron(E, P_c)``): the
  entity transitions ``E`` are shared by every concept — a softmax(temperature
  ``transition_temp``)-weighted mix of ``n_entities`` random permutation matrices, pulled
  towards the identity, ``E = entity_stay · I + (1 − entity_stay) · mix``; the property
  transitions ``P_c`` are the concept — a mix of ``n_properties`` random permutations, drawn
  afresh per concept;
- the delimiter (``delimiter``): ``shared`` (the default) makes property 0 a plain sentence
  boundary with the same statistics under every concept — into it with one fixed probability
  ``1/n_properties`` from every other property, out of it uniformly to the other properties,
  each concept's permutation mix renormalised over the rest; ``paper`` keeps the paper's
  construction, where property 0 is one more row and column of every concept's mix, so the
  transitions into and out of ``/`` are concept-specific. At this size (25 states, 20 symbols)
  that makes each example boundary strong, misleading evidence about the concept: the
  pretraining distribution's own Bayes predictor then *falls* with k at example length 3
  (Xie et al.'s distinguishability condition fails), so ``paper`` shows the theorem from the
  other side — no in-context learning where the delimiter carries concept information;
- emission: deterministic, a fixed *memory matrix* ``M (n_entities, n_properties)`` of
  symbols drawn uniformly from 1 … n_symbols − 1, with ``M[:, 0] = 0``: property 0 emits the
  delimiter ``/`` whatever the entity (the paper's structure);
- start distribution: softmax(u − 0.5, ``start_temp``) over states (near uniform at 10).

Concepts 0 … n_concepts − 1 are in-distribution (pretraining is a uniform mixture of them);
n_concepts … 2·n_concepts − 1 are out-of-distribution (never seen in pretraining; the paper's
``n_hmms`` split in halves). The world (M, E, every P_c and start vector) is a pure function of
``world_seed``; documents and prompts are pure functions of the caller's Generator.

A prompt (the paper's ``ID_sample``) holds k + 1 examples of one concept: a start property
p₀ ∈ 1 … n_properties − 1 shared by the prompt, each example a fresh uniform start entity and
a hidden path of ``example_len`` states, then ``/``. The last example stops one token short;
its label is the paper's: the argmax of the concept's next-token distribution given that
example's first example_len − 1 tokens, start uniform over entities at p₀ (exact forward
filtering), not the sampled token.
"""
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from toy_tasks.example import Example

DELIM = "/"
DELIMITERS = ("shared", "paper")


@dataclass
class GincTask:
    """GINC settings (the paper's value in brackets; every field is a ``--set`` key)."""

    n_entities: int = 5  # entities ("values") [10]
    n_properties: int = 5  # properties ("slots"), property 0 = the delimiter [10]
    n_symbols: int = 20  # symbols incl. the delimiter [50]
    n_concepts: int = 5  # in-distribution concepts, and as many OOD ones [5 + 5]
    transition_temp: float = 0.1  # softmax temperature of the permutation mixing weights [0.1]
    start_temp: float = 10.0  # softmax temperature of the start distribution [10]
    entity_stay: float = 0.9  # identity weight in the entity transitions ("vic") [0.9]
    doc_len: int = 133  # tokens per pretraining block [1024]
    doc_blocks: int = 10  # blocks per document: a block is one of them, drawn uniformly [10240/1024 = 10]
    world_seed: int = 1111  # seed of the memory matrix and every transition matrix [1111]
    delimiter: str = "shared"  # "shared": "/" a plain boundary under every concept; "paper": concept-specific

    def validate(self):
        """Returns ``self``; raises ``ValueError`` naming the field unless n_entities ≥ 1,
        n_properties ≥ 3, n_symbols ≥ 3, n_concepts ≥ 1, transition_temp > 0, start_temp > 0,
        0 ≤ entity_stay ≤ 1, doc_len ≥ 2, doc_blocks ≥ 1 and delimiter ∈ ``DELIMITERS``."""
        checks = [("n_entities", self.n_entities >= 1, ">= 1"), ("n_properties", self.n_properties >= 3, ">= 3"),
                  ("n_symbols", self.n_symbols >= 3, ">= 3"), ("n_concepts", self.n_concepts >= 1, ">= 1"),
                  ("transition_temp", self.transition_temp > 0, "> 0"), ("start_temp", self.start_temp > 0, "> 0"),
                  ("entity_stay", 0 <= self.entity_stay <= 1, "in [0, 1]"), ("doc_len", self.doc_len >= 2, ">= 2"),
                  ("doc_blocks", self.doc_blocks >= 1, ">= 1"),
                  ("delimiter", self.delimiter in DELIMITERS, f"one of {DELIMITERS}")]
        for name, ok, need in checks:
            if not ok:
                raise ValueError(f"{name} must be {need} (got {getattr(self, name)})")
        return self

    # -- the world ----------------------------------------------------------------------
    def symbols(self) -> list[str]:
        """Token strings: ``/`` (symbol 0), then ``s1`` … ``s{n_symbols-1}``."""
        return [DELIM] + [f"s{i}" for i in range(1, self.n_symbols)]

    def vocab_tokens(self) -> list[str]:
        """The symbols (no ``<bos>``: the paper's documents and prompts have none)."""
        return self.symbols()

    @property
    def n_states(self) -> int:
        """Hidden states: n_entities · n_properties."""
        return self.n_entities * self.n_properties

    def world(self) -> dict:
        """The fixed world from ``world_seed`` (cached): ``memory`` (n_entities, n_properties) int
        symbols; ``entity_T`` (n_entities, n_entities); ``property_T`` (2·n_concepts,
        n_properties, n_properties); ``start`` (2·n_concepts, n_states); ``emit`` (n_states,)
        the symbol of each state; ``trans`` (2·n_concepts, n_states, n_states) each concept's
        ``np.kron(entity_T, property_T[c])``. Rows of every matrix sum to 1."""
        return _world(self.n_entities, self.n_properties, self.n_symbols, self.n_concepts,
                      self.transition_temp, self.start_temp, self.entity_stay, self.world_seed, self.delimiter)

    def transition(self, concept: int) -> np.ndarray:
        """(n_states, n_states) transition matrix of ``concept``: kron(entity_T, property_T[c])."""
        return self.world()["trans"][concept]

    # -- sampling -----------------------------------------------------------------------
    def _step(self, rng, ent: np.ndarray, prop: np.ndarray, concepts: np.ndarray):
        """One transition of many chains at once (entity and property move independently)."""
        w = self.world()
        ent = _draw(rng, w["entity_T"][ent])
        prop = _draw(rng, w["property_T"][concepts, prop])
        return ent, prop

    def documents(self, rng: np.random.Generator, concepts) -> np.ndarray:
        """(len(concepts), doc_len) int symbols: one pretraining block per entry of ``concepts``.
        Like the paper's blocks of long documents, a block is the first of its document (started
        from the concept's start distribution) with probability 1/doc_blocks, else a later one
        (here: after doc_len burn-in steps, by which the chain has mixed)."""
        w, concepts = self.world(), np.asarray(concepts)
        state = _draw(rng, w["start"][concepts])
        ent, prop = state // self.n_properties, state % self.n_properties
        later = rng.random(len(concepts)) >= 1 / self.doc_blocks
        out = np.empty((len(concepts), 2 * self.doc_len), dtype=np.int64)
        for t in range(out.shape[1] if later.any() else self.doc_len):
            out[:, t] = w["memory"][ent, prop]
            ent, prop = self._step(rng, ent, prop, concepts)
        return np.where(later[:, None], out[:, self.doc_len:], out[:, :self.doc_len])

    def sampler(self, concepts=None):
        """``sample(rng, n) -> [Example]`` of pretraining documents, every position after the
        first scored, each from a concept drawn uniformly from ``concepts`` (default: the
        in-distribution ones; ``[0]`` is the single-concept control)."""
        pool = np.arange(self.n_concepts) if concepts is None else np.asarray(concepts)
        names = self.symbols()

        def sample(rng, n):
            docs = self.documents(rng, pool[rng.integers(len(pool), size=n)])
            return [Example(tokens=[names[s] for s in d], scored=list(range(1, self.doc_len)), kind="document")
                    for d in docs]
        return sample

    def sample(self, rng: np.random.Generator, n: int) -> list[Example]:
        """``n`` pretraining documents from the in-distribution mixture (``sampler()``)."""
        return self.sampler()(rng, n)

    def prompts(self, rng: np.random.Generator, concepts, n: int, k: int, example_len: int) -> list[Example]:
        """``n`` prompts of ``k`` examples plus the test example, each from a concept drawn
        uniformly from ``concepts``: tokens ``k·(example_len + 1) + example_len`` long, the last
        one the label (``answer``, at ``answer_pos``), ``candidates`` every symbol. Raises
        ``ValueError`` unless example_len ≥ 2 and k ≥ 0."""
        if example_len < 2 or k < 0:
            raise ValueError(f"example_len must be >= 2 and k >= 0 (got {example_len}, {k})")
        w, names = self.world(), self.symbols()
        concepts = np.asarray(concepts)[rng.integers(len(concepts), size=n)]
        start_prop = rng.integers(1, self.n_properties, size=n)
        seq = []
        for j in range(k + 1):
            ent, prop = rng.integers(self.n_entities, size=n), start_prop.copy()
            for t in range(example_len - (j == k)):
                seq.append(w["memory"][ent, prop])
                ent, prop = self._step(rng, ent, prop, concepts)
            if j < k:
                seq.append(np.zeros(n, dtype=np.int64))
        seq = np.stack(seq, 1)
        labels = self.bayes_labels(concepts, start_prop, seq[:, seq.shape[1] - example_len + 1:])
        out = []
        for row, label in zip(seq, labels):
            tokens = [names[s] for s in row] + [names[label]]
            out.append(Example(tokens=tokens, scored=[len(tokens) - 1], answer_pos=len(tokens) - 1,
                               candidates=[names[label]] + [s for s in names if s != names[label]],
                               answer=names[label], kind=f"k{k}"))
        return out

    def ideal_predictions(self, examples: list[Example], example_len: int, concepts) -> np.ndarray:
        """(n,) symbols the paper's ideal in-context learner predicts for ``prompts`` output
        (``example_len`` as made): the posterior over ``concepts`` (uniform prior) from the k
        examples and the test example, each an independent sequence of the concept's HMM started
        uniformly over all states, then the posterior-mixed next-token argmax. With the
        in-distribution concepts it is the Bayes-optimal predictor of the pretraining prior."""
        w, index = self.world(), {t: i for i, t in enumerate(self.symbols())}
        trans = np.stack([self.transition(int(c)) for c in concepts])  # (C, S, S)
        onehot = np.eye(self.n_symbols)[w["emit"]]
        out = np.empty(len(examples), dtype=np.int64)
        for i, ex in enumerate(examples):
            ids = np.array([index[t] for t in ex.tokens[: ex.answer_pos]])
            k = (len(ids) + 2) // (example_len + 1) - 1
            shots = ids[: k * (example_len + 1)].reshape(k, example_len + 1)[:, :example_len]
            ll_shots, _ = _filter(trans, w["emit"], shots)
            ll_x, alpha = _filter(trans, w["emit"], ids[None, k * (example_len + 1):])
            logpost = ll_shots.sum(1) + ll_x[:, 0]
            post = np.exp(logpost - logpost.max())
            nxt = np.einsum("c,cs,cst->t", post / post.sum(), alpha[:, 0], trans)
            out[i] = int(np.argmax(nxt @ onehot))
        return out

    def document_predictions(self, examples: list[Example], concepts, eps: float = 1e-3) -> np.ndarray:
        """(n,) symbols the pretraining distribution's Bayes predictor gives: the prompt read as
        *one document* of the mixture over ``concepts`` (each concept's start distribution,
        transitions smoothed as (1 − eps)·T + eps/n_states so the delimiter jumps, impossible
        under some concepts, keep a likelihood). What a perfectly pretrained model would predict
        (Xie et al.'s analysis); prompts must share one length (as ``prompts`` makes them)."""
        w, index, concepts = self.world(), {t: i for i, t in enumerate(self.symbols())}, list(concepts)
        ids = np.array([[index[t] for t in ex.tokens[: ex.answer_pos]] for ex in examples])
        trans = w["trans"][concepts] * (1 - eps) + eps / self.n_states
        ll, alpha = _filter(trans, w["emit"], ids, start=w["start"][concepts])
        post = np.exp(ll - ll.max(0))
        nxt = np.einsum("cn,cns,cst->nt", post / post.sum(0), alpha, trans)
        return (nxt @ np.eye(self.n_symbols)[w["emit"]]).argmax(1)

    def bayes_labels(self, concepts, start_prop, x: np.ndarray) -> np.ndarray:
        """(n,) argmax symbols of each concept's next-token distribution given ``x`` (n, m)
        symbols, the start uniform over entities at property ``start_prop`` (the paper's label)."""
        w = self.world()
        emit = w["emit"]
        onehot = np.eye(self.n_symbols)[emit]  # (n_states, n_symbols)
        out = np.empty(len(x), dtype=np.int64)
        for i, (c, p0, row) in enumerate(zip(concepts, start_prop, x)):
            trans = self.transition(int(c))
            alpha = (np.arange(self.n_states) % self.n_properties == p0).astype(float)
            for t, s in enumerate(row):
                alpha = (alpha if t == 0 else alpha @ trans) * (emit == s)
                alpha /= max(alpha.sum(), 1e-300)
            out[i] = int(np.argmax(alpha @ trans @ onehot))
        return out


def _softmax(x: np.ndarray, temp: float) -> np.ndarray:
    z = np.exp((x - x.max()) / temp)
    return z / z.sum()


def _permutation_mix(rng, n: int, temp: float) -> np.ndarray:
    """(n, n): n random permutation matrices mixed with softmax(u − 0.5, temp) weights (the
    paper's ``generate_transmat_block``)."""
    weights = _softmax(rng.random(n) - 0.5, temp)
    return sum(w * np.eye(n)[rng.permutation(n)] for w in weights)


@lru_cache(maxsize=16)
def _world(n_entities, n_properties, n_symbols, n_concepts, transition_temp, start_temp, entity_stay, seed,
           delimiter="paper") -> dict:
    rng = np.random.default_rng(seed)
    memory = rng.integers(1, n_symbols, size=(n_entities, n_properties))
    memory[:, 0] = 0
    entity_T = entity_stay * np.eye(n_entities) + (1 - entity_stay) * _permutation_mix(rng, n_entities,
                                                                                        transition_temp)
    property_T = np.stack([_permutation_mix(rng, n_properties, transition_temp) for _ in range(2 * n_concepts)])
    start = np.stack([_softmax(rng.random(n_entities * n_properties) - 0.5, start_temp)
                      for _ in range(2 * n_concepts)])
    if delimiter == "shared":  # the same random draws as "paper", then the delimiter made concept-free
        property_T = np.stack([shared_delimiter(p) for p in property_T])
    emit = memory.reshape(-1)  # state e·n_properties + p emits memory[e, p]
    trans = np.stack([np.kron(entity_T, p) for p in property_T])
    for a in (memory, entity_T, property_T, start, trans):
        a.setflags(write=False)
    return {"memory": memory, "entity_T": entity_T, "property_T": property_T, "start": start, "emit": emit,
            "trans": trans}


def shared_delimiter(mix: np.ndarray) -> np.ndarray:
    """(P, P) property transitions with property 0 a concept-free boundary: row 0 uniform over
    properties 1 … P−1; column 0 equal to 1/P in every other row; the rest of each row ``mix``'s
    own transitions among 1 … P−1, renormalised to the remaining 1 − 1/P."""
    n = mix.shape[0]
    out = np.zeros_like(mix)
    out[0, 1:] = 1.0 / (n - 1)
    rest = mix[1:, 1:]
    out[1:, 1:] = (1 - 1.0 / n) * rest / np.maximum(rest.sum(1, keepdims=True), 1e-300)
    out[1:, 0] = 1.0 / n
    return out


def _filter(trans: np.ndarray, emit: np.ndarray, seqs: np.ndarray, start=None):
    """Forward filtering of ``seqs`` (m, t) symbols under each HMM ``trans`` (C, S, S) with
    deterministic emissions ``emit`` (S,), start ``start`` (C, S) (default uniform over states):
    (log-likelihood (C, m), filtered state distribution after the last symbol (C, m, S))."""
    n_c, n_s = trans.shape[0], trans.shape[1]
    start = np.full((n_c, n_s), 1.0 / n_s) if start is None else start
    alpha = np.repeat(start[:, None, :], seqs.shape[0], 1)
    ll = np.zeros((n_c, seqs.shape[0]))
    for t in range(seqs.shape[1]):
        if t:
            alpha = alpha @ trans
        alpha = alpha * (emit[None, None, :] == seqs[None, :, t, None])
        z = alpha.sum(-1)
        ll += np.log(np.maximum(z, 1e-300))
        alpha /= np.maximum(z, 1e-300)[..., None]
    return ll, alpha


def _draw(rng, probs: np.ndarray) -> np.ndarray:
    """One index per row of ``probs`` (…, n), rows summing to 1 (inverse-CDF sampling)."""
    cdf = np.cumsum(probs, axis=-1)
    u = rng.random(probs.shape[:-1])[..., None] * cdf[..., -1:]
    return np.minimum((u >= cdf).sum(-1), probs.shape[-1] - 1)


if __name__ == "__main__":
    task = GincTask().validate()
    rng = np.random.default_rng(0)
    print(" ".join(task.sample(rng, 1)[0].tokens[:60]))
    for ex in task.prompts(rng, range(task.n_concepts), 2, 2, 5):
        print(ex)
