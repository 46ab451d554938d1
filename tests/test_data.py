import numpy as np
import pytest

from minitf.data import Vocab, collate
from minitf.errors import CheckpointError, InputError
from toy_tasks import Example
from toy_tasks.induction import InductionTask


def test_vocab_round_trip(tmp_path):
    vocab = Vocab(["a", "b", "c"])
    assert vocab.encode(["a", "c"]) == [1, 3] and vocab.decode([1, 3]) == ["a", "c"]
    vocab.save(tmp_path / "v.json")
    assert Vocab.load(tmp_path / "v.json") == vocab
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        Vocab.load(tmp_path / "bad.json")
    with pytest.raises(InputError, match="'z' is not in the vocab"):
        vocab.encode(["z"])


def test_collate_masks_only_scored_positions():
    vocab = Vocab(["a", "b", "?"])
    batch = collate([Example(["a", "b", "?", "a"], scored=[3]), Example(["b", "?"], scored=[1])], vocab)
    assert batch.inputs.shape == (2, 3)
    assert batch.mask.tolist() == [[0, 0, 1], [1, 0, 0]]
    assert batch.targets[0, 2] == vocab.index["a"]


def test_induction_task_repeats_and_is_seeded():
    task = InductionTask(n_symbols=5, segment_len=4)
    a = task.sample(np.random.default_rng(3), 2, full_length=True)
    b = task.sample(np.random.default_rng(3), 2, full_length=True)
    assert [e.tokens for e in a] == [e.tokens for e in b]
    toks = a[0].tokens
    assert toks[0] == "<bos>" and toks[1:5] == toks[5:9] and len(toks) == task.seq_len
    # training sequences vary the period (no positional shortcut) but keep the length
    task = InductionTask(n_symbols=50, segment_len=10, min_segment_len=3)
    periods = set()
    for ex in task.sample(np.random.default_rng(4), 30):
        toks = ex.tokens
        assert len(toks) == task.seq_len
        period = next(p for p in range(3, 11) if toks[1:1 + p] == toks[1 + p:1 + 2 * p])
        periods.add(period)
    assert len(periods) > 3
