"""Query sets: each query's candidates and contexts drawn once, so every condition answers the
same questions, and the views of a score (k-way, top-1, and for the headline direction).

``QuerySet`` is the base both experiments share (``evaluate`` and the scoring);
``RelationalQueries`` is the headline's (relational facts: direction tests, the fixed world's
queries, the shared-relation and matching-facts splits), ``SemanticQueries`` semantic's
(category hierarchies: top-1 over the answer's kind, trained facts asked as trained, the
sibling split).
"""
import abc

import numpy as np
import torch

from minitf.evaluate import answer_logprobs, kway_correct, proportion, top1_correct
from toy_tasks.relational_facts import ALL, NO

KINDS = ("forward", "reversal", "syllogism")
N_TRAINED_QUERIES = 200  # semantic's trained-facts sanity row


class QuerySet(abc.ABC):
    """The base: a world's queries, with candidates and contexts a subclass draws once in its
    ``__init__`` (in its own order: the draws are part of every run's numbers), and their scores.

    Attributes: ``queries`` {kind: [Query]} (empty kinds left out); ``cands`` {kind: [[answer,
    distractors…]]} aligned with them; ``context`` / ``retrieved`` {kind: [context per query]}
    (what the world's ``query_example`` puts before the prompt); ``extra`` {condition: (queries,
    cands)} for a condition that asks other queries (the headline's ``phase1_facts``, semantic's
    ``trained_facts``). A subclass defines ``_top1`` and may add scores per kind (``_more``)."""

    def __init__(self, world, vocab, queries: dict):
        self.world, self.vocab = world, vocab
        self.queries = {k: qs for k, qs in queries.items() if qs}
        self.extra = {}

    def evaluate(self, model, condition: str, contexts: dict | None = None) -> dict:
        """Score ``model`` in ``condition``: ``in_context`` puts each query's facts among
        distractors in the prompt, ``retrieval`` its retrieved trained facts, a key of ``extra``
        asks those queries with no context, any other no context unless ``contexts`` ({kind:
        [context per query]}) brings its own (the headline's recall conditions: the model's
        recalled text). Returns, per kind, ``{kind}`` (k-way accuracy among the candidates) and
        ``{kind}_top1`` (top-1 over every word the answer could be), plus the subclass's
        ``_more``: each a ``proportion`` record, accuracy in [0, 1]."""
        if condition in self.extra:
            return self._score(model, *self.extra[condition], None)
        contexts = contexts or {"in_context": self.context, "retrieval": self.retrieved}.get(condition)
        return self._score(model, self.queries, self.cands, contexts)

    def _score(self, model, queries: dict, cands: dict, contexts: dict | None) -> dict:
        results = {}
        for kind, qs in queries.items():
            ctx = contexts[kind] if contexts else [[] for _ in qs]
            examples = [self.world.query_example(q, c, cand) for q, c, cand in zip(qs, ctx, cands[kind])]
            lp = answer_logprobs(model, examples, self.vocab)
            results[kind] = proportion(kway_correct(lp, examples, self.vocab), 1 / len(examples[0].candidates))
            hits, chance = self._top1(lp, examples, qs)
            results[f"{kind}_top1"] = proportion(hits, chance)
            results.update(self._more(model, kind, qs, ctx, lp))
        return results

    @abc.abstractmethod
    def _top1(self, lp: torch.Tensor, examples: list, queries: list) -> tuple[list[bool], float]:
        """Per query (``lp`` (n, vocab) its answer log-probabilities): is the answer the argmax
        among every word it could be? And the chance of that (each subclass knows its words)."""

    def _more(self, model, kind: str, queries: list, contexts: list, lp: torch.Tensor) -> dict:
        """Scores beyond k-way and top-1 for one kind ({name: ``proportion`` record}); none here."""
        return {}


