"""Category hierarchies in nonsense words: facts, phrasings, inheritance, fresh episodes.

The vocabulary of ``toy_tasks.semantic`` (Lampinen et al. 2025's semantic-structure set, at tiny
scale): a tree of categories ("X is-a Y"), attributes each category states ("X has P",
"X eats Z", "X fears Z") and inherits from its ancestors, every relation with an inverse
("Y includes X", "P had-by X", ...) and three phrasings. A *fresh episode* is a small random
hierarchy stated in context, followed by queries: what teaches a model to use facts in context.
"""
from dataclasses import dataclass

from toy_tasks.example import Example

BOS, END = "<bos>", "."
# the words before the answer; X is the subject. Phrasing 0 is the one every trained fact has.
PHRASINGS = {
    "is-a": (("X", "is-a"), ("every", "X", "is"), ("X", "kind-of")),
    "includes": (("X", "includes"), ("X", "contains"), ("among", "X", "is")),
    "has": (("X", "has"), ("every", "X", "has"), ("X", "with")),
    "had-by": (("X", "had-by"), ("X", "marks"), ("X", "belongs-to")),
    "eats": (("X", "eats"), ("every", "X", "eats"), ("X", "feeds-on")),
    "eaten-by": (("X", "eaten-by"), ("X", "food-of"), ("X", "prey-of")),
    "fears": (("X", "fears"), ("every", "X", "fears"), ("X", "avoids")),
    "feared-by": (("X", "feared-by"), ("X", "scares"), ("X", "avoided-by")),
}
INVERSE = {"is-a": "includes", "has": "had-by", "eats": "eaten-by", "fears": "feared-by"}
INVERSE |= {b: a for a, b in INVERSE.items()}
ATTRIBUTES = ("has", "eats", "fears")  # inherited down the tree
SPLITS = ("rephrasing", "reversal", "syllogism", "holdout")
N_PHRASINGS = 3


@dataclass(frozen=True)
class Fact:
    """One fact "x rel y" (``rel`` a key of ``PHRASINGS``); frozen, so hashable."""

    x: str
    rel: str
    y: str

    def prompt(self, phrasing: int = 0) -> tuple:
        """The words before the answer in phrasing 0..2, e.g. ``("every", x, "has")``; raises
        ``KeyError`` / ``IndexError`` for an unknown relation / phrasing."""
        return tuple(self.x if w == "X" else w for w in PHRASINGS[self.rel][phrasing])

    def tokens(self, phrasing: int = 0) -> list[str]:
        """The sentence as tokens: the prompt, ``y``, then "."."""
        return list(self.prompt(phrasing)) + [self.y, END]

    def reversed(self) -> "Fact":
        """The same fact stated from the object's side: ``Fact(y, INVERSE[rel], x)``."""
        return Fact(self.y, INVERSE[self.rel], self.x)


@dataclass(frozen=True)
class Query:
    """One evaluation question: the fact asked in a phrasing, what entails it, what to exclude."""

    kind: str  # a split name
    fact: Fact  # asked as fact.prompt(phrasing); the answer is fact.y
    phrasing: int
    premises: tuple  # (fact, phrasing) pairs that entail the answer: what in-context shows
    exclude: tuple  # other true answers: never distractors, not counted against top-1
    pool: str  # "categories" or "properties": the answer's kind, for top-1


class Hierarchy:
    """A tree plus each category's stated attribute objects; truth is the inheritance closure."""

    def __init__(self, parent: dict, stated: dict):
        self.parent, self.stated = parent, stated  # stated[rel][c] = list of objects
        self.categories = list(parent)
        self.children = {c: [d for d in parent if parent[d] == c] for c in parent}

    def ancestors(self, c: str) -> list[str]:
        """``c``'s ancestors, nearest first (``c`` itself not included; [] for a root)."""
        out = []
        while self.parent[c] is not None:
            c = self.parent[c]
            out.append(c)
        return out

    def descendants(self, c: str) -> list[str]:
        """Every category below ``c``, depth first (``c`` itself not included)."""
        out = []
        for d in self.children[c]:
            out += [d] + self.descendants(d)
        return out

    def true_objects(self, x: str, rel: str) -> set:
        """Every true ``y`` of "x rel y" under inheritance: ancestors for is-a, descendants for
        includes, stated objects of x and its ancestors for an attribute, and for an inverse
        attribute every category that holds ``x``."""
        if rel == "is-a":
            return set(self.ancestors(x))
        if rel == "includes":
            return set(self.descendants(x))
        if rel in ATTRIBUTES:
            return {o for a in [x] + self.ancestors(x) for o in self.stated[rel].get(a, [])}
        forward = INVERSE[rel]  # had-by / eaten-by / feared-by: every category holding it
        return {c for c in self.categories if x in self.true_objects(c, forward)}

    def premises(self, x: str, rel: str, y: str) -> list[Fact]:
        """The is-a chain from x up to the nearest category that states (rel, y), then that fact."""
        chain, c = [], x
        while y not in self.stated[rel].get(c, []):
            chain.append(Fact(c, "is-a", self.parent[c]))
            c = self.parent[c]
        return chain + [Fact(c, rel, y)]

    def stated_facts(self, skip=()) -> list[Fact]:
        """The facts the tree states, in category order: "c is-a parent" for every non-root, and
        each category's stated attributes unless it is in ``skip``."""
        facts = []
        for c in self.categories:
            if self.parent[c] is not None:
                facts.append(Fact(c, "is-a", self.parent[c]))
            if c not in skip:
                facts += [Fact(c, rel, o) for rel in ATTRIBUTES for o in self.stated[rel].get(c, [])]
        return facts


