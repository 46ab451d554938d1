"""Repeated random-token sequences: ``<bos> r1 .. rL r1 .. rL r1 ..``.

The first repeat is unpredictable (loss ≈ ln n_symbols); the second is predictable only
by looking back — copy the token that followed the earlier occurrence of the current
token. That is exactly what an induction head does (Olsson et al. 2022), so the gap
between the two halves' losses measures in-context learning.

Training sequences draw the segment length L per sequence and repeat the segment to fill
the context: with one fixed period a single layer solves the task positionally ("attend
L−1 positions back", measured: layer-0 heads with prefix-matching 0.99 and no
previous-token head), which is not an induction head. Evaluation uses two full repeats.
"""
from dataclasses import dataclass

import numpy as np

from toy_tasks.example import Example

BOS = "<bos>"


@dataclass
class InductionTask:
    """The induction task's settings; every field is a ``--set`` key (docs/config.md)."""

    n_symbols: int = 62  # random symbols t0..t{n-1}
    segment_len: int = 63  # longest repeated segment; evaluation repeats one of this length twice
    min_segment_len: int = 8  # training draws L in [min_segment_len, segment_len]

    def validate(self):
        """Returns ``self``; raises ``ValueError`` unless n_symbols ≥ 2 and
        1 ≤ min_segment_len ≤ segment_len."""
        if self.n_symbols < 2:
            raise ValueError(f"n_symbols must be >= 2 (got {self.n_symbols})")
        if not 1 <= self.min_segment_len <= self.segment_len:
            raise ValueError(f"need 1 <= min_segment_len <= segment_len (got {self.min_segment_len}, "
                             f"{self.segment_len})")
        return self

    def symbols(self) -> list[str]:
        """The random symbols ``t0 .. t{n_symbols-1}``."""
        return [f"t{i}" for i in range(self.n_symbols)]

    def vocab_tokens(self) -> list[str]:
        """``<bos>`` then the symbols."""
        return [BOS] + self.symbols()

    @property
    def seq_len(self) -> int:
        """Tokens per sequence: 1 + 2·segment_len (``<bos>`` and two full repeats)."""
        return 1 + 2 * self.segment_len

    def first_repeat(self) -> range:
        """Token positions of the first repeat in the evaluation layout (``full_length=True``)."""
        return range(1, 1 + self.segment_len)

    def second_repeat(self) -> range:
        """Token positions of the second repeat in the evaluation layout (``full_length=True``)."""
        return range(1 + self.segment_len, self.seq_len)

    def sample(self, rng: np.random.Generator, n: int, full_length: bool = False) -> list[Example]:
        """Training sequences (random period); ``full_length`` gives the evaluation layout."""
        names = self.symbols()
        out = []
        for row in rng.integers(0, self.n_symbols, size=(n, self.seq_len - 1)):
            length = self.segment_len if full_length else int(rng.integers(self.min_segment_len,
                                                                           self.segment_len + 1))
            seg = [names[i] for i in row[:length]]
            body = (seg * (2 + (self.seq_len - 1) // length))[: self.seq_len - 1]
            out.append(Example(tokens=[BOS] + body, scored=list(range(1, self.seq_len)), kind="repeated"))
        return out


if __name__ == "__main__":
    for ex in InductionTask(n_symbols=10, segment_len=8).sample(np.random.default_rng(0), 3):
        print(ex)