class RelationalQueries(QuerySet):
    """The headline's query set (relational facts and syllogisms): the new facts' queries, the
    fixed world's forward/reversal queries (``phase1_facts``) and, per query, the answer of
    another query with the same relation (``direction_control``)."""

    def __init__(self, world, vocab, rng):
        super().__init__(world, vocab, {k: world.queries[k] for k in KINDS})
        self.cands = {k: [world.candidates(q, rng, qs) for q in qs] for k, qs in self.queries.items()}
        self.context = {k: [world.in_context(q, rng) for q in qs] for k, qs in self.queries.items()}
        trained = world.new_sentences()
        self.retrieved = {k: [world.retrieve(q, trained, rng) for q in qs] for k, qs in self.queries.items()}
        self.fixed = {k: [q for q in world.fixed_queries if q.kind == k] for k in ("forward", "reversal")}
        self.fixed_cands = {k: [world.candidates(q, rng, qs) for q in qs] for k, qs in self.fixed.items()}
        self.same_role = {k: [_same_role_answer(q, qs, rng) for q in qs] for k, qs in self.queries.items()
                          if k != "syllogism"}
        self.extra = {"phase1_facts": (self.fixed, self.fixed_cands)}

    def _top1(self, lp, examples, queries):
        """Top-1 over all entities, other true completions excluded."""
        entities = self.world.entities
        return top1_correct(lp, examples, self.vocab, entities, [q.exclude for q in queries]), 1 / len(entities)

    def _more(self, model, kind, queries, contexts, lp):
        """``{kind}_direction`` (chance 0.5) where every query has a contrast prompt."""
        if not all(q.contrast for q in queries):
            return {}
        return {f"{kind}_direction": proportion(self._direction(model, queries, contexts, lp,
                                                                [q.answer for q in queries]), 0.5)}

    def direction_control(self, model) -> dict:
        """The direction test (no context) with the answer swapped for the answer of another
        query with the same relation: an entity of the same role, unrelated to this prompt.
        Scoring like the direction test means that preference is a prior on the role
        ("A is a subject of r"), not knowledge of the pairing."""
        out = {}
        for kind, swapped in self.same_role.items():
            qs = self.queries[kind]
            lp = answer_logprobs(model, [self.world.query_example(q, [], []) for q in qs], self.vocab)
            out[f"{kind}_direction_control"] = proportion(self._direction(model, qs, [[]] * len(qs), lp, swapped), 0.5)
        return out

    def by_shared_relation(self, model) -> dict:
        """In-context top-1 split by whether another context fact has the query's relation.
        Without such a fact, "find the fact with relation r and read off its subject" answers a
        reversal with no need to match the entity; with one, only matching the entity does."""
        return self._split_top1(model, self.context, lambda q, c: "shared_relation" if _shares_relation(q, c)
                                else "no_shared_relation", ("shared_relation", "no_shared_relation"))

    def retrieval_by_matching_facts(self, model) -> dict:
        """Retrieval top-1 split by k, the retrieved facts in which the query's entity has the
        role it has in the query's own fact (the object, for "B r⁻¹ ?"): with k > 1 only the
        relation tells them apart, and a model that matches the entity alone scores ≈ 1/k."""
        return self._split_top1(model, self.retrieved, _matching_facts, ("1", "2", "3+"))

    def _split_top1(self, model, contexts, label, labels) -> dict:
        """Top-1 of forward and reversal queries in ``contexts``, split by ``label(query, context)``."""
        out, chance = {}, 1 / len(self.world.entities)
        for kind in ("forward", "reversal"):
            qs, ctx = self.queries.get(kind, []), contexts.get(kind, [])
            if not qs:
                continue
            examples = [self.world.query_example(q, c, [q.answer]) for q, c in zip(qs, ctx)]
            lp = answer_logprobs(model, examples, self.vocab)
            hits = top1_correct(lp, examples, self.vocab, self.world.entities, [q.exclude for q in qs])
            names = [label(q, c) for q, c in zip(qs, ctx)]
            out[f"{kind}_top1"] = {n: proportion([h for h, m in zip(hits, names) if m == n], chance) for n in labels}
        return out

    def _direction(self, model, qs, contexts, lp, answers) -> list[bool]:
        """Per query: p(answer | its prompt) > p(answer | the prompt with the opposite relation)?
        ``lp`` holds the prompts' answer log-probabilities already computed."""
        contrast = [self.world.query_example(q, c, [], prompt=q.contrast) for q, c in zip(qs, contexts)]
        lp_c = answer_logprobs(model, contrast, self.vocab)
        ids, rows = torch.tensor(self.vocab.encode(answers)), torch.arange(len(qs))
        return (lp[rows, ids] > lp_c[rows, ids]).tolist()


