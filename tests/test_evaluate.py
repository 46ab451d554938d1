"""Evaluation helpers on edge inputs: empty batches, zero positions, answers with no context."""
import pytest
import torch

from minitf.data import Batch, Vocab, collate
from minitf.errors import InputError
from minitf.evaluate import answer_logprobs, kway_correct, per_position_loss
from minitf.model import Transformer
from toy_tasks import Example

VOCAB = Vocab(["<bos>", "a", "b", "c", "d"])


@pytest.fixture
def model(tiny_cfg):
    return Transformer(tiny_cfg).eval()


def test_per_position_loss_of_zero_positions_is_empty(model):
    for rows in (1, 3):
        batch = collate([Example(tokens=["<bos>"], scored=[])] * rows, VOCAB)
        assert batch.inputs.shape == (rows, 0)
        assert per_position_loss(model, batch).shape == (0,)


@pytest.mark.parametrize("seq", [0, 1, 5])
def test_per_position_loss_of_no_rows_is_one_input_error(model, seq):
    empty = Batch(torch.zeros(0, seq, dtype=torch.long), torch.zeros(0, seq, dtype=torch.long), torch.zeros(0, seq))
    with pytest.raises(InputError, match="0 rows.*pass at least one example"):
        per_position_loss(model, empty)


def test_answer_logprobs_of_no_examples_is_an_empty_table(model):
    out = answer_logprobs(model, [], VOCAB)
    assert out.shape == (0, model.cfg.vocab_size)  # as wide as for any other number of examples
    assert kway_correct(out, [], VOCAB) == []


@pytest.mark.parametrize("answer_pos,match", [(0, "answer at position 0.*start examples with <bos>"),
                                              (-1, "no answer position")])
def test_an_answer_with_nothing_before_it_is_one_input_error(model, answer_pos, match):
    good = Example(tokens=["<bos>", "a", "b"], scored=[2], answer_pos=2, candidates=["b", "c"], answer="b")
    bad = Example(tokens=["a", "b"], scored=[0], answer_pos=answer_pos, candidates=["a", "c"], answer="a")
    with pytest.raises(InputError, match=f"example 1 .*{match}"):
        answer_logprobs(model, [good, bad], VOCAB)
    assert answer_logprobs(model, [good], VOCAB).shape == (1, model.cfg.vocab_size)
