"""The third bridge (issue #24): the model recalls what it knows into its context, then answers.

After Lampinen et al. (2025, arXiv 2505.00661; docs/recall.md). The recall format uses no new
token: ``?`` right after ``<bos>`` never occurs in phase-1 data, so it opens recall mode.

    <bos> ? P .  s1 . s2 . …  ?  P  answer

P is the query's prompt (``all A are``, ``B r⁻¹``), s_i the sentences the model writes itself
(from its weights), the second ``?`` the marker it writes to stop; then P is given again and the
answer is scored like every condition (``RelationalQueries``: k-way, top-1 over all entities, direction)
with ``? P . s1 …`` as the context. Two conditions of the headline:

- ``recall_supervised``: ``phase1_recall`` (from phase 1's weights) teaches the format on the
  phase-1 world only: the fixed relation facts' forward/reversal queries and the syllogisms of
  a category forest over the fixed entities (its premises trained as documents in the same
  phase); targets are the true facts the query needs, oriented from the query's entity
  (``recall_target``); beside them ``format_example``s on fresh entities whose facts are in the
  context (the format's copies, learned on every entity). Then phase 2 on the new facts as in
  ``in_weights``, replaying that mix.
- ``recall_rl``: from ``phase1_recall``'s weights, REINFORCE (Williams 1992) with a
  leave-one-out mean-reward baseline over ``RL_SAMPLES`` samples per query (Kool et al. 2019),
  run as a trainer phase (``RunContext.train`` with a ``step_loss``: rows in metrics.jsonl,
  checkpointed, resumable). Its environment is the half of the forest's syllogisms learned
  **only as documents** (``RecallWorld.docs_only``): their premises are trained as sentences,
  but no recall of them and no answer is ever trained, so the reward (1 when the answer after
  the sampled recall is the top-1 entity) depends on what the recall brings into context. A
  step whose advantages are all 0 makes no update (Adam would turn the rare non-zero gradients
  of such batches into full-size steps). Half of the documents-only queries are held out;
  their greedy reward is RL's yardstick. Then phase 2, replaying only the RL model's greedy
  recalls that were rewarded and hold every fact their query needs.
"""
import dataclasses
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch

from minitf.evaluate import answer_logprobs, proportion, top1_correct
from minitf.experiments.facts.queryset import KINDS
from toy_tasks import Example
from toy_tasks.relational_facts import (
    ALL,
    ARE,
    ASK,
    BOS,
    END,
    NO,
    Fact,
    Query,
    ask,
    draw_forest,
    draw_relation_facts,
    relation_queries,
)

RECALL_CONDITIONS = ("recall_supervised", "recall_rl")
# appended after the headline's phases, so the earlier phases keep their data streams
RECALL_PHASES = ("phase1_recall", "phase2_recall_sup", "recall_rl", "phase2_recall_rl")
MAX_RECALL = 16  # tokens the model may write: three sentences and the marker
# phase1_recall's mix: recall examples, format examples (fresh entities), forest documents
RECALL_FRACTION, FORMAT_FRACTION, FOREST_FRACTION = 0.3, 0.15, 0.2
HELDOUT_FRACTION = 0.2  # phase-1 queries held out of both recall trainings
RL_BATCH, RL_SAMPLES, RL_EVAL_EVERY = 16, 4, 25  # queries per step, samples per query, held-out evals


@dataclass
class RecallWorld:
    """The phase-1 world's recall queries: ``premises`` (the category forest over the fixed
    entities, trained as documents in ``phase1_recall``), ``train`` (queries whose recall and
    answer are supervised: the fixed relation facts' queries and half the forest's syllogisms),
    ``docs_only`` / ``heldout`` (the other half's syllogisms, split 1:1 — no recall or answer of
    them is ever trained: REINFORCE's environment and its held-out yardstick) and ``truths``
    (every sentence true in the world, as token tuples without ".")."""

    premises: list[Fact]
    train: list[Query]
    heldout: list[Query]
    truths: frozenset
    docs_only: list[Query] = dataclasses.field(default_factory=list)


