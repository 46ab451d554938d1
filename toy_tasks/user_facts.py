"""Your own facts: a JSON file of relational facts for the headline's conditions.

After Lampinen et al. (2025) and Berglund et al. (2023, the reversal curse): the user's facts
take the place of the generated *new* facts of ``toy_tasks.relational`` (trained in weights one
direction only, queried forward and reversed; in context among distractors; retrieval;
augmentation), and optional category premises the place of the generated category forest
(their two-hop conclusions are the syllogism queries). The file::

    {"inverses": {"parent_of": "child_of", "taller_than": "shorter_than"},
     "facts": [["ann", "parent_of", "bob"], ["bob", "taller_than", "cid"], ...],
     "categories": [["all", "wug", "are", "dax"], ["no", "dax", "are", "fep"], ...]}

``load_user_facts`` reads and checks it before any work and raises ValueError, one line per
problem: ``<file>: <entry, e.g. facts[3]>: <problem>: <fix>``. The rules (each one checked):
- the file exists, is UTF-8 JSON (a byte-order mark is allowed), an object with "inverses" (object), "facts" (list) and
  optionally "categories" (list), no other key, no key twice in one object;
- every word is a non-empty string without whitespace (a word is one token), not a function
  token (``<bos> . ? all no are <pad>``) and not a generated entity name of the task;
- "inverses": each relation has an inverse word, not itself (a symmetric relation has no
  reversal to test), one inverse per word across pairs, and a built-in relation word
  (``RELATION_PAIRS``) keeps its built-in inverse; ``"a": "b"`` and ``"b": "a"`` may both appear;
- "facts": each ``[subject, relation, object]`` with a relation of "inverses" (either side), two
  different entities, no entity that is a relation word; one fact per pair of entities (as in
  the generated worlds): a second one is a duplicate, a converse (``B r⁻¹ A``: it would train
  the reversal in weights), a contradiction (``B r A``: relations are asymmetric), or another
  relation (``A s B`` / ``B s A``: the association it trains would answer the reversal);
- at least ``MIN_FACTS`` (8) facts, and each query's 4-way candidates (its answer and 3 others
  of the same role: objects for forward queries, subjects for reversed ones) exist without
  counting other true answers of its prompt;
- "categories" (optional; absent or [] means no syllogism queries): each ``["all" | "no", X,
  "are", Y]``, X ≠ Y, no duplicate (``no X are Y`` = ``no Y are X``), no cycle of "all", no
  ``no B are C`` where some category is both a B and a C, at least one two-hop conclusion
  (``all A are B`` + ``all B are C`` ⇒ ``all A are C``; ``all A are B`` + ``no B are C`` ⇒
  ``no A are C``, as ``relational_facts.draw_forest`` asks them), and 3 distractors for each
  conclusion's 4-way candidates (the other conclusions' answers, else other premise words).

A prompt may have several true answers (``ann parent_of`` two children): the others go in the
query's ``exclude`` and do not count against it. ``check_user_world`` adds the checks that need
the task (its splits, the pinned hash, the context length).
"""
import hashlib
import json
import os
from dataclasses import dataclass

from toy_tasks.relational_facts import (ALL, ARE, ASK, BOS, END, INVERSE, NO, Fact, Query,
                                        retrieved_facts)

MIN_FACTS = 8  # 4-way candidates need 4 answers per role; fewer queries give no usable score
FUNCTION_TOKENS = (BOS, END, ASK, ALL, NO, ARE, "<pad>")
KEYS = ("inverses", "facts", "categories")
MAX_LINES = 25  # problems listed in one error


@dataclass(frozen=True)
class UserFacts:
    """A parsed, checked facts file (plain data).

    path, sha256:       the file as named, and the sha256 of its bytes
    pairs:              (relation, inverse) word pairs, in file order
    facts:              ``Fact(subject, relation, object)``, in file order
    premises:           ``Fact(X, "all" | "no", Y)``, the category premises in file order
    entities:           every entity and category word, in order of first appearance
    relation_queries:   per fact, its forward then its reversal ``Query`` (other true answers
                        of the same prompt in ``exclude``)
    syllogism_queries:  the premises' two-hop conclusions as ``Query`` (kind "syllogism")
    """

    path: str
    sha256: str
    pairs: tuple
    facts: tuple
    premises: tuple
    entities: tuple
    relation_queries: tuple
    syllogism_queries: tuple

    def inverse(self) -> dict:
        """Relation word → its inverse, both directions of every pair."""
        return {a: b for a, b in self.pairs} | {b: a for a, b in self.pairs}


