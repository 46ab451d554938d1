"""REINFORCE for the recall condition (Williams 1992; leave-one-out baseline, Kool et al. 2019):
the sampler, the trainer's ``step_loss``, the replay filter and the log read back for the report.

``recall_rl`` (``minitf.experiments.facts.recall``) trains with these as a trainer phase; the recall
format itself (generation, rewards, recall metrics) lives in ``recall``.
"""
import numpy as np
import torch

from minitf.experiments.facts.recall import (
    ASK,
    BOS,
    MAX_RECALL,
    RL_BATCH,
    RL_SAMPLES,
    RecallWorld,
    _policy_logits,
    answer_hits,
    generate_recall,
    header,
    holds_needed,
    sentences,
)
from toy_tasks.relational_facts import Query


def recall_logprob(model, vocab, queries: list[Query], words: list[list[str]], max_new: int = MAX_RECALL):
    """Sum of log π over each recall's actions (its words, and the marker where it stopped), (n,)."""
    seqs = [[BOS] + header(q) + w + ([ASK] if len(w) < max_new else []) for q, w in zip(queries, words)]
    length = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), length), vocab.pad_id, dtype=torch.long)
    mask = torch.zeros(len(seqs), length - 1)
    for row, (q, s) in enumerate(zip(queries, seqs)):
        ids[row, : len(s)] = torch.tensor(vocab.encode(s))
        mask[row, len(header(q)): len(s) - 1] = 1  # logits at t predict token t + 1
    device = next(model.parameters()).device
    logp = torch.log_softmax(_policy_logits(model, ids[:, :-1].to(device), vocab), -1)
    targets = torch.where(mask.bool(), ids[:, 1:], vocab.index[ASK]).to(device)  # no -inf at the padding
    picked = logp.gather(-1, targets[..., None])[..., 0]
    return (picked * mask.to(device)).sum(1)


def reinforce_sampler(rw: RecallWorld):
    """REINFORCE's ``sample(rng, n)``: ``RL_BATCH`` documents-only queries, each ``RL_SAMPLES``
    times in a row (``raw``: the queries themselves are the batch, for ``reinforce_step``)."""
    def sample(rng, n):
        return [rw.docs_only[i] for i in rng.integers(len(rw.docs_only), size=RL_BATCH) for _ in range(RL_SAMPLES)]
    sample.raw = True
    return sample


def reinforce_step(world, vocab, truths: frozenset, seed: int):
    """REINFORCE's ``step_loss(model, queries, step)`` (Williams 1992): sample a recall per query
    (temperature 1, from a generator seeded by (seed, step), so a resumed run samples the same);
    reward 1 if the answer after it is top-1; advantage = reward − the mean reward of the
    query's other samples (leave-one-out, Kool et al. 2019); loss −mean(adv · Σ log π(actions)).
    Returns (None, stats) when every advantage is 0 — no update — else (loss, stats); stats:
    ``reward`` (sampled), ``recall_tokens``, ``true_fraction`` (recalled sentences that are true)."""
    def step_loss(model, queries, step):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
        model.eval()
        words = generate_recall(model, vocab, queries, temperature=1.0, generator=generator)
        reward = torch.tensor(answer_hits(model, world, vocab, queries, words), dtype=torch.float32)
        model.train()
        r = reward.view(-1, RL_SAMPLES)
        advantage = (r - (r.sum(1, keepdim=True) - r) / (RL_SAMPLES - 1)).flatten()
        said = [s for w in words for s in sentences(w)]
        stats = {"reward": float(reward.mean()), "recall_tokens": float(np.mean([len(w) for w in words])),
                 "true_fraction": float(np.mean([s in truths for s in said])) if said else 0.0}
        if not bool(advantage.any()):
            return None, stats
        device = next(model.parameters()).device
        return -(advantage.to(device) * recall_logprob(model, vocab, queries, words)).mean(), stats
    return step_loss


def replay_pairs(queries: list[Query], recalled: list[list[str]], rewarded: list[bool], inverse: dict) -> list:
    """The (query, recall) pairs phase 2 replays after RL: only recalls that were rewarded (the
    answer after them was top-1) *and* hold every fact their query needs (``holds_needed``)."""
    return [(q, w) for q, w, hit in zip(queries, recalled, rewarded)
            if hit and holds_needed(q, sentences(w), inverse)]


def rl_log(rows: list[dict], start: float) -> list[dict]:
    """REINFORCE's rows of metrics.jsonl as the report's ``recall_rl_log``: one row per step,
    ``{"step", "reward", "recall_tokens", "true_fraction", "no_update"?}`` for each logged step and
    ``heldout_reward`` at each evaluated step (step 0: ``start``, the supervised model's)."""
    by_step = {0: {"step": 0, "heldout_reward": start}}
    for row in rows:
        # a step's training row and its evaluation row (same step) become one row of the log
        out = by_step.setdefault(row["step"], {"step": row["step"]})
        if "eval" in row:
            out["heldout_reward"] = row["eval"]["heldout_reward"]
        elif "reward" in row:
            out.update({k: row[k] for k in ("reward", "recall_tokens", "true_fraction", "no_update") if k in row})
    return [by_step[s] for s in sorted(by_step)]
