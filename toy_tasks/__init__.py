"""Toy task generators: pure Python/numpy, seeded, producing plain-data examples.

Nothing here knows about models or torch: an ``Example`` is a list of token strings plus
which positions are scored, so any experiment can be re-tokenized, inspected and printed.
"""
from toy_tasks.example import Example

__all__ = ["Example"]
