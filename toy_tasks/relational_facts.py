"""The words and facts of the relational corpora, and how sets of facts are drawn.

A fact is one sentence of a fixed shape (``A r B .``, ``all A are B .``, ``no A are B .``); a
query is a prompt whose next token is the answer. The draws here make sets of facts with
unique answers for the world's fixed and new facts, for episodes, and for the category forest;
``toy_tasks.relational`` builds the task and its world from them. Inverses are the built-in
``INVERSE`` unless a function is given a world's own map (a user's facts add relation pairs:
``toy_tasks.user_facts``).
"""
from dataclasses import dataclass

BOS, END, ASK, ALL, NO, ARE = "<bos>", ".", "?", "all", "no", "are"
RELATION_PAIRS = [("bigger", "smaller"), ("older", "younger"), ("faster", "slower"), ("above", "below"),
                  ("before", "after"), ("parent-of", "child-of"), ("teaches", "learns-from"),
                  ("owns", "owned-by"), ("heavier", "lighter"), ("north-of", "south-of")]
_SYLLABLES = ["ba", "ko", "mi", "ru", "te", "lo", "vi", "da", "ne", "pu", "sa", "gor", "fe", "zu", "xi", "wan"]


def entity_names(n: int) -> list[str]:
    """Deterministic pronounceable nonsense words: 'bako', 'bami', ..."""
    names, k = [], len(_SYLLABLES)
    for i in range(n):
        a, b, c = i % k, (i // k) % k, i // (k * k)
        names.append(_SYLLABLES[a] + _SYLLABLES[b] + (_SYLLABLES[c - 1] if c else ""))
    return names


def ask(prompt) -> list[str]:
    """The query marker before a question about a context: it tells the query apart from one
    more context fact (whose first tokens it otherwise shares)."""
    return [ASK, *prompt]


INVERSE = {a: b for a, b in RELATION_PAIRS} | {b: a for a, b in RELATION_PAIRS}


def sentence(x: str, rel: str, y: str) -> list[str]:
    """One fact as tokens: ``all x are y .`` / ``no x are y .`` for a premise, else ``x rel y .``."""
    return [ALL, x, ARE, y, END] if rel == ALL else [NO, x, ARE, y, END] if rel == NO else [x, rel, y, END]


@dataclass(frozen=True)
class Fact:
    """One fact "x rel y": a relation fact, or a premise when ``rel`` is "all" / "no"; frozen,
    so hashable."""

    x: str
    rel: str  # a relation word, or "all" / "no" for premises
    y: str

    def tokens(self) -> list[str]:
        """The fact's sentence (``sentence``), ending with "."."""
        return sentence(self.x, self.rel, self.y)

    def reversed(self, inverse: dict | None = None) -> "Fact":
        """``B r⁻¹ A`` for ``A r B``; ``inverse`` maps a relation word to its inverse (default:
        the built-in pairs). Raises KeyError for a relation it does not hold (or a premise)."""
        return Fact(self.y, (INVERSE if inverse is None else inverse)[self.rel], self.x)


@dataclass(frozen=True)
class Query:
    """``prompt`` + answer: e.g. reversal of A r B is prompt [B, r⁻¹], answer A."""

    kind: str  # forward | reversal | syllogism
    prompt: tuple
    answer: str
    facts: tuple  # the facts that entail the answer (what in-context conditions show)
    exclude: tuple = ()  # other true completions, not counted against top-1 (the middle term)
    contrast: tuple = ()  # same prompt with the opposite relation, for the direction test


def draw_relation_facts(rng, entities, n, relations, inverse=INVERSE) -> list[Fact]:
    """n facts with each (subject, relation) and (object, inverse) used once, so answers are
    unique, and no two facts about the same two entities (no "A r B" beside "B r A"). An entity
    may be the subject of r in one fact and its object in another: with one role per relation,
    "subjects of r are never objects of r" lifted the in-weights direction test (README)."""
    facts, used, tries = [], set(), 0
    while len(facts) < n:
        tries += 1
        if tries > 1000 * n:  # near capacity random draws can paint themselves into a corner
            raise ValueError(f"could not draw {n} facts with unique answers from {len(entities)} entities: "
                             "lower the number of facts or raise n_entities / n_relations")
        x, y = rng.choice(entities, 2, replace=False)
        rel = relations[rng.integers(len(relations) // 2) * 2]  # the first word of a pair
        keys = {(x, rel), (y, inverse[rel]), frozenset((x, y))}
        if keys & used:
            continue
        used |= keys
        facts.append(Fact(str(x), rel, str(y)))
    return facts


def draw_relation_chains(rng, entities, n, relations, per_chain: int) -> list[Fact]:
    """n facts in chains x0 r x1 r x2 … of ``per_chain`` facts, one relation per chain, over
    distinct entities: each entity is the subject of at most one fact and the object of at most
    one, so answers are unique and never "A r B" beside "B r A"."""
    order = [str(entities[i]) for i in rng.permutation(len(entities))]
    facts, start = [], 0
    while len(facts) < n:
        k = min(per_chain, n - len(facts))
        rel = relations[rng.integers(len(relations) // 2) * 2]  # the first word of a pair
        chain = order[start: start + k + 1]
        facts += [Fact(x, rel, y) for x, y in zip(chain, chain[1:])]
        start += k + 1
    return facts


def draw_episode_relation_facts(rng, ents, n, task, relations=None,
                                inverse=INVERSE) -> tuple[list[Fact], list[Query]]:
    """n relation facts over ``ents`` (2n + 2 fresh entities) for an episode, and the queries it
    must ask (empty unless it is a hub episode). Either every fact shares one relation (only the
    entity finds the fact), or one hub entity is in several facts (only the relation does), or
    neither. ``relations``: the world's relation words, pair by pair (default ``task.relations()``),
    with their ``inverse`` map."""
    relations, kind = relations or task.relations(), rng.random()
    if kind < task.shared_relation_fraction:
        pair = int(rng.integers(len(relations) // 2))
        return draw_relation_facts(rng, ents, n, relations[2 * pair: 2 * pair + 2], inverse), []
    if n < 2 or kind >= task.shared_relation_fraction + task.hub_fraction:
        return draw_relation_facts(rng, ents, n, relations, inverse), []
    n_hub = int(rng.integers(2, min(n, 4, len(relations) // 2) + 1))
    hub, partners, rest = ents[0], ents[1: 1 + n_hub], ents[1 + n_hub:]
    pairs = rng.choice(len(relations) // 2, n_hub, replace=False)  # distinct pairs keep answers unique
    as_object = rng.random() < task.hub_object_fraction
    hub_facts = [Fact(e, relations[2 * k], hub) if as_object else Fact(hub, relations[2 * k], e)
                 for k, e in zip(pairs, partners)]
    others = draw_relation_facts(rng, rest, n - n_hub, relations, inverse)
    return hub_facts + others, [q for q in relation_queries(hub_facts, inverse) if q.prompt[0] == hub]


def draw_forest(rng, entities) -> tuple[list[Fact], list[Query]]:
    """A category forest (roots / depth 1 / depth 2) and its two-hop syllogism queries."""
    ents = list(rng.permutation(entities))
    n_root, n_mid = len(ents) // 5, (3 * len(ents)) // 10
    roots, mids, leaves = ents[:n_root], ents[n_root:n_root + n_mid], ents[n_root + n_mid:]
    parent = {m: roots[rng.integers(len(roots))] for m in mids}
    parent |= {leaf: mids[rng.integers(len(mids))] for leaf in leaves}
    premises = [Fact(str(c), ALL, str(p)) for c, p in parent.items()]
    excluded_of = {}
    for m in mids[::2]:  # "no B are D" for half the middle categories, D a root not above B
        d = str(roots[(roots.index(parent[m]) + 1 + rng.integers(len(roots) - 1)) % len(roots)])
        premises.append(Fact(str(m), NO, d))
        excluded_of[m] = d
    queries = []
    for leaf in leaves:
        b = parent[leaf]
        c = parent[b]
        p1, p2 = Fact(str(leaf), ALL, str(b)), Fact(str(b), ALL, str(c))
        queries.append(Query("syllogism", (ALL, str(leaf), ARE), str(c), (p1, p2), exclude=(str(b),)))
        if b in excluded_of:
            p3 = Fact(str(b), NO, excluded_of[b])
            queries.append(Query("syllogism", (NO, str(leaf), ARE), excluded_of[b], (p1, p3)))
    return premises, queries


def retrieved_facts(query: Query, trained: list[Fact]) -> list[Fact]:
    """The trained sentences retrieval puts in context for ``query`` (before distractors): those
    that mention the query's entity, or for a syllogism two forward hops from its subject."""
    entity = query.prompt[1] if query.kind == "syllogism" else query.prompt[0]
    if query.kind == "syllogism":
        first = [f for f in trained if f.x == entity]
        return first + [f for f in trained if f.x in {g.y for g in first} and f not in first]
    return [f for f in trained if entity in (f.x, f.y)]


def relation_queries(facts: list[Fact], inverse=INVERSE) -> list[Query]:
    """Per fact ``A r B``: forward ``A r ?`` → B and reversal ``B r⁻¹ ?`` → A, each with the
    opposite relation as the direction test's contrast prompt."""
    out = []
    for f in facts:
        r = f.reversed(inverse)
        out.append(Query("forward", (f.x, f.rel), f.y, (f,), contrast=(f.x, inverse[f.rel])))
        out.append(Query("reversal", (r.x, r.rel), r.y, (f,), contrast=(r.x, f.rel)))
    return out