class _Object(dict):
    """A JSON object that remembers the keys it held twice (json keeps only the last)."""

    def __init__(self, pairs):
        super().__init__(pairs)
        keys = [k for k, _ in pairs]
        self.twice = sorted({k for k in keys if keys.count(k) > 1})


class _Problems:
    def __init__(self, path):
        self.path, self.lines = path, []

    def add(self, where: str, text: str) -> None:
        self.lines.append(f"{self.path}: {where}: {text}")

    def raise_if_any(self) -> None:
        if self.lines:
            more = [f"... and {len(self.lines) - MAX_LINES} more problems"] if len(self.lines) > MAX_LINES else []
            raise ValueError("\n".join(self.lines[:MAX_LINES] + more))


def _show(entry) -> str:
    text = json.dumps(entry)
    return text if len(text) <= 60 else text[:57] + "..."


def _word_problem(word, reserved) -> str | None:
    if not isinstance(word, str) or not word:
        return f"{_show(word)} is not a word: use a non-empty string"
    if any(c.isspace() for c in word):
        return f'"{word}" contains whitespace: a word is one token, e.g. "{"_".join(word.split())}"'
    if word in FUNCTION_TOKENS:
        return f'"{word}" is a function token of the corpora ({" ".join(FUNCTION_TOKENS)}): rename it'
    if word in reserved:
        return f'"{word}" is a generated entity name of this task (syllables like "bako"): rename it'
    return None