class SemanticQueries(QuerySet):
    """Semantic's query set (one world's category hierarchy): the test splits' queries, and
    ``N_TRAINED_QUERIES`` trained facts asked as trained (the ``trained_facts`` condition)."""

    def __init__(self, world, vocab, rng):
        super().__init__(world, vocab, world.queries)
        trained = {"trained": world.trained_queries(rng, N_TRAINED_QUERIES)}
        # one dict over both, in this order: the candidates' draws follow it
        self.cands = {s: [world.candidates(q, rng) for q in qs] for s, qs in (self.queries | trained).items()}
        self.context = {s: [world.in_context(q, rng) for q in qs] for s, qs in self.queries.items()}
        self.retrieved = {s: [world.retrieve(q, rng) for q in qs] for s, qs in self.queries.items()}
        self.pools = {"categories": world.tree.categories, "properties": world.property_pool}
        self.extra = {"trained_facts": (trained, self.cands)}

    def by_sibling(self, model) -> dict:
        """In-weights (no context) syllogism accuracy split by whether a *sibling* of the queried
        category states the queried fact ("S has P" for another child S of the same parent). An
        inherited property can be learned as the parent's (structure) or by co-occurrence with
        siblings that state it; the ``no_sibling_states`` half has no such sibling, so only the
        first explanation is left there. Returns ``{"sibling_states" | "no_sibling_states":
        {"syllogism": k-way record, "syllogism_top1": top-1 record}}``."""
        qs = self.queries.get("syllogism", [])
        out = {}
        for name, keep in (("sibling_states", True), ("no_sibling_states", False)):
            rows = [i for i, q in enumerate(qs) if sibling_states(self.world.tree, q.fact) == keep]
            if rows:
                out[name] = self._score(model, {"syllogism": [qs[i] for i in rows]},
                                        {"syllogism": [self.cands["syllogism"][i] for i in rows]}, None)
        return out

    def _top1(self, lp, examples, queries):
        """Argmax over every word of the answer's kind, other true answers excluded; the chance
        is the mean of 1 / (words left) over the queries."""
        hits, chances = [], []
        for row, q in zip(lp, queries):
            pool = [w for w in self.pools[q.pool] if w not in q.exclude]
            scores = row[torch.tensor(self.vocab.encode(pool))]
            hits.append(pool[int(scores.argmax())] == q.fact.y)
            chances.append(1 / len(pool))
        return hits, float(np.mean(chances))


def sibling_states(tree, fact) -> bool:
    """Does another child of ``fact.x``'s parent state "sibling rel y" in the trained tree?"""
    parent = tree.parent.get(fact.x)
    siblings = [c for c, p in tree.parent.items() if p == parent and c != fact.x] if parent is not None else []
    return any(fact.y in tree.stated[fact.rel].get(c, []) for c in siblings)


def _shares_relation(query, context) -> bool:
    """Does a context fact other than the query's own use the query's relation (either word)?"""
    rel = query.facts[0].rel
    return any(f.rel == rel for f in context if f not in query.facts)


def _matching_facts(query, context) -> str:
    """"1", "2" or "3+": context facts with the query's entity in the role it has in the query's
    own fact (subject of a forward query's fact, object of a reversed one's)."""
    fact, entity = query.facts[0], query.prompt[0]
    where = "x" if fact.x == entity else "y"
    k = sum(getattr(f, where) == entity for f in context if f.rel not in (ALL, NO))
    return str(k) if k < 3 else "3+"


def _same_role_answer(query, pool, rng) -> str:
    """The answer of another query with the same relation word (same role, other pairing)."""
    others = (sorted({q.answer for q in pool if q.prompt[1] == query.prompt[1]} - {query.answer, *query.exclude})
              or sorted({q.answer for q in pool} - {query.answer}))  # tiny worlds: any other answer
    return str(others[rng.integers(len(others))])
