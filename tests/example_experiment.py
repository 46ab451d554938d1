"""A complete experiment written outside the package, as a user writes one (docs/experiments.md).

The question: can a tiny transformer recall the first token of a sequence after a marker?
Run it with ``python train.py tests/example_experiment.py:FirstTokenExperiment`` (or, from
the folder that holds it, ``python train.py example_experiment:FirstTokenExperiment``).
"""
from dataclasses import dataclass

import numpy as np

from minitf.config import ModelConfig, TrainConfig
from minitf.evaluate import answer_logprobs, kway_correct, proportion
from minitf.experiments.base import Experiment
from minitf.report import format_table
from toy_tasks import Example


@dataclass
class FirstTokenTask:
    """``<bos> t3 t7 t1 ... ? t3``: after the marker, the answer is the sequence's first symbol."""

    n_symbols: int = 16
    length: int = 8  # symbols before the marker

    def validate(self):
        if self.n_symbols < 2 or self.length < 1:
            raise ValueError("n_symbols must be >= 2 and length >= 1")
        return self

    def symbols(self) -> list[str]:
        return [f"t{i}" for i in range(self.n_symbols)]

    def vocab_tokens(self) -> list[str]:
        return ["<bos>", "?"] + self.symbols()

    def sample(self, rng: np.random.Generator, n: int) -> list[Example]:
        names = self.symbols()
        out = []
        for row in rng.integers(0, self.n_symbols, size=(n, self.length)):
            tokens = ["<bos>"] + [names[i] for i in row] + ["?", names[row[0]]]
            others = [s for s in names if s != names[row[0]]]
            cands = [names[row[0]]] + [str(s) for s in rng.choice(others, 3, replace=False)]
            out.append(Example(tokens=tokens, scored=[len(tokens) - 1], answer_pos=len(tokens) - 1,
                               candidates=cands, answer=names[row[0]], kind="first_token"))
        return out


@dataclass
class FirstTokenSettings:
    eval_prompts: int = 200  # held-out prompts scored at the end

    def validate(self):
        if self.eval_prompts < 1:
            raise ValueError("eval_prompts must be >= 1")
        return self


class FirstTokenExperiment(Experiment):
    name = "first_token"
    description = "recall the first token after a marker"
    task_cls = FirstTokenTask
    config_cls = FirstTokenSettings
    phases = ("train",)

    def default_model(self, task) -> ModelConfig:
        return ModelConfig(n_layers=1, d_model=32, n_heads=2, d_head=16, vocab_size=len(self.vocab(task)),
                           n_ctx=task.length + 2)

    def default_train(self) -> TrainConfig:
        return TrainConfig(steps=150, batch_size=32, lr=3e-3, warmup=10, eval_every=50, checkpoint_every=50)

    def max_seq_len(self, task) -> int:
        return task.length + 3

    def run(self, ctx) -> dict:
        held_out = ctx.task.sample(ctx.eval_rng(), ctx.config.eval_prompts)

        def accuracy(model, step=None):
            lp = answer_logprobs(model, held_out, ctx.vocab)
            return proportion(kway_correct(lp, held_out, ctx.vocab), chance=0.25)

        model = ctx.new_model()
        ctx.train(model, ctx.task.sample, phase="train", evaluate=lambda m, step: {"acc": accuracy(m)["acc"]})
        # the evaluations during training, from the run's own history (a resumed run's included)
        curve = [{"step": r["step"], "acc": r["eval"]["acc"]} for r in ctx.history("train") if "eval" in r]
        return {"results": {"first_token": accuracy(model.eval())}, "learning_curve": curve}

    def summary(self, report: dict) -> str:
        r = report["results"]["first_token"]
        return format_table(["eval", "acc", "chance", "n"], [["first_token", r["acc"], r["chance"], r["n"]]])