def _read(path: str) -> tuple[dict, bytes]:
    """The file's top-level object (shapes of "inverses" / "facts" / "categories" checked) and bytes."""
    fail = _Problems(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if b"\x00" in raw:  # UTF-16/32 without a byte-order mark: JSON text never holds a NUL byte
            raise UnicodeDecodeError("utf-8", raw, raw.index(b"\x00"), raw.index(b"\x00") + 1, "NUL byte")
        # utf-8-sig: a UTF-8 byte-order mark (Notepad, Excel exports) is allowed and skipped
        data = json.loads(raw.decode("utf-8-sig"), object_pairs_hook=_Object)
    except FileNotFoundError:
        fail.add("file", f"not found (working directory {os.getcwd()}): check the path")
    except OSError as e:
        fail.add("file", f"cannot be read ({e.strerror}): check the path and its permissions")
    except UnicodeDecodeError:
        fail.add("file", "is not UTF-8 text: save it as UTF-8 JSON")
    except json.JSONDecodeError as e:
        fail.add(f"line {e.lineno} column {e.colno}", f"not JSON ({e.msg}): fix the syntax "
                 "(double quotes, no trailing commas, no comments)")
    fail.raise_if_any()
    shape = '{"inverses": {...}, "facts": [...], "categories": [...]}'
    if not isinstance(data, dict):
        fail.add("top level", f"expected an object {shape} (got a JSON {type(data).__name__}): wrap the data in it")
        fail.raise_if_any()
    for key in data.twice:
        fail.add(f'"{key}"', "appears twice at the top level: keep one")
    for key in [k for k in data if k not in KEYS]:
        fail.add(f'"{key}"', 'unknown key: the keys are "inverses", "facts" and "categories" (optional)')
    for key, typ, example in (("inverses", dict, '{"parent_of": "child_of"}'),
                              ("facts", list, '[["ann", "parent_of", "bob"], ...]'),
                              ("categories", list, '[["all", "wug", "are", "dax"], ...]')):
        if key not in data and key != "categories":
            fail.add(f'"{key}"', f'is missing: add "{key}": {example}')
        elif key in data and not isinstance(data[key], typ):
            fail.add(f'"{key}"', f'expected a JSON {"object" if typ is dict else "list"} like {example} '
                     f"(got {_show(data[key])})")
    if isinstance(data.get("inverses"), _Object):
        for key in data["inverses"].twice:
            fail.add(f'inverses["{key}"]', "appears twice: keep one")
    fail.raise_if_any()
    return data, raw


def _read_inverses(inverses: dict, problems: _Problems, reserved) -> tuple[dict, list, set]:
    """(inverse map of both directions, (relation, inverse) pairs, words of entries in error)."""
    inverse, pairs, broken = {}, [], set()
    for key, val in inverses.items():
        where = f'inverses["{key}"]'
        words = [key] + ([val] if isinstance(val, str) and val else [])
        bad = [p for p in (_word_problem(w, reserved) for w in words) if p]
        if not bad:  # a bad word is the one problem reported for this entry
            if len(words) == 1:
                bad = [f'"{key}" has no inverse (got {_show(val)}): give its inverse word, '
                       'e.g. "parent_of": "child_of"']
            elif key == val:
                bad = [f'"{key}" is its own inverse: a symmetric relation has no reversal to test; drop it, or name '
                       "its two directions with two words"]
            elif key in INVERSE and INVERSE[key] != val or val in INVERSE and INVERSE[val] != key:
                w, v = (key, val) if key in INVERSE and INVERSE[key] != val else (val, key)
                bad = [f'"{w}" is a built-in relation whose inverse is "{INVERSE[w]}" (got "{v}"): pair it with '
                       f'"{INVERSE[w]}" or use another word']
            elif key in inverse and inverse[key] != val or val in inverse and inverse[val] != key:
                w = key if key in inverse and inverse[key] != val else val
                bad = [f'pairs "{key}" with "{val}" but another pair gives "{w}" the inverse "{inverse[w]}": a word '
                       "has one inverse; remove one of the pairs"]
        for p in bad:
            problems.add(where, p)
        if bad:
            broken |= set(words)
        elif key not in inverse:  # "b": "a" after "a": "b" says nothing new
            inverse |= {key: val, val: key}
            pairs.append((key, val))
    return inverse, pairs, broken


def _read_facts(entries: list, inverse: dict, broken: set, problems: _Problems, reserved) -> list:
    """The valid facts as (index in the file, Fact) pairs."""
    facts, about = [], {}  # about: frozenset of the two entities → (index, fact)
    relation_words = set(inverse) | set(INVERSE) | broken
    for i, entry in enumerate(entries):
        where = f"facts[{i}]"
        if not (isinstance(entry, list) and len(entry) == 3):
            problems.add(where, f"expected [subject, relation, object] (got {_show(entry)})")
            continue
        x, rel, y = entry
        bad = [p for p in (_word_problem(w, reserved) for w in entry) if p]
        if not bad and rel not in inverse and rel not in broken:
            bad.append(f'unknown relation "{rel}": add it to "inverses" with its inverse, e.g. "{rel}": "<inverse>"')
        bad += [f'entity "{e}" is also a relation word: rename the entity' for e in (x, y)
                if isinstance(e, str) and e in relation_words]
        if not bad and x == y:
            bad.append(f'"{x}" is related to itself: a fact needs two different entities')
        for p in bad:
            problems.add(where, p)
        if bad or rel in broken:
            continue
        f = Fact(x, rel, y)
        if frozenset((x, y)) not in about:
            about[frozenset((x, y))] = (i, f)
            facts.append((i, f))
            continue
        j, g = about[frozenset((x, y))]
        said = f'"{g.x} {g.rel} {g.y}" (facts[{j}])'
        if g == f:
            problems.add(where, f"duplicates facts[{j}]: remove one")
        elif g == f.reversed(inverse):
            problems.add(where, f'"{x} {rel} {y}" is the converse of {said}, the same fact backwards: training '
                         "both puts the reversal in weights; keep one")
        elif g.rel in (rel, inverse[rel]):
            problems.add(where, f'"{x} {rel} {y}" contradicts {said} (relations are asymmetric): remove one')
        else:
            problems.add(where, f'"{x} {rel} {y}" is about the same two entities as {said}: the reversal of '
                         "one would be answerable by the association the other trains in weights; keep one fact "
                         "per pair of entities")
    if len(entries) < MIN_FACTS:
        problems.add("facts", f"{len(entries)} facts; at least {MIN_FACTS} are needed (4-way candidates need "
                     "4 answers of each role, an in-context prompt holds 3 distractor facts, and fewer queries "
                     "give no usable score): add facts")
    return facts


def _relation_queries(facts: list, inverse: dict, problems: _Problems, check: bool) -> list:
    """Forward and reversal queries of ``facts`` ((index, Fact) pairs), other true answers of each
    prompt excluded; ``check``: that each has 3 same-role distractors for its 4-way candidates."""
    index = {f: i for i, f in facts}
    facts = [f for _, f in facts]
    answers = {}
    for f in facts:
        answers.setdefault((f.x, f.rel), []).append(f.y)
        answers.setdefault((f.y, inverse[f.rel]), []).append(f.x)
    out = []
    for f in facts:
        r = f.reversed(inverse)
        for kind, g, contrast in (("forward", f, inverse[f.rel]), ("reversal", r, f.rel)):
            exclude = tuple(a for a in answers[(g.x, g.rel)] if a != g.y)
            out.append(Query(kind, (g.x, g.rel), g.y, (f,), exclude=exclude, contrast=(g.x, contrast)))
    role = {"forward": "object", "reversal": "subject"}
    pool = {k: {q.answer for q in out if q.kind == k} for k in role}
    for q in out:
        others = pool[q.kind] - {q.answer, *q.exclude}
        if check and len(others) < 3:
            problems.add(f"facts[{index[q.facts[0]]}]", f'its {q.kind} query "{" ".join(q.prompt)} ?" has '
                         f"{len(others)} other {role[q.kind]}s to rank against (4-way candidates need 3 "
                         f"{role[q.kind]}s of other facts that are not true answers to it): add facts with "
                         f"other {role[q.kind]}s")
    return out


def _read_categories(entries: list, relation_words: set, problems: _Problems, reserved) -> list:
    """The valid premises as (index, Fact) pairs; cycles of "all" and contradicted "no" are reported."""
    premises, seen, parents = [], {}, {}
    for i, entry in enumerate(entries):
        where = f"categories[{i}]"
        if not (isinstance(entry, list) and len(entry) == 4 and entry[0] in (ALL, NO) and entry[2] == ARE):
            problems.add(where, f'expected ["all" or "no", X, "are", Y] (got {_show(entry)})')
            continue
        q, x, _, y = entry
        bad = [p for p in (_word_problem(w, reserved) for w in (x, y)) if p]
        bad += [f'category "{w}" is also a relation word: rename it' for w in (x, y)
                if isinstance(w, str) and w in relation_words]
        key = (q, x, y) if q == ALL else (q, frozenset((x, y)))
        if not bad:  # a bad word is the one problem reported for this entry
            if x == y:
                bad = [f'"{q} {x} are {y}" relates a category to itself: use two categories']
            elif key in seen:
                same = "duplicates" if seen[key][1] == (x, y) else '"no" is symmetric: says the same as'
                bad = [f"{same} categories[{seen[key][0]}]: keep one"]
            elif q == ALL and x in _up(y, parents):
                bad = [f'"all {x} are {y}" closes a cycle ("{y}" is already a "{x}"): categories form a hierarchy; '
                       "remove one premise of the cycle"]
        for p in bad:
            problems.add(where, p)
        if not bad:
            seen[key] = (i, (x, y))
            parents.setdefault(x, []).extend([y] if q == ALL else [])
            premises.append((i, Fact(x, q, y)))
    words = sorted({w for _, p in premises for w in (p.x, p.y)})
    contradicted = set()
    for i, p in premises:
        both = [a for a in words if p.rel == NO and {p.x, p.y} <= _up(a, parents)]
        if both:
            contradicted.add(i)
            problems.add(f"categories[{i}]", f'"no {p.x} are {p.y}" contradicts the "all" premises: "{both[0]}" '
                         f'is both a "{p.x}" and a "{p.y}"; remove one')
    return [(i, p) for i, p in premises if i not in contradicted]


def _up(word, parents) -> set:
    """The word and every category above it by "all" premises."""
    out, todo = {word}, [word]
    while todo:
        for p in parents.get(todo.pop(), []):
            if p not in out:
                out.add(p)
                todo.append(p)
    return out


def _syllogisms(premises: list, problems: _Problems, check: bool) -> list:
    """Two-hop conclusions of ``premises`` ((index, Fact) pairs), other true answers excluded;
    ``check``: that there are some, each with 3 distractors as ``World.candidates`` picks them."""
    parents, no_with = {}, {}
    for _, p in premises:
        if p.rel == ALL:
            parents.setdefault(p.x, []).append(p.y)
        else:
            no_with.setdefault(p.x, set()).add(p.y)
            no_with.setdefault(p.y, set()).add(p.x)
    stated = {(p.rel, p.x, p.y) for _, p in premises} | {(NO, p.y, p.x) for _, p in premises if p.rel == NO}
    words = {w for _, p in premises for w in (p.x, p.y)}
    out, where, asked = [], {}, set()
    for i, p1 in premises:
        for j, p2 in premises:
            if p1.rel != ALL or p2.x != p1.y or (p2.rel, p1.x, p2.y) in stated or (p2.rel, p1.x, p2.y) in asked:
                continue
            above = _up(p1.x, parents)
            if p2.rel == ALL:  # the other true answers: every category above A
                true = above - {p1.x}
            else:  # every category disjoint from one above A, and every category below those
                disjoint = set().union(*(no_with.get(b, set()) for b in above))
                true = {w for w in words if _up(w, parents) & disjoint}
            exclude = tuple(sorted(true - {p2.y}))
            out.append(Query("syllogism", (p2.rel, p1.x, ARE), p2.y, (p1, p2), exclude=exclude))
            where[out[-1]] = f"categories[{i}], categories[{j}]"
            asked.add((p2.rel, p1.x, p2.y))
    if check and premises and not out:
        problems.add("categories", 'no two premises chain into a two-hop conclusion ("all A are B" + "all B are C", '
                     'or "all A are B" + "no B are C"): add a premise that continues a chain, or drop "categories" '
                     "(it is optional: then there are no syllogism queries)")
    answers, in_facts = {q.answer for q in out}, {e for q in out for f in q.facts for e in (f.x, f.y)}
    for q in out:
        others = answers - {q.answer, *q.exclude}
        fill = in_facts - {q.answer, *q.exclude, *q.prompt, *others}
        if check and len(others) + len(fill) < 3:
            problems.add(where[q], f'the conclusion "{" ".join(q.prompt)} {q.answer}" has {len(others) + len(fill)} '
                         "other category words to rank against (4-way candidates need 3: other conclusions' "
                         "answers, else other words of the premises): add premises with more categories")
    return out


def load_user_facts(path: str, reserved=()) -> UserFacts:
    """Read and check a facts file (the module docstring lists the rules). ``reserved``: words
    the file may not use (the task's generated entity names). Raises ValueError, one line per
    problem naming the file, the entry and the fix; toy_tasks stays free of minitf, so the
    experiment turns it into its own error type."""
    data, raw = _read(path)
    problems, reserved = _Problems(path), set(reserved)
    inverse, pairs, broken = _read_inverses(data["inverses"], problems, reserved)
    facts = _read_facts(data["facts"], inverse, broken, problems, reserved)
    queries = _relation_queries(facts, inverse, problems, check=not problems.lines)  # no cascades
    before = len(problems.lines)
    premises = _read_categories(data.get("categories") or [], set(inverse) | set(INVERSE) | broken,
                                problems, reserved)
    syllogisms = _syllogisms(premises, problems, check=len(problems.lines) == before)
    problems.raise_if_any()
    entities = list(dict.fromkeys(e for _, f in facts + premises for e in (f.x, f.y)))
    return UserFacts(path=path, sha256=hashlib.sha256(raw).hexdigest(), pairs=tuple(pairs),
                     facts=tuple(f for _, f in facts), premises=tuple(p for _, p in premises), entities=tuple(entities),
                     relation_queries=tuple(queries), syllogism_queries=tuple(syllogisms))


def check_user_world(user: UserFacts, splits: list, sha256: str, max_len: int, n_distractors: int) -> None:
    """The checks that need the task: the pinned hash (``sha256``, "" = none), a split with no
    facts for it, and retrieval prompts longer than ``max_len`` tokens (the model's context).
    Raises ValueError, one line per problem."""
    problems = _Problems(user.path)
    if sha256 and sha256 != user.sha256:
        problems.add("file", f"its sha256 {user.sha256[:12]}… differs from facts_sha256 {sha256[:12]}… in the "
                     "config: it is not the file this run was set up with; restore it, or set facts_sha256 to "
                     'its new hash (or "") to use it as it is')
    if splits == ["syllogism"] and not user.premises:
        problems.add("categories", 'the syllogism split needs category premises ("categories": [["all", X, "are", '
                     'Y], ...]): add them, or run the reversal split or the headline')
    facts = list(user.facts) if "reversal" in splits else []
    premises = list(user.premises) if "syllogism" in splits else []
    queries = ([q for q in user.relation_queries if "reversal" in splits]
               + [q for q in user.syllogism_queries if "syllogism" in splits])
    reported = set()
    for q in queries:
        found = retrieved_facts(q, facts + premises)
        n_rest = len(facts) + len(premises) - len(found)
        length = 1 + sum(len(f.tokens()) for f in found) + 5 * min(n_distractors, n_rest) + 1 + len(q.prompt) + 1
        entity = q.prompt[1] if q.kind == "syllogism" else q.prompt[0]
        if length > max_len and entity not in reported:
            reported.add(entity)
            problems.add("categories" if q.kind == "syllogism" else "facts",
                         f'the retrieval prompt for "{entity}" holds {len(found)} trained sentences ({length} '
                         f"tokens), over the model's context of {max_len} (max_seq_len: set by max_facts, "
                         f'n_distractors and queries_per_episode): put "{entity}" in fewer facts, or raise max_facts')
    problems.raise_if_any()
