"""The headline's query set: fixed candidates and contexts per query, so every condition answers
the same questions, and the three views of a score (k-way, top-1 over all entities, direction).

Moved out of ``minitf.experiments.facts.headline`` (which re-exports ``QuerySet``) unchanged.
"""
import torch

from minitf.evaluate import answer_logprobs, kway_correct, proportion, top1_correct
from toy_tasks.relational_facts import ALL, NO

KINDS = ("forward", "reversal", "syllogism")


class QuerySet:
    """Fixed candidates and contexts per query, so every condition answers the same questions."""

    def __init__(self, world, vocab, rng):
        self.world, self.vocab = world, vocab
        self.queries = {k: world.queries[k] for k in KINDS if world.queries[k]}
        self.cands = {k: [world.candidates(q, rng, qs) for q in qs] for k, qs in self.queries.items()}
        self.context = {k: [world.in_context(q, rng) for q in qs] for k, qs in self.queries.items()}
        trained = world.new_sentences()
        self.retrieved = {k: [world.retrieve(q, trained, rng) for q in qs] for k, qs in self.queries.items()}
        self.fixed = {k: [q for q in world.fixed_queries if q.kind == k] for k in ("forward", "reversal")}
        self.fixed_cands = {k: [world.candidates(q, rng, qs) for q in qs] for k, qs in self.fixed.items()}
        self.same_role = {k: [_same_role_answer(q, qs, rng) for q in qs] for k, qs in self.queries.items()
                          if k != "syllogism"}

    def evaluate(self, model, condition: str, contexts: dict | None = None) -> dict:
        """Score ``model`` in one of ``CONDITIONS``: ``in_context`` puts each query's fact among
        distractors in the prompt, ``retrieval`` the trained sentences about its entity,
        ``phase1_facts`` asks the fixed world's forward/reversal queries, any other no context
        unless ``contexts`` ({kind: [context per query]}, items with ``tokens()``) brings its own
        (the recall conditions: the model's recalled text).
        Returns, per query kind, ``{kind}`` (k-way accuracy among same-role candidates),
        ``{kind}_top1`` (top-1 over all entities) and, where every query has a contrast prompt,
        ``{kind}_direction`` (chance 0.5): each a ``proportion`` record, accuracy in [0, 1]."""
        if condition == "phase1_facts":
            return self._score(model, self.fixed, self.fixed_cands, None)
        contexts = contexts or {"in_context": self.context, "retrieval": self.retrieved}.get(condition)
        return self._score(model, self.queries, self.cands, contexts)

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

    def _score(self, model, queries, cands, contexts) -> dict:
        results, entities = {}, self.world.entities
        for kind, qs in queries.items():
            ctx = contexts[kind] if contexts else [[] for _ in qs]
            examples = [self.world.query_example(q, c, cand) for q, c, cand in zip(qs, ctx, cands[kind])]
            lp = answer_logprobs(model, examples, self.vocab)
            chance_k = 1 / len(examples[0].candidates)
            results[kind] = proportion(kway_correct(lp, examples, self.vocab), chance_k)
            top1 = top1_correct(lp, examples, self.vocab, entities, [q.exclude for q in qs])
            results[f"{kind}_top1"] = proportion(top1, 1 / len(entities))
            if all(q.contrast for q in qs):
                results[f"{kind}_direction"] = proportion(self._direction(model, qs, ctx, lp, [q.answer for q in qs]), 0.5)
        return results


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
