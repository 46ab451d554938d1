"""Semantic structure: a category hierarchy of nonsense words, in weights or in context.

After the semantic-structure set of Lampinen et al. (2025, arXiv 2505.00661; docs/semantic.md),
at tiny scale. Categories form a tree ("X is-a Y"); each category has a few *own*
properties ("X has P") and relations ("X eats Z", "X fears Z"), which its descendants
inherit. Every relation has an inverse ("Y includes X", "P had-by X", "Z eaten-by X") and
three phrasings, so a trained fact can be asked in a phrasing it was never trained in.

Test splits, all about the world's categories:
  rephrasing  a fact trained in one phrasing only, asked in another;
  reversal    a fact trained forward only, asked reversed ("X is-a Y" ⇒ "Y includes ?");
  syllogism   an inherited fact that was not stated ("X is-a Y", "Y has P" ⇒ "X has ?"),
              one or more steps up the tree;
  holdout     a category of which only the parent is trained; asked its inherited facts.
Distractors are hard: objects of the same relation that are true of *another* category.

The ``control`` world has the same tree, the same number of sentences of every kind and the
same test selection, but every property and relation object is drawn at random, so a child's
sentences share nothing with its parent's: the effect of structure is what differs.
Training episodes (fresh small hierarchies stated in context, then queries) teach the
in-context use of facts, as in the headline's relational corpus.
"""
import argparse
from dataclasses import dataclass

import numpy as np

from toy_tasks.example import Example
from toy_tasks.hierarchy import (ATTRIBUTES, BOS, END, N_PHRASINGS, PHRASINGS, SPLITS, Fact, Hierarchy, Query, build_tree,
                                 fresh_episode, root_of)
from toy_tasks.relational_facts import entity_names

