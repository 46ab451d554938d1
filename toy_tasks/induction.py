"""Repeated random-token sequences: ``<bos> r1 .. rn r1 .. rn``.

The first repeat is unpredictable (loss ≈ ln n_symbols); the second is predictable only
by looking back — copy the token that followed the earlier occurrence of the current
token. That is exactly what an induction head does (Olsson et al. 2022), so the gap
between the two halves' losses measures in-context learning.
"""
from dataclasses import dataclass

import numpy as np

from toy_tasks.example import Example

BOS = "<bos>"


@dataclass
class InductionTask:
    n_symbols: int = 62
    segment_len: int = 63

    def validate(self):
        if self.n_symbols < 2:
            raise ValueError(f"n_symbols must be >= 2 (got {self.n_symbols})")
        if self.segment_len < 1:
            raise ValueError(f"segment_len must be >= 1 (got {self.segment_len})")
        return self

    def symbols(self) -> list[str]:
        return [f"t{i}" for i in range(self.n_symbols)]

    def vocab_tokens(self) -> list[str]:
        return [BOS] + self.symbols()

    @property
    def seq_len(self) -> int:
        return 1 + 2 * self.segment_len

    def first_repeat(self) -> range:
        """Token positions of the first repeat (predicted from the tokens before them)."""
        return range(1, 1 + self.segment_len)

    def second_repeat(self) -> range:
        return range(1 + self.segment_len, self.seq_len)

    def sample(self, rng: np.random.Generator, n: int) -> list[Example]:
        names = self.symbols()
        out = []
        for row in rng.integers(0, self.n_symbols, size=(n, self.segment_len)):
            seg = [names[i] for i in row]
            out.append(Example(tokens=[BOS] + seg + seg, scored=list(range(1, self.seq_len)),
                               kind="repeated"))
        return out


if __name__ == "__main__":
    for ex in InductionTask(n_symbols=10, segment_len=8).sample(np.random.default_rng(0), 3):
        print(ex)
