"""Relational corpora of nonsense entities: reversal and syllogism, in weights or in context.

After Lampinen et al. (2025) and Berglund et al. (2023, the reversal curse), at tiny scale
(docs/science.md, docs/headline.md). Every entity is one nonsense token, so nothing leaks from
any prior knowledge. One sentence per fact, always the same shape:

    relation fact   A r B .          reversal:  B r⁻¹ A .   (r⁻¹ = the inverse relation)
    premises        all A are B .    all B are C .   ⇒ all A are C .
                    all A are B .    no B are C .    ⇒ no A are C .

A *query* is a sentence whose last entity the model must predict. Training mixes two
kinds of sequence:
- episodes: fresh random entities, a few facts, then several queries about them (forward,
  reversed, two-hop) — solvable only in context; this is where in-context ability comes from;
- documents: sentences about a fixed world of entities, learned in weights.
The world also holds *new* facts about held-out entities, used for the data-matched test:
trained one direction only (in weights), or placed in the prompt among distractors (in
context), plus augmentation (reversals/inferences added to training) and retrieval
(the trained sentences that mention the query's entity put back in context). The words, the
fact and query types and the draws of fact sets live in ``toy_tasks.relational_facts``.

Your own facts: ``facts_file`` names a JSON file of relational facts (``toy_tasks.user_facts``).
The fixed world stays generated (the same as without the file, for the same seed); the user's
facts and category premises replace the generated new facts and forest, their relation pairs
join the relations of episodes, and their words join the entities that episodes draw.
"""
import argparse
from dataclasses import dataclass

import numpy as np

from toy_tasks.example import Example
from toy_tasks.relational_facts import (
    ALL,
    ARE,
    ASK,
    BOS,
    END,
    INVERSE,
    NO,
    RELATION_PAIRS,
    Fact,
    Query,
    ask,
    draw_episode_relation_facts,
    draw_forest,
    draw_relation_chains,
    draw_relation_facts,
    entity_names,
    relation_queries,
    retrieved_facts,
)
from toy_tasks.user_facts import UserFacts, check_user_world, load_user_facts

SPLITS = ("reversal", "syllogism")
NEW_FACT_LAYOUTS = ("chains", "random")


