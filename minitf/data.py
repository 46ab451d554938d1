"""Symbolic vocabulary and batching of toy_tasks examples into tensors."""
import json
import numbers
from dataclasses import dataclass

import torch

from minitf.errors import CheckpointError, CheckpointNotFoundError, InputError
from minitf.fileio import atomic_write_json
from toy_tasks import Example

PAD = "<pad>"


class Vocab:
    """Token string ↔ id. ``<pad>`` is always id 0; the task's tokens follow in its order."""

    def __init__(self, tokens: list[str]):
        tokens = [PAD] + [t for t in tokens if t != PAD]
        if len(set(tokens)) != len(tokens):
            dupes = sorted({t for t in tokens if tokens.count(t) > 1})
            raise InputError(f"vocab has duplicate tokens {dupes[:5]}")
        self.tokens = tokens
        self.index = {t: i for i, t in enumerate(tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self.index

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocab) and self.tokens == other.tokens

    @property
    def pad_id(self) -> int:
        """The id of ``<pad>``: always 0."""
        return 0

    def encode(self, tokens: str | list[str]) -> list[int]:
        """Token strings → ids. ``tokens``: a list of token strings, or one string of tokens
        separated by whitespace ("<bos> bako bigger bami ."). Raises ``InputError`` naming an
        unknown token."""
        if isinstance(tokens, str):
            tokens = tokens.split()
        try:
            return [self.index[t] for t in tokens]
        except KeyError as e:
            raise InputError(f"token {e.args[0]!r} is not in the vocab ({len(self)} tokens); "
                             "build the vocab from the task that produced the example") from None
        except TypeError:
            raise InputError(f"encode takes a string or a list of token strings (got {type(tokens).__name__} "
                             "holding non-strings)") from None

    def decode(self, ids) -> list[str]:
        """Ids → token strings. ``ids``: a list of ints or a 1-D tensor (a list of strings), or a
        2-D tensor / list of lists (one list per row). Raises ``InputError`` for an id outside
        0..len(vocab)-1 or a tensor of more than 2 dimensions."""
        if isinstance(ids, torch.Tensor):
            if ids.dim() > 2 or ids.is_floating_point():
                raise InputError(f"decode takes a 1-D or 2-D integer tensor of ids (got shape "
                                 f"{tuple(ids.shape)}, dtype {ids.dtype})")
            ids = ids.tolist()
        if isinstance(ids, numbers.Integral):
            ids = [ids]
        ids = list(ids)
        if ids and isinstance(ids[0], (list, tuple)):
            return [self.decode(row) for row in ids]
        bad = [i for i in ids if isinstance(i, bool) or not isinstance(i, numbers.Integral)
               or not 0 <= i < len(self.tokens)]
        if bad:
            raise InputError(f"id {bad[0]!r} is not a token id of this vocab (valid ids are 0..{len(self) - 1})")
        return [self.tokens[int(i)] for i in ids]

    def save(self, path) -> None:
        """Write the tokens, in id order, as JSON ``{"tokens": [...]}`` to ``path``, atomically."""
        atomic_write_json(path, {"tokens": self.tokens})

    @classmethod
    def load(cls, path) -> "Vocab":
        """The vocab saved by ``save``. Raises ``CheckpointNotFoundError`` if ``path`` does not
        exist, ``CheckpointError`` if it is corrupt; ``InputError`` if it holds duplicate tokens."""
        try:
            with open(path) as f:
                data = json.load(f)
            return cls(data["tokens"])
        except FileNotFoundError:
            raise CheckpointNotFoundError(f"vocab file {path} does not exist") from None
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"vocab file {path} is corrupt ({e}); re-run the experiment "
                                  "to regenerate it") from None


@dataclass
class Batch:
    """Next-token training batch: predict ``targets[:, t]`` from ``inputs[:, :t+1]``.

    A vector model's batch (in-context regression) carries float ``inputs (batch, seq, d_input)``
    and float ``targets (batch, seq)`` scored by squared error (``minitf.trainer.masked_loss``).
    """

    inputs: torch.Tensor  # (batch, seq-1) int64, or (batch, seq, d_input) float for a vector model
    targets: torch.Tensor  # (batch, seq-1) int64, or (batch, seq) float
    mask: torch.Tensor  # (batch, seq-1) float32, 1 where the target is scored

    def to(self, device) -> "Batch":
        """A new Batch with inputs, targets and mask moved to ``device`` (dtypes unchanged)."""
        return Batch(self.inputs.to(device), self.targets.to(device), self.mask.to(device))

    def shard(self, rank: int, world: int) -> "Batch":
        """Rows ``rank::world`` of this (global) batch: one data-parallel process's share.

        The shards of ranks 0..world-1 partition the rows, so ``world`` processes together see
        exactly the batch one process would (``minitf.trainer.Trainer`` under torchrun). Raises
        ``ValueError`` if the batch has fewer rows than ``world`` (a process would get none).
        """
        if not 0 <= rank < world or self.inputs.shape[0] < world:
            raise ValueError(f"cannot split a batch of {self.inputs.shape[0]} rows into {world} shards "
                             f"(rank {rank}); set batch_size >= the number of processes")
        return Batch(self.inputs[rank::world], self.targets[rank::world], self.mask[rank::world])


def collate(examples: list[Example], vocab: Vocab, length: int | None = None) -> Batch:
    """Encode and right-pad examples; only each example's ``scored`` positions count in the loss."""
    longest = max(len(ex.tokens) for ex in examples)
    length = length or longest
    if longest > length:
        raise InputError(f"an example has {longest} tokens, more than the batch length {length}")
    ids = torch.full((len(examples), length), vocab.pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), length), dtype=torch.float32)
    for row, ex in enumerate(examples):
        ids[row, : len(ex.tokens)] = torch.tensor(vocab.encode(ex.tokens), dtype=torch.long)
        mask[row, ex.scored] = 1.0
    return Batch(inputs=ids[:, :-1], targets=ids[:, 1:], mask=mask[:, 1:])
