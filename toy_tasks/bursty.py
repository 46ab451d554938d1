"""Bursty few-shot classification (Chan et al. 2022; Reddy 2023), in tokens.

A sequence is ``<bos> item label item label ... item label`` (``n_pairs`` pairs, then a
query pair); every label is scored. Classes follow a Zipf(α) frequency; in a *bursty*
sequence (probability ``p_bursty``) the query's class appears ``burstiness`` times in the
context (plus a second class as often), so its label can be copied from context — the
pressure that produces in-context learning. Otherwise context classes are drawn i.i.d.,
and the label can only come from weights (in-weights learning).

Token-world design choice (docs/bursty.md): each class has ``exemplars`` item tokens (a
class is a small set of tokens, like Chan's noisy exemplars of one image class). Chan's
holdout images pass through a trained encoder; a token that never occurs in training keeps
its random initial embedding, and we measured that the model then cannot match it in
context at all (ICL at chance even with induction heads present). So holdout classes form a
*pool of tokens re-bound to fresh labels per sequence*: a ``fresh_fraction`` of training
sequences use pool items with labels drawn at random for that sequence only. Pool items
never have a fixed label, so the ICL evaluation (holdout classes, arbitrary labels) can only
be solved from the context.

Dynamic labels (Chan et al. 2022), ``relabel_fraction``: that share of the trained-class
sequences shows their classes with labels drawn at random for the sequence (consistent within
it), so context and weights disagree in training too and the model must learn when to follow
which. Without it (0, the default) a trained class never appears with another label, so the
best policy ignores the context for trained classes and a flipped-label follow rate of 0 is
forced by construction.
"""
from dataclasses import dataclass

import numpy as np

from toy_tasks.example import Example

BOS = "<bos>"
# The order fixes each evaluation's random stream (its index salts the generator): append only.
# "sul_item_tokens_holdout" was called "sul" until 2026-12; "sul" now uses label tokens (appended).
EVAL_MODES = ("icl", "iwl", "flipped", "unseen_labels",  # unseen_labels: called "unrelated" until 2026-11
              "random_labels_trained", "random_labels_holdout", "sul_item_tokens_holdout", "true_labels_trained",
              "sul")