def build_tree(names: list[str], n_roots: int, branching: int, depth: int) -> tuple[dict, list[list[str]]]:
    """A forest of ``n_roots`` trees, ``depth`` levels, ``branching`` children per category, named
    by taking ``names`` from the end (the list passed in is not changed). Returns
    ``(parent, levels)``: ``{category: parent or None}`` and the categories of each level, roots
    first. Raises ``IndexError`` when ``names`` is too short."""
    names, parent, levels = [str(n) for n in names], {}, [[]]
    for _ in range(n_roots):
        levels[0].append(names.pop())
        parent[levels[0][-1]] = None
    for _ in range(1, depth):
        levels.append([])
        for p in levels[-2]:
            for _ in range(branching):
                levels[-1].append(names.pop())
                parent[levels[-1][-1]] = p
    return parent, levels


def root_of(parent, c):
    """The root above (or equal to) category ``c`` in a ``{category: parent or None}`` map."""
    while parent[c] is not None:
        c = parent[c]
    return c


def fresh_episode(rng, category_pool, property_pool, queries_per_episode: int, max_context_facts: int) -> Example:
    """A fresh hierarchy (2 roots, branching 2, depth 3, random words), some of its facts in
    context in random phrasings, then queries of every split's kind; answers scored."""
    cats = [str(c) for c in rng.choice(category_pool, 14, replace=False)]
    parent, levels = build_tree(cats, 2, 2, 3)
    props = iter(str(p) for p in rng.choice(property_pool, 14, replace=False))
    stated = {"has": {c: [next(props)] for c in parent},
              "eats": {c: [levels[1][(i + 2) % 4]] for i, c in enumerate(levels[1])},
              "fears": {c: [levels[0][1 - i]] for i, c in enumerate(levels[0])}}
    tree = Hierarchy(parent, stated)
    facts = tree.stated_facts()
    context, queries = [], []
    for _ in range(queries_per_episode):
        kind = SPLITS[rng.integers(3)]  # a holdout query is a syllogism in context
        if kind == "syllogism":
            c = levels[2][rng.integers(4)]
            rel = ATTRIBUTES[rng.integers(3)]
            y = sorted(tree.true_objects(c, rel) - set(stated[rel].get(c, [])))[0 if rel != "has" else
                                                                                 rng.integers(2)]
            context += [(p, int(rng.integers(N_PHRASINGS))) for p in tree.premises(c, rel, y)]
            queries.append(Fact(c, rel, y).prompt(int(rng.integers(N_PHRASINGS))) + (y,))
            continue
        f, p = facts[rng.integers(len(facts))], int(rng.integers(N_PHRASINGS))
        context.append((f, p))
        asked = f.reversed() if kind == "reversal" else f
        q = int(rng.integers(N_PHRASINGS - 1))
        q = q + (q >= p) if kind == "rephrasing" else int(rng.integers(N_PHRASINGS))
        queries.append(asked.prompt(q) + (asked.y,))
    context = list(dict.fromkeys(context))
    n_more = int(rng.integers(0, max(1, max_context_facts - len(context)) + 1))
    shown = {f for f, _ in context}
    spare = [f for f in facts if f not in shown]
    context += [(spare[i], int(rng.integers(N_PHRASINGS))) for i in rng.permutation(len(spare))[:n_more]]
    context = context[:max_context_facts]
    tokens = [BOS] + [t for i in rng.permutation(len(context)) for t in context[i][0].tokens(context[i][1])]
    scored = []
    for q in queries:
        tokens += list(q[:-1])
        scored.append(len(tokens))
        tokens += [q[-1], END]
    return Example(tokens=tokens, scored=scored, kind="episode")