@dataclass
class SemanticTask:
    """The semantic-structure world's settings (Lampinen et al. 2025); every field is a ``--set``
    key (docs/config.md)."""

    n_roots: int = 4  # root categories of the hierarchy
    branching: int = 3  # children per category
    depth: int = 3  # levels, roots included: 4 + 12 + 36 = 52 categories by default
    min_props: int = 1  # fewest own properties per category
    max_props: int = 3  # own properties per category
    inherited_stated: float = 0.5  # share of inherited facts also stated (the rest are syllogism tests)
    holdout_fraction: float = 0.25  # leaves whose only trained fact is their parent
    reversal_fraction: float = 0.25  # stated facts trained forward only (reversal tests)
    rephrasing_fraction: float = 0.2  # stated facts trained in phrasing 0 only (rephrasing tests)
    max_queries: int = 200  # per split
    n_candidates: int = 4  # k of the k-way ranking (answer + hard distractors)
    n_distractors: int = 3  # facts beside the premises in an in-context prompt
    max_retrieved: int = 16  # trained facts put in context by retrieval (nearest hops first)
    max_context_facts: int = 16  # in training episodes
    queries_per_episode: int = 4  # questions per training episode
    sentences_per_doc: int = 4  # sentences per training document
    new_fact_fraction: float = 0.5  # phase 2: world documents; the rest replays episodes

    def validate(self):
        """Returns ``self``; raises ``ValueError`` naming the first bad setting (tree sizes ≥ 2,
        1 ≤ min_props ≤ max_props, fractions strictly in (0, 1), reversal + rephrasing < 1,
        n_candidates ≥ 2, max_queries ≥ 1, max_context_facts ≥ 4, per-episode/doc counts ≥ 1)."""
        if self.n_roots < 2 or self.branching < 2 or self.depth < 2:
            raise ValueError(f"need n_roots >= 2, branching >= 2, depth >= 2 (got {self.n_roots}, "
                             f"{self.branching}, {self.depth})")
        if not 1 <= self.min_props <= self.max_props:
            raise ValueError(f"need 1 <= min_props <= max_props (got {self.min_props}, {self.max_props})")
        for name in ("inherited_stated", "holdout_fraction", "reversal_fraction", "rephrasing_fraction"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must be strictly between 0 and 1 (got {getattr(self, name)})")
        if self.reversal_fraction + self.rephrasing_fraction >= 1:
            raise ValueError("reversal_fraction + rephrasing_fraction must be < 1")
        if not 0 < self.new_fact_fraction < 1:
            raise ValueError(f"new_fact_fraction must be strictly between 0 and 1 (got {self.new_fact_fraction})")
        if self.n_candidates < 2 or self.max_queries < 1:
            raise ValueError("n_candidates must be >= 2 and max_queries >= 1")
        if self.max_context_facts < 4 or self.queries_per_episode < 1 or self.sentences_per_doc < 1:
            raise ValueError("max_context_facts must be >= 4, queries_per_episode and sentences_per_doc >= 1")
        return self

    def n_categories(self) -> int:
        """Categories in the tree: n_roots · Σ branching^level over the ``depth`` levels."""
        return sum(self.n_roots * self.branching ** level for level in range(self.depth))

    def category_names(self) -> list[str]:
        """One nonsense word per category (``entity_names``)."""
        return entity_names(self.n_categories())

    def property_names(self) -> list[str]:
        """n_categories · max_props property words, each a name prefixed with "q" (distinct from
        category words)."""
        # a second syllable order keeps property words distinct from category words
        return ["q" + w for w in entity_names(self.n_categories() * self.max_props)]

    def vocab_tokens(self) -> list[str]:
        """``<bos>``, ".", every phrasing word (sorted), the category words, the property words."""
        words = sorted({w for forms in PHRASINGS.values() for form in forms for w in form if w != "X"})
        return [BOS, END] + words + self.category_names() + self.property_names()

    def max_seq_len(self) -> int:
        """An upper bound on sequence length in tokens, at ≤ 5 tokens per sentence: ``<bos>``, the
        longest context (episode or retrieval + distractors) and an episode's queries."""
        context = 5 * max(self.max_retrieved + self.n_distractors, self.max_context_facts)
        return 1 + context + 5 * self.queries_per_episode

    def build_worlds(self, seed: int) -> dict:
        """``{"structured": world, "control": world}``: two ``SemanticWorld`` objects from ``seed`` with
        the same tree and test selection; the control's objects are random."""
        return {"structured": SemanticWorld(self, seed, True), "control": SemanticWorld(self, seed, False)}


class SemanticWorld:
    """The world's facts, what is trained of them, and the test queries of every split."""

    def __init__(self, task: SemanticTask, seed: int, structured: bool):
        self.task, self.structured = task, structured
        rng = np.random.default_rng([seed, 1])
        self.category_pool, self.property_pool = task.category_names(), task.property_names()
        parent, levels = build_tree(rng.permutation(self.category_pool), task.n_roots, task.branching, task.depth)
        leaves = levels[-1]
        self.holdout = {str(c) for c in rng.choice(leaves, max(1, round(task.holdout_fraction * len(leaves))),
                                                   replace=False)}
        props = iter(rng.permutation(self.property_pool))
        own = {rel: {} for rel in ATTRIBUTES}
        for c in parent:
            if c not in self.holdout:
                own["has"][c] = [str(next(props)) for _ in range(rng.integers(task.min_props, task.max_props + 1))]
        for rel, level in (("eats", 1), ("fears", 0)):  # a relation set at one level, to another subtree
            for c in levels[level]:
                root = root_of(parent, c)
                own[rel][c] = [str(rng.choice([o for o in levels[level] if root_of(parent, o) != root]))]
        # every (category, ancestor's own fact) is a slot; some are also stated, as real text does,
        # the rest are the syllogism (holdout) tests. Both worlds share the slots and the draw.
        slots = {c: [] for c in parent}
        for c in parent:
            a = parent[c]
            while a is not None:
                for rel in ATTRIBUTES:
                    for j in range(len(own[rel].get(a, []))):
                        slots[c].append((rel, a, j, c not in self.holdout and rng.random() < task.inherited_stated))
                a = parent[a]
        if not structured:  # same counts, random objects: what a child states shares nothing with its parent
            shuffle = np.random.default_rng([seed, 2])
            for rel in ATTRIBUTES:
                for c, objs in own[rel].items():
                    own[rel][c] = self._random_objects(shuffle, rel, c, len(objs))
        stated = {rel: {c: list(objs) for c, objs in own[rel].items()} for rel in ATTRIBUTES}
        self.inherited = {c: [] for c in parent}  # (rel, object) tests per category
        for c in parent:
            for rel, a, j, is_stated in slots[c]:
                if not is_stated:
                    self.inherited[c].append((rel, own[rel][a][j]))
                    continue
                mine = stated[rel].setdefault(c, [])
                mine.append(own[rel][a][j] if structured else self._random_objects(shuffle, rel, c, 1, mine)[0])
        self.tree = Hierarchy(parent, {rel: {c: list(dict.fromkeys(o)) for c, o in d.items()}
                                       for rel, d in stated.items()})
        self._truth = {}
        self._select_tests(np.random.default_rng([seed, 3]))

    def _random_objects(self, rng, rel, c, n, avoid=()) -> list[str]:
        # objects never name a holdout category: its only trained fact is its parent
        pool = self.property_pool if rel == "has" else [o for o in self.category_pool
                                                        if o != c and o not in self.holdout]
        pool = [o for o in pool if o not in avoid]
        return [str(o) for o in rng.choice(pool, n, replace=False)]

    # -- what is trained and what is asked ------------------------------------------------
    def _select_tests(self, rng):
        task, tree = self.task, self.tree
        facts = tree.stated_facts(skip=self.holdout)
        askable = [i for i, f in enumerate(facts) if f.x not in self.holdout]
        order = rng.permutation(askable)
        n_rev, n_reph = round(task.reversal_fraction * len(askable)), round(task.rephrasing_fraction * len(askable))
        # lists in fact order (never iterate a set of strings: its order changes with PYTHONHASHSEED)
        reversal = [facts[i] for i in sorted(order[:n_rev])]
        rephrasing = [facts[i] for i in sorted(order[n_rev:n_rev + n_reph])]
        self.reversal_facts, self.rephrasing_facts = set(reversal), set(rephrasing)
        self.facts = facts
        queries = {s: [] for s in SPLITS}
        for f in rephrasing:
            queries["rephrasing"].append(self._query("rephrasing", f, int(rng.integers(1, N_PHRASINGS)),
                                                     [(f, 0)]))
        for f in reversal:
            queries["reversal"].append(self._query("reversal", f.reversed(), int(rng.integers(N_PHRASINGS)),
                                                   [(f, 0)]))
        for c in tree.categories:
            kind = "holdout" if c in self.holdout else "syllogism"
            for rel, y in self.inherited[c]:
                if y not in tree.stated[rel].get(c, []):
                    premises = [(p, 0) for p in tree.premises(c, rel, y)]
                    queries[kind].append(self._query(kind, Fact(c, rel, y), 0, premises))
        self.queries = {}
        for split in SPLITS:
            qs = sorted(queries[split], key=lambda q: (q.fact.x, q.fact.rel, q.fact.y))
            picks = rng.permutation(len(qs))[: task.max_queries]
            self.queries[split] = [qs[i] for i in sorted(picks)]

    def _query(self, kind, fact, phrasing, premises) -> Query:
        pool = "properties" if fact.rel == "has" else "categories"
        others = tuple(sorted(self.true_objects(fact.x, fact.rel) - {fact.y}))
        return Query(kind, fact, phrasing, tuple(premises), others, pool)

    def true_objects(self, x: str, rel: str) -> set:
        """Every true ``y`` of "x rel y" in this world's tree (``Hierarchy.true_objects``), cached."""
        if (x, rel) not in self._truth:
            self._truth[x, rel] = self.tree.true_objects(x, rel)
        return self._truth[x, rel]

    def training_sentences(self) -> list[tuple[Fact, int]]:
        """(fact, phrasing) pairs trained in weights: every phrasing of both directions, except
        rephrasing-test facts (phrasing 0 only) and reversal-test facts (forward only)."""
        out = []
        for f in self.facts:
            if f in self.rephrasing_facts:
                out.append((f, 0))
                continue
            directions = [f] if f in self.reversal_facts else [f, f.reversed()]
            out += [(d, p) for d in directions for p in range(N_PHRASINGS)]
        return out

    def trained_queries(self, rng, n: int) -> list[Query]:
        """Trained facts asked as trained (phrasing 0, forward): the sanity row."""
        picks = rng.permutation(len(self.facts))[:n]
        return [self._query("trained", self.facts[i], 0, [(self.facts[i], 0)]) for i in sorted(picks)]

    # -- training data ----------------------------------------------------------------------
    def document(self, rng, by_subject: dict, weights: np.ndarray) -> Example:
        """A few sentences about one subject (chosen ∝ its sentence count); answers scored."""
        subjects = list(by_subject)
        sentences = by_subject[subjects[rng.choice(len(subjects), p=weights)]]
        idx = rng.choice(len(sentences), min(self.task.sentences_per_doc, len(sentences)), replace=False)
        tokens, scored = [BOS], []
        for i in idx:
            fact, phrasing = sentences[i]
            tokens += fact.tokens(phrasing)
            scored.append(len(tokens) - 2)
        return Example(tokens=tokens, scored=scored, kind="document")

    def episode(self, rng) -> Example:
        """A fresh training episode (``fresh_episode``) drawn from this world's word pools; it does
        not use the world's own facts."""
        return fresh_episode(rng, self.category_pool, self.property_pool, self.task.queries_per_episode,
                             self.task.max_context_facts)

    # -- evaluation prompts ---------------------------------------------------------------------
    def candidates(self, query: Query, rng) -> list[str]:
        """The answer plus distractors that are objects of the same relation for another subject."""
        rel = query.fact.rel
        if (None, rel) not in self._truth:
            self._truth[None, rel] = set().union(*(self.true_objects(s, rel) for s in self._subjects(rel)))
        wrong = self.true_objects(query.fact.x, rel) | {query.fact.x}
        pool = sorted(self._truth[None, rel] - wrong)
        if len(pool) < self.task.n_candidates - 1:  # few hard distractors exist: widen to the answer's kind
            kind = self.property_pool if query.pool == "properties" else self.tree.categories
            pool += sorted(set(kind) - wrong - set(pool))
        return [query.fact.y] + [str(o) for o in rng.choice(pool, self.task.n_candidates - 1, replace=False)]

    def _subjects(self, rel):
        return self.property_pool if rel == "had-by" else self.tree.categories

    def in_context(self, query: Query, rng) -> list[tuple[Fact, int]]:
        """The premises among distractor facts of the same relation about other subjects."""
        last = query.premises[-1][0]
        near = {p.x for p, _ in query.premises} | {p.y for p, _ in query.premises}
        pool = [f for f in self.facts if f.rel == last.rel and f.x not in near]
        picks = [(pool[i], int(rng.integers(N_PHRASINGS))) for i in rng.choice(len(pool), self.task.n_distractors,
                                                                                 replace=False)]
        context = list(query.premises) + picks
        return [context[i] for i in rng.permutation(len(context))]

    def retrieve(self, query: Query, rng) -> list[tuple[Fact, int]]:
        """Trained facts (each once, as stated) about the query's subject and, for inherited facts,
        about each category above it, hop by hop: first what they state, then what mentions them,
        up to max_retrieved; plus random trained facts."""
        trained = self.facts
        stating, mentioning, frontier = [], [], {query.fact.x}
        for _ in range(self.task.depth if query.fact.rel in ATTRIBUTES else 1):
            stating += [f for f in trained if f.x in frontier]
            mentioning += [f for f in trained if f.y in frontier]
            frontier = {f.y for f in trained if f.rel == "is-a" and f.x in frontier}
        found = list(dict.fromkeys(stating + mentioning))
        found = found[: self.task.max_retrieved]
        rest = [f for f in trained if f not in found]
        found += [rest[i] for i in rng.choice(len(rest), self.task.n_distractors, replace=False)]
        return [(found[i], 0) for i in rng.permutation(len(found))]

    def query_example(self, query: Query, context, candidates) -> Example:
        """``<bos>``, the ``(fact, phrasing)`` context sentences, the query's prompt, then its
        answer: scored at the answer position, ranked among ``candidates``."""
        tokens = [BOS] + [t for f, p in context for t in f.tokens(p)] + list(query.fact.prompt(query.phrasing))
        return Example(tokens=tokens + [query.fact.y], scored=[len(tokens)], answer_pos=len(tokens),
                       candidates=candidates, answer=query.fact.y, kind=query.kind)

    def augmentation_prompts(self) -> list[tuple[list[tuple[Fact, int]], Fact, int]]:
        """What augmentation asks the model, per trained fact: its reversal and its other phrasings
        (local), and the facts it inherits from its parent's stated ones (global, one hop).
        Each item: (context, fact to write, phrasing); the fact's object is what is generated."""
        out, tree = [], self.tree
        for f in self.facts:
            out += [([(f, 0)], f, p) for p in range(1, N_PHRASINGS)]
            out.append(([(f, 0)], f.reversed(), 0))
        for c in tree.categories:
            p = tree.parent[c]
            if p is None:
                continue
            for rel in ATTRIBUTES:
                for y in tree.stated[rel].get(p, []):
                    if y not in tree.stated[rel].get(c, []):
                        out.append(([(Fact(c, "is-a", p), 0), (Fact(p, rel, y), 0)], Fact(c, rel, y), 0))
        return out


def show(n: int, seed: int = 0) -> None:
    """Print ``n`` examples of each kind (episodes, training sentences per world, and per split a
    query in weights / in context / with retrieval) of the default task's worlds."""
    task = SemanticTask()
    worlds = task.build_worlds(seed)
    rng = np.random.default_rng(seed)
    world = worlds["structured"]
    print("== training episodes (answers scored) ==")
    for _ in range(n):
        print(world.episode(rng))
    for name, w in worlds.items():
        sentences = w.training_sentences()
        print(f"\n== {name} world: {len(w.tree.categories)} categories, {len(w.facts)} stated facts, "
              f"{len(sentences)} training sentences; queries per split: "
              f"{ {s: len(q) for s, q in w.queries.items()} } ==")
        for f, p in sentences[:n]:
            print("  " + " ".join(f.tokens(p)))
    for split, queries in world.queries.items():
        print(f"\n== {split} (structured): in weights / in context / retrieval ==")
        for q in queries[:n]:
            cands = world.candidates(q, rng)
            for context in ([], world.in_context(q, rng), world.retrieve(q, rng)):
                print(world.query_example(q, context, cands))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="print examples of the semantic-structure corpus")
    parser.add_argument("--show", type=int, default=3, help="how many of each kind")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    show(args.show, args.seed)
