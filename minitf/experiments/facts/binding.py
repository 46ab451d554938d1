"""What the headline and semantic experiments share: binding facts in context, then phase 2.

Both first train episodes of fresh facts stated in context (where in-context ability comes
from), then continue from those weights on a world's facts in several phase-2 variants. They
share the architecture, the phase-1 schedule, the episode probe, the phase-2 settings and
sampler (``phase2_sampler``) and the self-generated augmentation (``self_generated``).
"""
import dataclasses
from dataclasses import dataclass

import torch

from minitf.config import ModelConfig, TrainConfig
from minitf.data import collate
from minitf.evaluate import answer_logprobs
from toy_tasks import Example

# The binding curriculum's phases, in data-stream order: an optional relation-only start
# (the headline's, with both splits), then phase 1. Phase-2 variants follow in each experiment.
BINDING_PHASES = ("phase1_relations", "phase1")


@dataclass
class Phase2Schedule:
    """The experiment config both share: the length of each phase-2 run."""

    phase2_steps: int = 250  # steps of each phase-2 run

    def validate(self):
        """Returns ``self``; raises ``ValueError`` if ``phase2_steps`` < 1."""
        if self.phase2_steps < 1:
            raise ValueError(f"phase2_steps must be >= 1 (got {self.phase2_steps})")
        return self


def binding_model(vocab_size: int, n_ctx: int) -> ModelConfig:
    """The architecture for in-context binding of facts (headline and semantic share it): 2
    attention-only layers, 4 heads, a causal conv of 4 ("smeared keys", Olsson et al. 2022) at
    d_model 128 — measured on the reversal split at 600 steps, in-context reversal top-1 0.605
    vs 0.36 at d_model 64 (docs/headline.md)."""
    return ModelConfig(n_layers=2, d_model=128, n_heads=4, d_head=32, d_mlp=0, conv_kernel=4,
                       vocab_size=vocab_size, n_ctx=n_ctx)


def binding_train() -> TrainConfig:
    """Phase 1's schedule: 1000 steps of 64 sequences, peak lr 3e-3 after 100 warmup steps,
    evaluations every 250 steps, checkpoints every 500, a loss row every 25."""
    return TrainConfig(steps=1000, batch_size=64, lr=3e-3, warmup=100, eval_every=250,
                       checkpoint_every=500, log_every=25)


def phase2_train(cfg: TrainConfig, steps: int) -> TrainConfig:
    """A phase-2 run: ``steps`` steps, a short warmup, no evaluations or checkpoints midway."""
    return dataclasses.replace(cfg, steps=steps, warmup=20, eval_every=0, checkpoint_every=0)


def episode_accuracy(model, examples: list[Example], vocab) -> float:
    """Fraction of scored answers in held-out episodes that are the model's argmax."""
    batch = collate(examples, vocab)
    with torch.no_grad():
        pred = model(batch.inputs).argmax(-1)
    hits = ((pred == batch.targets).float() * batch.mask).sum()
    return float(hits / batch.mask.sum())


def phase2_sampler(new_document, fraction: float, replay):
    """Phase 2's ``sample(rng, n) -> [Example]``: each sequence is a new document
    ``new_document(rng)`` with probability ``fraction``, else ``replay(rng, 1)[0]`` (phase 1's
    sampler, or a mix built on it), so phase 2 keeps what phase 1 taught. Per sequence, one
    ``rng.random()`` then the chosen side's draws: the order every run's data stream depends on.

    ``new_document``: the world's documents of the sentences phase 2 adds, e.g. the headline's
    ``partial(world.document, facts=sentences)``."""
    def sample(rng, n):
        return [new_document(rng) if rng.random() < fraction else replay(rng, 1)[0] for _ in range(n)]
    return sample


def self_generated(model, vocab, asks: list[tuple], well_formed) -> tuple[list, dict]:
    """The phase-1 model writes each augmentation sentence's answer (its fact's object) by greedy
    decoding, with the fact or the premises in its context; a word that is not well formed is
    dropped (the augmented phase 2 trains what is left).

    ``asks``: one ``(prompt, fact, phrasing)`` per sentence: ``prompt`` the tokens from ``<bos>``
    up to the answer, ``fact`` the true sentence (its ``y`` the true answer: only counted),
    ``phrasing`` ``None`` where sentences are bare facts (the headline), else the phrasing index
    the sentence is trained in (semantic: ``(fact, phrasing)`` pairs). ``well_formed(fact, word)``:
    is ``word`` of the answer's kind. Returns the sentences written (``fact`` with the model's
    word as ``y``, in the input's shape) and ``{"total", "well_formed", "correct"}`` counts."""
    # the answer slot holds the true word, as in every query example: answer_logprobs reads only
    # the tokens before it
    examples = [Example(tokens=list(p) + [f.y], scored=[len(p)], answer_pos=len(p)) for p, f, _ in asks]
    lp = answer_logprobs(model, examples, vocab)
    generated, correct = [], 0
    for (_, fact, phrasing), row in zip(asks, lp):
        word = vocab.tokens[int(row.argmax())]
        if well_formed(fact, word):
            written = dataclasses.replace(fact, y=word)
            generated.append(written if phrasing is None else (written, phrasing))
            correct += word == fact.y
    return generated, {"total": len(asks), "well_formed": len(generated), "correct": correct}