@dataclass
class RelationalTask:
    """The relational corpus's settings (Lampinen et al. 2025; Berglund et al. 2023); every field
    is a ``--set`` key (docs/config.md)."""

    n_entities: int = 550  # entity words in the vocab (fixed world + chain forest + held-out)
    n_fixed_entities: int = 100  # the phase-1 world; the rest are held out for new facts
    n_fixed_facts: int = 100  # relation facts of the fixed world (trained both directions in phase 1)
    n_new_facts: int = 200  # new relation facts about held-out entities (the data-matched test)
    # How the new facts share entities. "chains": runs of ``facts_per_chain`` facts under one
    # relation, x0 r x1 r x2 …, so every held-out entity is the subject of at most one fact and
    # the object of at most one, and the inner ones take both roles of r (no "subjects of r are
    # never objects of r" prior for the direction test to lean on). "random": drawn like the
    # fixed world, an entity in ≈ 2.7 facts and often the object of several with different
    # relations — then retrieving B's sentences for "B r⁻¹ ?" needs a relation check that this
    # model does not learn at the default budget (docs/headline.md: retrieval 0.530).
    new_fact_layout: str = "chains"
    facts_per_chain: int = 4  # new facts per chain in the "chains" layout
    n_chain_entities: int = 200  # held-out entities that form the new category forest
    n_relations: int = 8  # relation pairs in use (≤ 10)
    min_facts: int = 2  # fewest facts stated in a training episode
    max_facts: int = 6  # most facts stated in a training episode
    queries_per_episode: int = 4  # questions after an episode's facts, each after the marker ?
    n_distractors: int = 3  # other facts beside the relevant ones in an in-context or retrieval prompt
    sentences_per_doc: int = 4  # sentences per training document
    splits: tuple[str, ...] = ("reversal", "syllogism")  # which kinds of fact the run uses: reversal, syllogism or both
    # training mix (fractions of each batch)
    episode_fraction: float = 0.7  # phase 1: episodes vs fixed-world documents
    syllogism_episode_fraction: float = 0.5  # episodes holding a premise chain (with both splits)
    # Episodes whose relation facts all share one relation, so only the entity tells them apart.
    # Without them the model answers "B r⁻¹ ?" by finding *a* fact with relation r and reading
    # off its subject (in-context reversal top-1 0.49 when another context fact shares r).
    shared_relation_fraction: float = 0.5
    # Hub episodes (off by default): one entity in 2-4 facts with different relations, as in a
    # retrieved context, so only the relation finds the fact; the episode asks about the hub,
    # mostly its object (the reversed query is the one that needs the check). They teach that
    # check too slowly and unevenly for the default budget (docs/headline.md, "Hub episodes").
    hub_fraction: float = 0.0
    hub_object_fraction: float = 0.85  # in a hub episode, the share asking about the hub as object
    new_fact_fraction: float = 0.5  # phase 2: new-fact documents; the rest replays phase 1's mix
    # Your own facts: a JSON file (toy_tasks.user_facts) whose facts and category premises
    # replace the generated new facts and forest; "" = generated. ``facts_sha256``, if set, pins
    # the file's content (a run's config.json then refuses a changed file on resume).
    facts_file: str = ""
    facts_sha256: str = ""  # content hash of facts_file, pinned when a run is created

    def validate(self):
        """Returns ``self``; raises ``ValueError`` for the first bad setting (unknown split or
        layout, too few fixed/chain/held-out entities for the facts asked, fractions out of range,
        …) and for a ``facts_file`` that fails ``user_facts``' checks."""
        wanted = self.split_list()
        if not wanted or any(s not in SPLITS for s in wanted):
            raise ValueError(f"splits must be a comma list drawn from {SPLITS} (got {','.join(self.splits)!r})")
        if not 1 <= self.n_relations <= len(RELATION_PAIRS):
            raise ValueError(f"n_relations must be in 1..{len(RELATION_PAIRS)} (got {self.n_relations})")
        held_out = self.n_entities - self.n_fixed_entities - self.n_chain_entities
        # ≥ 20 chain entities give ≥ 4 root categories; where the leaves reach fewer of them,
        # World.candidates fills the 4-way set from the facts' other entities
        if held_out < 20 or self.n_fixed_entities < 10 or self.n_chain_entities < 20:
            raise ValueError("n_entities must leave >= 10 fixed, >= 20 chain and >= 20 held-out entities "
                             f"(got {self.n_fixed_entities} fixed, {self.n_chain_entities} chain, {held_out} held out)")
        if self.n_fixed_facts < 4 or self.n_new_facts < 4:
            raise ValueError("n_fixed_facts and n_new_facts must be >= 4 (4-way candidates)")
        if self.new_fact_layout not in NEW_FACT_LAYOUTS:
            raise ValueError(f"new_fact_layout must be one of {NEW_FACT_LAYOUTS} (got {self.new_fact_layout!r})")
        if self.facts_per_chain < 1:
            raise ValueError(f"facts_per_chain must be >= 1 (got {self.facts_per_chain})")
        chained = self.new_fact_layout == "chains" and "reversal" in wanted
        need = self.n_new_facts + -(-self.n_new_facts // self.facts_per_chain)  # a chain of k facts: k + 1 entities
        if chained and held_out < need:
            raise ValueError(f"{self.n_new_facts} new facts in chains of {self.facts_per_chain} need {need} held-out "
                             f"entities (got {held_out}): raise n_entities or facts_per_chain, or lower n_new_facts")
        # an entity is in at most one fact per role and relation pair (so every answer is unique);
        # keeping to half of that capacity keeps the random draws quick
        for facts, ents, which in ((self.n_fixed_facts, self.n_fixed_entities, "fixed"),
                                   (self.n_new_facts if "reversal" in wanted and not chained else 0, held_out,
                                    "held-out")):
            if facts > ents * self.n_relations // 2:
                raise ValueError(f"{facts} facts cannot be drawn from {ents} {which} entities with {self.n_relations} "
                                 f"relation pairs (at most {ents * self.n_relations // 2}): lower the facts or raise "
                                 "n_entities / n_relations")
        if not 1 <= self.min_facts <= self.max_facts:
            raise ValueError(f"need 1 <= min_facts <= max_facts (got {self.min_facts}, {self.max_facts})")
        if not (0 < self.episode_fraction < 1 and 0 < self.new_fact_fraction < 1):
            raise ValueError("episode_fraction and new_fact_fraction must be strictly between 0 and 1")
        if not 0 < self.syllogism_episode_fraction < 1:
            raise ValueError("syllogism_episode_fraction must be strictly between 0 and 1 "
                             f"(got {self.syllogism_episode_fraction})")
        fractions = (self.shared_relation_fraction, self.hub_fraction, self.hub_object_fraction)
        if min(fractions) < 0 or max(fractions) > 1 or self.shared_relation_fraction + self.hub_fraction > 1:
            raise ValueError("shared_relation_fraction, hub_fraction and hub_object_fraction must be in [0, 1], "
                             f"and the first two sum to <= 1 (got {fractions})")
        if self.queries_per_episode < 1 or self.n_distractors < 0 or self.sentences_per_doc < 1:
            raise ValueError("queries_per_episode and sentences_per_doc must be >= 1, n_distractors >= 0")
        self.user_facts()  # the file's own checks, then those against this task
        return self

    def user_facts(self) -> UserFacts | None:
        """The parsed ``facts_file`` (None without one), checked against this task: its words are
        not generated entity names, ``facts_sha256`` (if set) matches, the splits find their facts,
        and every prompt fits ``max_seq_len()``. Raises ValueError (one line per problem)."""
        if not self.facts_file:
            return None
        user = load_user_facts(self.facts_file, reserved=entity_names(self.n_entities))
        check_user_world(user, self.split_list(), self.facts_sha256, self.max_seq_len(), self.n_distractors)
        return user

    def relations(self, user: UserFacts | None = None) -> list[str]:
        """Relation words pair by pair: the first ``n_relations`` built-in pairs, then the pairs
        of ``facts_file`` not among them (``user``: the file already parsed)."""
        builtin = [r for pair in RELATION_PAIRS[: self.n_relations] for r in pair]
        user = user or self.user_facts()
        return builtin + ([r for pair in user.pairs for r in pair if pair[0] not in builtin] if user else [])

    def vocab_tokens(self) -> list[str]:
        """``<bos> . ? all no are``, the relation words (``relations()``), the generated entity
        names, then the words of ``facts_file`` (if any). Reads and checks the file."""
        user = self.user_facts()
        return ([BOS, END, ASK, ALL, NO, ARE] + self.relations(user) + entity_names(self.n_entities)
                + (list(user.entities) if user else []))

    def max_seq_len(self) -> int:
        """An upper bound on sequence length in tokens: ``<bos>``, a context of up to
        max_facts + 2 + n_distractors + 6 five-token sentences, and six tokens per query."""
        context = 5 * (self.max_facts + 2 + self.n_distractors + 6)  # retrieval adds a few sentences
        return 1 + context + 6 * self.queries_per_episode

    def split_list(self) -> list[str]:
        """``splits`` as a list, e.g. ["reversal", "syllogism"]."""
        return list(self.splits)

    def build_world(self, rng: np.random.Generator) -> "World":
        """The world for ``rng`` (with ``facts_file``: the file is read, checked and hashed here)."""
        return World(self, rng, self.user_facts())


class World:
    """Entities, the fixed world's facts, and the new facts of the data-matched test.

    entities:      every entity word (generated names, then the user's words); episodes draw
                   from all of them and top-1 ranks over all of them
    relations:     relation words pair by pair (``task.relations()``); ``inverse`` maps each
                   word to its inverse
    fixed_facts:   the phase-1 world (generated, built-in relations), trained both directions
    new_facts, new_premises: phase 2, trained one direction; with ``user`` they are the user's
    queries:       {"forward" | "reversal" | "syllogism": [Query]} about the new facts
    facts_sha256:  the sha256 of ``task.facts_file`` ("" without one)
    """

    def __init__(self, task: RelationalTask, rng: np.random.Generator, user: UserFacts | None = None):
        self.task = task
        names = entity_names(task.n_entities)
        self.entities = names + (list(user.entities) if user else [])
        self.relations = task.relations(user)
        self.inverse = INVERSE | (user.inverse() if user else {})
        self.facts_sha256 = user.sha256 if user else ""
        perm = [names[i] for i in rng.permutation(len(names))]
        fixed = perm[: task.n_fixed_entities]
        chain = perm[task.n_fixed_entities: task.n_fixed_entities + task.n_chain_entities]
        held = perm[task.n_fixed_entities + task.n_chain_entities:]
        rels = [r for pair in RELATION_PAIRS[: task.n_relations] for r in pair]  # the built-in ones
        splits = task.split_list()
        self.fixed_facts = draw_relation_facts(rng, fixed, task.n_fixed_facts, rels)
        self.new_facts, self.new_premises, relational, syllogisms = [], [], [], []
        if user is not None:  # the user's facts and premises in place of generated ones
            if "reversal" in splits:
                self.new_facts, relational = list(user.facts), list(user.relation_queries)
            if "syllogism" in splits:
                self.new_premises, syllogisms = list(user.premises), list(user.syllogism_queries)
        else:
            if "reversal" in splits and task.new_fact_layout == "chains":
                self.new_facts = draw_relation_chains(rng, held, task.n_new_facts, rels, task.facts_per_chain)
            elif "reversal" in splits:
                self.new_facts = draw_relation_facts(rng, held, task.n_new_facts, rels)
            self.new_premises, syllogisms = draw_forest(rng, chain) if "syllogism" in splits else ([], [])
            relational = relation_queries(self.new_facts)
        self.queries = {"forward": [], "reversal": [], "syllogism": syllogisms}
        for q in relational:
            self.queries[q.kind].append(q)
        self.fixed_queries = relation_queries(self.fixed_facts)

    # -- training data -----------------------------------------------------------------
    def episode(self, rng: np.random.Generator, splits: list[str] | None = None) -> Example:
        """Fresh entities, facts, then queries about them; loss on the answers only.
        ``splits`` narrows the kinds of fact (default: the task's splits)."""
        task = self.task
        n_facts = int(rng.integers(task.min_facts, task.max_facts + 1))
        ents = [str(e) for e in rng.choice(self.entities, 2 * n_facts + 6, replace=False)]
        splits = splits or task.split_list()
        facts, queries = [], []
        if "syllogism" in splits and (splits == ["syllogism"] or rng.random() < task.syllogism_episode_fraction):
            a, b, c, d = ents[-4:]
            chain = [Fact(a, ALL, b), Fact(b, ALL, c)]
            queries.append(Query("syllogism", (ALL, a, ARE), c, tuple(chain)))
            if rng.random() < 0.5:
                chain.append(Fact(b, NO, d))
                queries.append(Query("syllogism", (NO, a, ARE), d, (chain[0], chain[2])))
            facts += chain
        n_rel = max(0, n_facts - len(facts)) if "reversal" in splits else 0
        rel_facts, hard = draw_episode_relation_facts(rng, ents[: 2 * n_facts + 2], n_rel, task,
                                                      self.relations, self.inverse)
        facts += rel_facts
        queries += relation_queries(rel_facts, self.inverse)
        order = rng.permutation(len(facts))
        tokens = [BOS] + [t for i in order for t in facts[i].tokens()]
        picks = rng.choice(len(queries), task.queries_per_episode, replace=len(queries) < task.queries_per_episode)
        if hard:  # a hub episode asks about the hub first
            picks = ([queries.index(q) for q in hard] + list(picks))[: task.queries_per_episode]
        scored = []
        for i in picks:
            q = queries[i]
            tokens += ask(q.prompt)
            scored.append(len(tokens))
            tokens += [q.answer, END]
        return Example(tokens=tokens, scored=scored, kind="episode")

    def document(self, rng: np.random.Generator, facts: list[Fact]) -> Example:
        """A few sentences drawn from ``facts``; loss on each sentence's final entity."""
        idx = rng.choice(len(facts), min(self.task.sentences_per_doc, len(facts)), replace=False)
        tokens, scored = [BOS], []
        for i in idx:
            tokens += facts[i].tokens()
            scored.append(len(tokens) - 2)
        return Example(tokens=tokens, scored=scored, kind="document")

    def fixed_world_sentences(self) -> list[Fact]:
        """The fixed world is trained in both directions (it is the sanity row)."""
        return self.fixed_facts + [f.reversed(self.inverse) for f in self.fixed_facts]

    def new_sentences(self) -> list[Fact]:
        """The new facts as trained in weights: one direction only."""
        return self.new_facts + self.new_premises

    # -- evaluation prompts -------------------------------------------------------------
    def candidates(self, query: Query, rng: np.random.Generator, pool: list[Query], k: int = 4) -> list[str]:
        """The answer plus k-1 same-role distractors: answers of other queries of the kind. A tiny
        world can have fewer of those (a small category forest may reach only 3 roots); then the
        other entities of the kind's facts, in name order, fill the set."""
        others = sorted({q.answer for q in pool} - {query.answer} - set(query.exclude))
        if len(others) < k - 1:
            taken = {query.answer, *query.exclude, *query.prompt, *others}
            others += sorted({e for q in pool for f in q.facts for e in (f.x, f.y)} - taken)[: k - 1 - len(others)]
        return [query.answer] + [str(x) for x in rng.choice(others, k - 1, replace=False)]

    def query_example(self, query: Query, context: list[Fact], candidates: list[str],
                      prompt: tuple | None = None) -> Example:
        """``<bos>``, then either the ``context`` facts, the marker ``?`` and the prompt, or with no
        context the bare prompt (as documents were trained); then the answer, the one scored
        position, ranked among ``candidates``. ``prompt`` replaces ``query.prompt`` (the
        direction test's contrast)."""
        prompt = prompt or query.prompt
        # the marker separates a context from its question; with no context the query is a bare
        # sentence start, exactly as the in-weights documents were trained
        tokens = [BOS] + ([t for f in context for t in f.tokens()] + ask(prompt) if context else list(prompt))
        return Example(tokens=tokens + [query.answer], scored=[len(tokens)], answer_pos=len(tokens),
                       candidates=candidates, answer=query.answer, kind=query.kind)

    def in_context(self, query: Query, rng: np.random.Generator) -> list[Fact]:
        """The query's facts among distractor facts (other new facts of the same kind; fewer
        where a user's file has fewer)."""
        pool = self.new_premises if query.kind == "syllogism" else self.new_facts
        pool = [f for f in pool if f not in query.facts]
        picks = [pool[i] for i in rng.choice(len(pool), min(self.task.n_distractors, len(pool)), replace=False)]
        context = list(query.facts) + picks
        return [context[i] for i in rng.permutation(len(context))]

    def retrieve(self, query: Query, trained: list[Fact], rng: np.random.Generator) -> list[Fact]:
        """Trained sentences about the query's entity (two forward hops for syllogisms) + distractors
        (fewer where a user's entity is in nearly every fact)."""
        found = retrieved_facts(query, trained)
        rest = [f for f in trained if f not in found]
        found += [rest[i] for i in rng.choice(len(rest), min(self.task.n_distractors, len(rest)), replace=False)]
        return [found[i] for i in rng.permutation(len(found))]

    def oracle_augmentation(self) -> list[Fact]:
        """True reversals of the new relation facts and true conclusions of the syllogisms."""
        out = [f.reversed(self.inverse) for f in self.new_facts]
        out += [Fact(q.prompt[1], q.prompt[0], q.answer) for q in self.queries["syllogism"]]
        return out

    def augmentation_prompts(self) -> list[tuple[list[str], tuple]]:
        """(prompt tokens, (x, rel)) for each inference the model is asked to generate in context."""
        out = []
        for f in self.new_facts:
            r = f.reversed(self.inverse)
            out.append(([BOS] + f.tokens() + ask((r.x, r.rel)), (r.x, r.rel)))
        for q in self.queries["syllogism"]:
            out.append(([BOS] + [t for p in q.facts for t in p.tokens()] + ask(q.prompt), (q.prompt[1], q.prompt[0])))
        return out


def show(n: int, seed: int = 0, facts_file: str = "") -> None:
    """Print ``n`` episodes, ``n`` fixed-world documents and, per query kind, ``n`` queries in
    weights / in context / with retrieval. Raises ``ValueError`` for an invalid ``facts_file``."""
    task = RelationalTask(facts_file=facts_file).validate()
    rng = np.random.default_rng(seed)
    world = task.build_world(rng)
    print("== episodes (answers scored) ==")
    for _ in range(n):
        print(world.episode(rng))
    print("\n== fixed-world documents ==")
    for _ in range(n):
        print(world.document(rng, world.fixed_world_sentences()))
    for kind, queries in world.queries.items():
        print(f"\n== {kind}: in weights / in context / retrieval ==")
        for q in queries[:n]:
            cands = world.candidates(q, rng, queries)
            print(world.query_example(q, [], cands))
            print(world.query_example(q, world.in_context(q, rng), cands))
            print(world.query_example(q, world.retrieve(q, world.new_sentences(), rng), cands))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="print examples of the relational corpora")
    parser.add_argument("--show", type=int, default=3, help="how many of each kind")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--facts", default="", help="a JSON file of your own facts (toy_tasks.user_facts)")
    args = parser.parse_args()
    try:
        show(args.show, args.seed, args.facts)
    except ValueError as e:
        parser.exit(2, f"{e}\n")