def recall_world(world, seed: int) -> RecallWorld:
    """The forest and query split for ``seed`` (its own generator, ``[seed, 78]``: the world's
    draws are untouched). The forest's leaves are split in halves (a leaf's queries stay
    together, so no prompt is in both): the first half's syllogisms are supervised with the
    relation queries (reversal split), the second half's are documents-only, half of them held
    out (REINFORCE's yardstick). True sentences: both directions of every relation fact, premises and conclusions."""
    rng, splits = np.random.default_rng([seed, 78]), world.task.split_list()
    entities = sorted({e for f in world.fixed_facts for e in (f.x, f.y)})
    premises, syllogisms = draw_forest(rng, entities) if "syllogism" in splits else ([], [])
    leaves = sorted({q.prompt[1] for q in syllogisms})
    order = [leaves[i] for i in rng.permutation(len(leaves))]
    docs_leaves = set(order[: len(order) // 2])
    held_leaves = set(order[: max(1, len(order) // 4)]) if docs_leaves else set()  # half the documents-only
    supervised = [q for q in syllogisms if q.prompt[1] not in docs_leaves]
    docs = [q for q in syllogisms if q.prompt[1] in docs_leaves and q.prompt[1] not in held_leaves]
    heldout = [q for q in syllogisms if q.prompt[1] in held_leaves]
    relation = list(world.fixed_queries) if "reversal" in splits else []
    conclusions = [Fact(q.prompt[1], q.prompt[0], q.answer) for q in syllogisms]
    true = (world.fixed_world_sentences() + premises + conclusions + world.new_sentences()
            + world.oracle_augmentation())
    return RecallWorld(premises, supervised + relation, heldout, frozenset(tuple(f.tokens()[:-1]) for f in true),
                       docs)


def recall_target(query: Query, inverse: dict) -> list[str]:
    """The supervised recall: the facts ``query`` needs, as sentences starting from its entity
    ("all A are B . all B are C ." for "all A are ?"; "B r⁻¹ A ." for "B r⁻¹ ?")."""
    facts = [query.facts[0].reversed(inverse)] if query.kind == "reversal" else list(query.facts)
    return [t for f in facts for t in f.tokens()]


def header(query: Query) -> list[str]:
    """What opens recall mode after ``<bos>``: ``? P .``."""
    return [ASK, *query.prompt, END]


class Recalled:
    """A recall as a context for ``World.query_example``: ``tokens()`` = header + the words."""

    def __init__(self, query: Query, words: list[str]):
        self.query, self.words = query, list(words)

    def tokens(self) -> list[str]:
        return header(self.query) + self.words


def recall_example(query: Query, words: list[str], context: list[Fact] = ()) -> Example:
    """A training sequence ``<bos> [context] ? P . words ? P answer``; scored: the words, the
    marker, the answer. ``context``: facts stated first (``format_example``; none for recall)."""
    prefix = [BOS] + [t for f in context for t in f.tokens()] + header(query)
    tokens = prefix + list(words) + ask(query.prompt) + [query.answer]
    start = len(prefix)
    return Example(tokens=tokens, scored=list(range(start, start + len(words) + 1)) + [len(tokens) - 1],
                   answer_pos=len(tokens) - 1, answer=query.answer, kind="recall")


def format_example(world, rng: np.random.Generator) -> Example:
    """The format on fresh entities (drawn like an episode's, never a new fact): a premise chain
    (syllogism split) or two relation facts, plus one distractor fact, stated first; then the
    recall of the facts a query about them needs (``recall_target``) and its answer. Copying
    entities in the format is learned on every entity here; recalling from the weights only on
    the phase-1 world (without them, new entities were copied wrongly: docs/recall.md)."""
    splits = world.task.split_list()
    ents = [str(e) for e in rng.choice(world.entities, 8, replace=False)]
    if "syllogism" in splits and ("reversal" not in splits or rng.random() < 0.5):
        a, b, c, d = ents[:4]
        first = Fact(a, ALL, b)
        second, query = ((Fact(b, NO, d), Query("syllogism", (NO, a, ARE), d, ())) if rng.random() < 0.3
                         else (Fact(b, ALL, c), Query("syllogism", (ALL, a, ARE), c, (), exclude=(b,))))
        facts, query = [first, second], dataclasses.replace(query, facts=(first, second))
    else:
        facts = draw_relation_facts(rng, ents[:4], 2, world.relations, world.inverse)
        options = relation_queries(facts, world.inverse)
        query = options[rng.integers(len(options))]
    facts += draw_relation_facts(rng, ents[4:], 1, world.relations, world.inverse)
    context = [facts[i] for i in rng.permutation(len(facts))]
    return recall_example(query, recall_target(query, world.inverse), context)


def recall_mixture(world, recalls: list[tuple[Query, list[str]]], premises: list[Fact], base):
    """``sample(rng, n)``: with p ``RECALL_FRACTION`` a recall example from ``recalls`` ((query,
    words) pairs), with p ``FORMAT_FRACTION`` a ``format_example``, with p ``FOREST_FRACTION`` a
    document of ``premises``, else ``base(rng, 1)`` (phase 1's mix)."""
    def sample(rng, n):
        out = []
        for _ in range(n):
            u = rng.random()
            if u < RECALL_FRACTION and recalls:
                out.append(recall_example(*recalls[rng.integers(len(recalls))]))
            elif u < RECALL_FRACTION + FORMAT_FRACTION:
                out.append(format_example(world, rng))
            elif u < RECALL_FRACTION + FORMAT_FRACTION + FOREST_FRACTION and premises:
                out.append(world.document(rng, premises))
            else:
                out.append(base(rng, 1)[0])
        return out
    return sample


def _policy_logits(model, ids: torch.Tensor, vocab) -> torch.Tensor:
    """The recall policy's logits: the model's, with ``<pad>`` and ``<bos>`` never written."""
    logits = model(ids).float()
    logits[..., [vocab.pad_id, vocab.index[BOS]]] = float("-inf")
    return logits


@torch.no_grad()
def generate_recall(model, vocab, queries: list[Query], temperature: float = 0.0, generator=None,
                    max_new: int = MAX_RECALL) -> list[list[str]]:
    """Per query, the words the model writes after ``<bos> ? P .`` (greedy at temperature 0, else
    sampled with ``generator``), up to its marker ``?`` (not included) or ``max_new`` tokens."""
    out, groups, stop = [None] * len(queries), defaultdict(list), vocab.index[ASK]
    for i, q in enumerate(queries):
        groups[len(q.prompt)].append(i)  # equal lengths: no padding before the generated part
    device = next(model.parameters()).device
    for _, idx in sorted(groups.items()):
        ids = torch.tensor([vocab.encode([BOS] + header(queries[i])) for i in idx], device=device)
        start, done = ids.shape[1], torch.zeros(len(idx), dtype=torch.bool, device=device)
        for _ in range(max_new):
            logits = _policy_logits(model, ids, vocab)[:, -1]
            nxt = (torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=generator)[:, 0]
                   if temperature > 0 else logits.argmax(-1))
            nxt = torch.where(done, torch.full_like(nxt, stop), nxt)  # a stopped row repeats the marker
            ids = torch.cat([ids, nxt[:, None]], 1)
            done |= nxt == stop
            if bool(done.all()):
                break
        for i, row in zip(idx, ids[:, start:].tolist()):
            words = vocab.decode(row)
            out[i] = words[: words.index(ASK)] if ASK in words else words
    return out


def answer_hits(model, world, vocab, queries: list[Query], recalled: list[list[str]]) -> list[bool]:
    """Per query: is the answer the top-1 entity after its recall (the reward)?"""
    examples = [world.query_example(q, [Recalled(q, w)], [q.answer]) for q, w in zip(queries, recalled)]
    lp = answer_logprobs(model, examples, vocab)
    return top1_correct(lp, examples, vocab, world.entities, [q.exclude for q in queries])


def sentences(words: list[str]) -> list[tuple]:
    """The recalled sentences as token tuples (without "."); an unfinished last one counts too."""
    out, cur = [], []
    for w in words:
        if w == END:
            out.append(tuple(cur))
            cur = []
        else:
            cur.append(w)
    return out + ([tuple(cur)] if cur else [])


def holds_needed(query: Query, recalled: list[tuple], inverse: dict) -> bool:
    """Do the recalled sentences hold every fact the query needs (a relation fact either way)?"""
    have = set(recalled)
    return all(any(tuple(g.tokens()[:-1]) in have for g in [f] + ([f.reversed(inverse)] if f.rel in inverse else []))
               for f in query.facts)


def recall_stats(queries: list[Query], recalled: list[list[str]], truths: frozenset, inverse: dict) -> dict:
    """Per query kind: ``recall_precision`` (recalled sentences that are true facts),
    ``recall_hit_rate`` (queries whose recall holds every fact they need), both ``proportion``
    records (chance 0), and ``mean_sentences`` (sentences written per query)."""
    out = {}
    for kind in KINDS:
        pairs = [(q, sentences(w)) for q, w in zip(queries, recalled) if q.kind == kind]
        if pairs:
            out[kind] = {"recall_precision": proportion([s in truths for _, ss in pairs for s in ss], 0.0),
                         "recall_hit_rate": proportion([holds_needed(q, ss, inverse) for q, ss in pairs], 0.0),
                         "mean_sentences": float(np.mean([len(ss) for _, ss in pairs]))}
    return out


def greedy_reward(model, world, vocab, queries: list[Query]) -> dict:
    """Top-1 accuracy after the model's greedy recall: a ``proportion`` record."""
    hits = answer_hits(model, world, vocab, queries, generate_recall(model.eval(), vocab, queries))
    return proportion(hits, 1 / len(world.entities))


def evaluate_recall(model, world, qset, vocab, truths: frozenset) -> tuple[dict, dict, dict]:
    """The new facts' queries answered after the model's greedy recall: ``RelationalQueries.evaluate``'s
    dict, ``recall_stats`` and three example recalls per kind (strings)."""
    model.eval()
    contexts, queries, words = {}, [], []
    for kind, qs in qset.queries.items():
        said = generate_recall(model, vocab, qs)
        contexts[kind] = [[Recalled(q, w)] for q, w in zip(qs, said)]
        queries, words = queries + qs, words + said
    examples = {kind: [" ".join(header(c[0].query) + c[0].words) for c in ctx[:3]] for kind, ctx in contexts.items()}
    return qset.evaluate(model, "recall", contexts), recall_stats(queries, words, truths, world.inverse), examples