@dataclass
class BurstyTask:
    """Bursty few-shot classification settings (Chan et al. 2022); every field is a ``--set`` key
    (docs/config.md)."""

    n_classes: int = 256  # K trained classes
    n_holdout: int = 64  # classes never seen in training (ICL evaluation)
    exemplars: int = 1  # item tokens per class
    n_labels: int = 32  # class c's label is c mod n_labels
    zipf_alpha: float = 1.0  # Zipf exponent of class frequencies (0 = uniform)
    burstiness: int = 3  # B: copies of the query class in a bursty context
    p_bursty: float = 0.9  # share of training sequences that are bursty
    fresh_fraction: float = 0.2  # sequences of holdout-pool items with labels re-bound at random
    n_pairs: int = 8  # (item, label) pairs before the query
    relabel_fraction: float = 0.0  # trained-class sequences whose labels are re-drawn per sequence (dynamic labels)

    def validate(self):
        """Returns ``self``; raises ``ValueError`` unless n_classes, n_holdout, n_labels ≥ 2,
        exemplars ≥ 1, p_bursty, fresh_fraction and relabel_fraction in [0, 1], 1 ≤ 2·burstiness ≤ n_pairs and
        zipf_alpha ≥ 0."""
        if self.n_classes < 2 or self.n_holdout < 2 or self.exemplars < 1 or self.n_labels < 2:
            raise ValueError("need n_classes >= 2, n_holdout >= 2, exemplars >= 1, n_labels >= 2")
        if not (0 <= self.p_bursty <= 1 and 0 <= self.fresh_fraction <= 1 and 0 <= self.relabel_fraction <= 1):
            raise ValueError(f"p_bursty, fresh_fraction and relabel_fraction must be in [0, 1] (got {self.p_bursty}, "
                             f"{self.fresh_fraction}, {self.relabel_fraction})")
        if not 1 <= 2 * self.burstiness <= self.n_pairs:
            raise ValueError(f"need 1 <= 2*burstiness <= n_pairs (got {self.burstiness}, {self.n_pairs})")
        if self.zipf_alpha < 0:
            raise ValueError(f"zipf_alpha must be >= 0 (got {self.zipf_alpha})")
        return self

    # -- vocabulary ---------------------------------------------------------------------
    def item(self, cls: int, exemplar: int) -> str:
        """The item token ``c<cls>.<exemplar>``; classes ≥ n_classes are the holdout pool."""
        return f"c{cls}.{exemplar}"

    def labels(self) -> list[str]:
        """The label tokens ``L0 .. L{n_labels-1}``."""
        return [f"L{i}" for i in range(self.n_labels)]

    def unseen_labels(self) -> list[str]:
        """Label tokens never used in training: their embeddings stay at their random init."""
        return [f"U{i}" for i in range(8)]

    def vocab_tokens(self) -> list[str]:
        """``<bos>``, the labels, the 8 unseen labels, then every item of the n_classes +
        n_holdout classes."""
        items = [self.item(c, e) for c in range(self.n_classes + self.n_holdout) for e in range(self.exemplars)]
        return [BOS] + self.labels() + self.unseen_labels() + items

    @property
    def seq_len(self) -> int:
        """Tokens per sequence: 1 + 2·(n_pairs + 1) (``<bos>``, the pairs, the query pair)."""
        return 1 + 2 * (self.n_pairs + 1)

    def class_probs(self) -> np.ndarray:
        """(n_classes,) float64 summing to 1: Zipf, p(c) ∝ (c + 1)^−zipf_alpha."""
        p = 1.0 / np.arange(1, self.n_classes + 1) ** self.zipf_alpha
        return p / p.sum()

    # -- sequences -----------------------------------------------------------------------
    def _sequence(self, rng, classes: list[int], query: int, label_of) -> Example:
        tokens, scored = [BOS], []
        for c in classes + [query]:
            tokens.append(self.item(c, int(rng.integers(self.exemplars))))
            tokens.append(label_of(c))
            scored.append(len(tokens) - 1)
        return Example(tokens=tokens, scored=scored, answer_pos=len(tokens) - 1, answer=tokens[-1])

    def sample(self, rng: np.random.Generator, n: int) -> list[Example]:
        """``n`` training sequences, every label scored: a ``fresh_fraction`` draw uniformly from
        the holdout pool with labels re-bound at random for the sequence, the rest Zipf over the
        trained classes with label c mod n_labels — or, for a ``relabel_fraction`` share of them,
        labels drawn at random per sequence; a ``p_bursty`` share is bursty (the query's class and
        one other each ``burstiness`` times in context). With relabel_fraction 0 no extra random
        number is drawn (the streams of earlier runs are unchanged)."""
        probs, labels = self.class_probs(), self.labels()
        out = []
        for _ in range(n):
            fresh = rng.random() < self.fresh_fraction
            if fresh:  # holdout pool, uniform, labels re-bound below
                draw = lambda size=None: self.n_classes + rng.integers(self.n_holdout, size=size)  # noqa: E731
            else:
                draw = lambda size=None: rng.choice(self.n_classes, size, p=probs)  # noqa: E731
            query = int(draw())
            if rng.random() < self.p_bursty:
                other = int(draw())
                rest = list(draw(self.n_pairs - 2 * self.burstiness))
                classes = [query] * self.burstiness + [other] * self.burstiness + [int(c) for c in rest]
                classes = [classes[i] for i in rng.permutation(len(classes))]
            else:
                classes = [int(c) for c in draw(self.n_pairs)]
            relabel = not fresh and self.relabel_fraction > 0 and rng.random() < self.relabel_fraction
            if fresh or relabel:
                names = {c: labels[int(rng.integers(self.n_labels))] for c in set(classes + [query])}
                out.append(self._sequence(rng, classes, query, names.__getitem__))
            else:
                out.append(self._sequence(rng, classes, query, lambda c: labels[c % self.n_labels]))
        return out

    def evaluation(self, mode: str, rng: np.random.Generator, n: int) -> list[Example]:
        """``n`` evaluation sequences of ``mode`` (one of ``EVAL_MODES``); each scores its query's
        label, ranked among ``candidates`` (chance = 1/len). Raises ValueError for another mode.

        * ``iwl``: the query's class is absent from the context; rank all labels (weights only).
        * 2-way few-shot, two classes ``n_pairs/2`` times each in context:
          ``icl`` holdout classes with arbitrary labels; ``flipped`` trained classes with their two
          labels swapped, scored against the context's label, so acc is the rate of following the
          context over the weights (Wei et al. 2023); ``unseen_labels`` holdout classes with label
          tokens never seen in training; ``sul`` trained classes shown with consistent *label*
          tokens that are not their gold labels (Wei et al. 2023's semantically-unrelated labels:
          the weights' answer is not a candidate, so the model must map the class to a label
          token from the context alone); ``sul_item_tokens_holdout`` (``sul`` before 2026-12)
          holdout classes labelled with item tokens of trained classes — tokens never trained
          as outputs, so it sits at chance by construction; ``random_labels_trained`` /
          ``random_labels_holdout`` the two classes' gold labels (trained: their own; holdout:
          arbitrary) but each demonstration shows one of the two labels at random, scored
          against the gold label (Min et al. 2022); ``true_labels_trained`` trained classes with
          their own labels in context, the reference for ``random_labels_trained``."""
        if mode not in EVAL_MODES:
            raise ValueError(f"unknown evaluation mode {mode!r}; one of {EVAL_MODES}")
        labels = self.labels()
        out = []
        for _ in range(n):
            if mode == "iwl":  # the query's class is absent from the context: weights only
                query = int(rng.choice(self.n_classes, p=self.class_probs()))
                pool = [c for c in rng.choice(self.n_classes, 3 * self.n_pairs) if c != query]
                ex = self._sequence(rng, [int(c) for c in pool[: self.n_pairs]], query,
                                    lambda c: labels[c % self.n_labels])
                ex.candidates = [ex.answer] + [lab for lab in labels if lab != ex.answer]
            else:
                ex = self._two_way(mode, rng)
            ex.scored, ex.kind = [ex.answer_pos], mode
            out.append(ex)
        return out

    def _two_way(self, mode: str, rng: np.random.Generator) -> Example:
        labels = self.labels()
        if mode in ("flipped", "random_labels_trained", "true_labels_trained", "sul"):  # trained classes
            a, b = (int(c) for c in rng.choice(self.n_classes, 2, replace=False))
            while a % self.n_labels == b % self.n_labels:
                b = int(rng.integers(self.n_classes))
            gold = {a: labels[a % self.n_labels], b: labels[b % self.n_labels]}
            shown = {a: gold[b], b: gold[a]} if mode == "flipped" else gold
            if mode == "sul":  # two label tokens that are neither class's gold label
                others = [lab for lab in labels if lab not in gold.values()]
                la, lb = rng.choice(len(others), 2, replace=False)
                shown = {a: others[la], b: others[lb]}
        else:  # holdout classes never seen in training with a fixed label
            a, b = (self.n_classes + int(c) for c in rng.choice(self.n_holdout, 2, replace=False))
            pool = {"unseen_labels": self.unseen_labels(),
                    "sul_item_tokens_holdout": [self.item(c, 0) for c in range(self.n_classes)]}.get(mode, labels)
            la, lb = rng.choice(len(pool), 2, replace=False)
            gold = shown = {a: pool[la], b: pool[lb]}
        classes = [a, b] * (self.n_pairs // 2)
        classes = [classes[i] for i in rng.permutation(len(classes))]
        query = a if rng.random() < 0.5 else b
        other = b if query == a else a
        if mode.startswith("random_labels"):  # each demonstration's label drawn from the two
            pair = [gold[a], gold[b]]
            context = iter(pair[int(i)] for i in rng.integers(2, size=len(classes)))
            ex = self._sequence(rng, classes, query, lambda c: next(context, gold[query]))
            ex.tokens[-1] = ex.answer = gold[query]
            ex.candidates = [gold[query], gold[other]]
        else:
            ex = self._sequence(rng, classes, query, shown.__getitem__)
            ex.candidates = [shown[query], shown[other]]
        return ex


if __name__ == "__main__":
    task = BurstyTask()
    rng = np.random.default_rng(0)
    for ex in task.sample(rng, 3):
        print(ex)
    for mode in EVAL_MODES:
        print(task.evaluation(mode, rng, 1)[0])
