"""Your own facts (toy_tasks.user_facts): every check of the file, and the world it builds."""
import copy
import json
from pathlib import Path

import numpy as np
import pytest

from toy_tasks.relational import RelationalTask
from toy_tasks.relational_facts import Fact
from toy_tasks.user_facts import MIN_FACTS, load_user_facts

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "facts" / "family.json"
PEOPLE = ["wim", "ada", "bo", "cy", "di", "ed", "flo", "gil", "hu", "ivo", "jan", "kai", "lia", "mo", "nia", "oz",
          "pia", "qi", "ria", "sol", "tia", "udo", "vex", "wu"]
# 24 facts over 24 people with 3 relation pairs (one holding a built-in word), 6 category words
GOOD = {
    "inverses": {"parent_of": "child_of", "taller_than": "shorter_than", "owns": "owned-by"},
    "facts": [[PEOPLE[i], "parent_of", PEOPLE[i + 1]] for i in range(0, 8)]
    + [[PEOPLE[i], "taller_than", PEOPLE[i + 2]] for i in range(8, 16)]
    + [[PEOPLE[i], "owns", PEOPLE[(i + 3) % 24]] for i in range(16, 24)],
    "categories": [["all", "wug", "are", "dax"], ["all", "dax", "are", "fep"], ["all", "zib", "are", "dax"],
                   ["all", "blick", "are", "fep"], ["no", "dax", "are", "toma"], ["all", "toma", "are", "blick"]],
}


def write(tmp_path, data, name="facts.json") -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def problems(tmp_path, data, **task) -> list[str]:
    """The error lines for ``data`` (loaded through the task when task fields are given)."""
    path = write(tmp_path, data)
    with pytest.raises(ValueError) as err:
        RelationalTask(facts_file=path, **task).validate() if task else load_user_facts(path)
    lines = str(err.value).splitlines()
    assert all(line.startswith(path + ": ") for line in lines), lines  # each line names the file
    return lines


def changed(edit) -> dict:
    data = copy.deepcopy(GOOD)
    edit(data)
    return data


def test_the_good_file_and_the_example_validate():
    user = load_user_facts(str(EXAMPLE))
    assert len(user.facts) >= MIN_FACTS and user.premises and user.syllogism_queries
    RelationalTask(facts_file=str(EXAMPLE)).validate()


@pytest.mark.parametrize("name, data, where, says", [
    ("not json", '{"facts": [', "line 1 column 12", "not JSON"),
    ("a list", "[1, 2]", "top level", "expected an object"),
    ("unknown key", changed(lambda d: d.update(fact=[])), '"fact"', "unknown key"),
    ("no facts", changed(lambda d: d.pop("facts")), '"facts"', 'is missing: add "facts"'),
    ("inverses a list", changed(lambda d: d.update(inverses=[])), '"inverses"', "expected a JSON object"),
    ("key twice", json.dumps(GOOD).replace('"owns": "owned-by"', '"owns": "owned-by", "owns": "x"'),
     'inverses["owns"]', "appears twice: keep one"),
    ("unknown relation", changed(lambda d: d["facts"][3].__setitem__(1, "likes")), "facts[3]",
     'unknown relation "likes": add it to "inverses"'),
    ("no inverse", changed(lambda d: d["inverses"].update(likes=None)), 'inverses["likes"]',
     'has no inverse (got null): give its inverse word'),
    ("own inverse", changed(lambda d: d["inverses"].update(meets="meets")), 'inverses["meets"]',
     "is its own inverse: a symmetric relation has no reversal to test"),
    ("two inverses", changed(lambda d: d["inverses"].update(child_of="kid_of")), 'inverses["child_of"]',
     'another pair gives "child_of" the inverse "parent_of": a word has one inverse'),
    ("built-in pair broken", changed(lambda d: d["inverses"].update(bigger="lighter")), 'inverses["bigger"]',
     'built-in relation whose inverse is "smaller" (got "lighter"): pair it with "smaller"'),
    ("duplicate", changed(lambda d: d["facts"].append(["wim", "parent_of", "ada"])), "facts[24]",
     "duplicates facts[0]: remove one"),
    ("converse", changed(lambda d: d["facts"].append(["ada", "child_of", "wim"])), "facts[24]",
     'is the converse of "wim parent_of ada" (facts[0]), the same fact backwards'),
    ("contradiction", changed(lambda d: d["facts"].append(["ada", "parent_of", "wim"])), "facts[24]",
     "contradicts \"wim parent_of ada\" (facts[0])"),
    ("same pair", changed(lambda d: d["facts"].append(["ada", "taller_than", "wim"])), "facts[24]",
     "about the same two entities as \"wim parent_of ada\" (facts[0])"),
    ("too few", changed(lambda d: d.update(facts=d["facts"][:5])), "facts", f"5 facts; at least {MIN_FACTS}"),
    ("function token", changed(lambda d: d["facts"][2].__setitem__(2, "are")), "facts[2]",
     '"are" is a function token of the corpora'),
    ("relation as entity", changed(lambda d: d["facts"][2].__setitem__(2, "taller_than")), "facts[2]",
     'entity "taller_than" is also a relation word: rename the entity'),
    ("built-in relation as entity", changed(lambda d: d["facts"][2].__setitem__(0, "older")), "facts[2]",
     'entity "older" is also a relation word'),
    ("whitespace", changed(lambda d: d["facts"][4].__setitem__(0, "big al")), "facts[4]",
     'contains whitespace: a word is one token, e.g. "big_al"'),
    ("not a triple", changed(lambda d: d["facts"].__setitem__(6, ["ed", "parent_of"])), "facts[6]",
     "expected [subject, relation, object]"),
    ("itself", changed(lambda d: d["facts"][6].__setitem__(2, "flo")), "facts[6]", '"flo" is related to itself'),
    ("one object", changed(lambda d: d.update(facts=[[p, "parent_of", "wim"] for p in PEOPLE[1:10]])), "facts[0]",
     'its forward query "ada parent_of ?" has 0 other objects to rank against'),
    ("malformed premise", changed(lambda d: d["categories"].append(["some", "wug", "are", "zib"])),
     "categories[6]", 'expected ["all" or "no", X, "are", Y]'),
    ("no conclusion",
     changed(lambda d: d.update(categories=[["all", "wug", "are", "dax"], ["all", "zib", "are", "fep"]])),
     "categories", "no two premises chain into a two-hop conclusion"),
    ("premise twice", changed(lambda d: d["categories"].append(["no", "toma", "are", "dax"])), "categories[6]",
     '"no" is symmetric: says the same as categories[4]'),
    ("cycle", changed(lambda d: d["categories"].append(["all", "fep", "are", "wug"])), "categories[6]",
     'closes a cycle ("wug" is already a "fep")'),
    ("contradiction in categories", changed(lambda d: d["categories"].append(["all", "toma", "are", "dax"])),
     "categories[4]", '"no dax are toma" contradicts the "all" premises: "toma" is both a "dax" and a "toma"'),
    ("premise word is a relation", changed(lambda d: d["categories"].append(["all", "owns", "are", "fep"])),
     "categories[6]", 'category "owns" is also a relation word'),
    ("premise on itself", changed(lambda d: d["categories"].append(["all", "fep", "are", "fep"])),
     "categories[6]", "relates a category to itself"),
    ("too few categories", changed(lambda d: d.update(categories=[["all", "wug", "are", "dax"],
                                                                  ["all", "dax", "are", "fep"]])),
     "categories[0], categories[1]", 'the conclusion "all wug are fep" has 0 other category words'),
])
def test_each_problem_is_one_line_naming_the_entry_and_the_fix(tmp_path, name, data, where, says):
    lines = problems(tmp_path, data)
    assert any(f": {where}: " in line and says in line for line in lines), (name, lines)


def test_a_missing_file_and_several_problems_at_once(tmp_path):
    with pytest.raises(ValueError, match=r"nope\.json: file: not found .*check the path"):
        load_user_facts(str(tmp_path / "nope.json"))
    bad = changed(lambda d: (d["facts"][1].__setitem__(1, "likes"), d["facts"][5].__setitem__(0, "no")))
    lines = problems(tmp_path, bad)
    assert len(lines) == 2 and ": facts[1]: " in lines[0] and ": facts[5]: " in lines[1]


def test_checks_that_need_the_task(tmp_path):
    generated = changed(lambda d: d["facts"][0].__setitem__(0, "bako"))  # a generated entity name
    assert "facts[0]: \"bako\" is a generated entity name" in problems(tmp_path, generated, n_entities=550)[0]
    assert "differs from facts_sha256" in problems(tmp_path, GOOD, facts_sha256="0" * 64)[0]
    plain = changed(lambda d: d.pop("categories"))
    assert "the syllogism split needs category premises" in problems(tmp_path, plain, splits=("syllogism",))[0]
    RelationalTask(facts_file=write(tmp_path, plain)).validate()  # the headline: no syllogism queries
    rels = ["parent_of", "taller_than", "owns"]
    hub = changed(lambda d: d["facts"].extend([["hub", rels[i % 3], p] for i, p in enumerate(PEOPLE)]))
    assert 'the retrieval prompt for "hub" holds 24 trained sentences' in problems(tmp_path, hub, splits=("reversal",))[0]


def test_a_users_world(tmp_path):
    path = write(tmp_path, GOOD)
    user = load_user_facts(path)
    task = RelationalTask(facts_file=path, facts_sha256=user.sha256).validate()
    world = task.build_world(np.random.default_rng([0, 77]))
    generated = RelationalTask().build_world(np.random.default_rng([0, 77]))
    assert world.fixed_facts == generated.fixed_facts  # phase 1's world stays the generated one
    assert world.new_facts == [Fact(*f) for f in GOOD["facts"]] and world.facts_sha256 == user.sha256
    assert world.new_premises == [Fact(c[1], c[0], c[3]) for c in GOOD["categories"]]
    words = set(user.entities)
    assert words == set(PEOPLE) | {"wug", "dax", "fep", "zib", "blick", "toma"}
    # the vocab holds the user's words once; relations gain the user's pairs (owns is built in)
    vocab = task.vocab_tokens()
    assert len(vocab) == len(set(vocab)) == len(RelationalTask().vocab_tokens()) + len(words) + 4
    assert task.relations()[-4:] == ["parent_of", "child_of", "taller_than", "shorter_than"]
    assert world.inverse["child_of"] == "parent_of" and world.inverse["bigger"] == "smaller"
    # queries, their candidates and contexts are the user's
    rng = np.random.default_rng(1)
    for kind in ("forward", "reversal"):
        assert len(world.queries[kind]) == len(GOOD["facts"])
        for q in world.queries[kind]:
            cands = world.candidates(q, rng, world.queries[kind])
            assert len(set(cands)) == 4 and set(cands) <= words
            assert set(world.in_context(q, rng)) <= set(world.new_facts)
            ex = world.query_example(q, world.retrieve(q, world.new_sentences(), rng), cands)
            assert len(ex.tokens) <= task.max_seq_len()
    r = world.queries["reversal"][0]
    assert (r.prompt, r.answer, r.contrast) == (("ada", "child_of"), "wim", ("ada", "parent_of"))
    assert world.oracle_augmentation()[0] == Fact("ada", "child_of", "wim")
    syl = {(q.prompt, q.answer, q.exclude) for q in world.queries["syllogism"]}
    assert syl == {(("all", "wug", "are"), "fep", ("dax",)), (("all", "zib", "are"), "fep", ("dax",)),
                   (("no", "wug", "are"), "toma", ()), (("no", "zib", "are"), "toma", ()),
                   (("all", "toma", "are"), "fep", ("blick",))}
    for q in world.queries["syllogism"]:
        cands = world.candidates(q, rng, world.queries["syllogism"])
        assert len(set(cands)) == 4 and set(cands) <= words
    # episodes draw the user's entities (so none stays an untrained token) and relations
    seen = {t for _ in range(1000) for t in world.episode(rng).tokens}
    assert words <= seen and {"parent_of", "child_of", "taller_than", "shorter_than"} <= seen


def test_several_true_answers_are_excluded_not_counted_wrong():
    user = load_user_facts(str(EXAMPLE))
    asked = {(q.prompt, q.answer): q for q in user.relation_queries}
    assert asked[(("ann", "parent_of"), "cid")].exclude == ("dot",)
    # "lou child_of hal" is stated backwards: its reversal asks "hal parent_of ?"
    assert asked[(("hal", "parent_of"), "lou")].kind == "reversal"
    syl = {q.prompt: q for q in user.syllogism_queries}
    # every category below one disjoint from a category above the subject is a true answer
    assert syl[("no", "toddler", "are")].answer in ("driver", "voter")
    assert set(syl[("no", "toddler", "are")].exclude) | {syl[("no", "toddler", "are")].answer} == {"driver", "voter"}


# -- a byte-order mark is not a syntax error --------------------------------------------------------------
@pytest.mark.parametrize("text", [json.dumps(GOOD), json.dumps(GOOD, indent=2).replace("\n", "\r\n"),
                                  "  \n" + json.dumps(GOOD)])
def test_a_utf8_byte_order_mark_is_accepted(tmp_path, text):
    """The reported case: a file saved with a BOM (Notepad, Excel) was refused as "not JSON: fix the syntax"."""
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    user = load_user_facts(str(path))
    assert user.facts == load_user_facts(write(tmp_path, GOOD, "plain.json")).facts
    RelationalTask(facts_file=str(path)).validate()


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "utf-16-le", "utf-32-be"])
def test_a_file_in_another_encoding_is_refused_with_the_right_fix(tmp_path, encoding):
    path = tmp_path / "wide.json"
    path.write_bytes(json.dumps(GOOD).encode(encoding))  # with its byte-order mark, or (-le/-be) without
    with pytest.raises(ValueError, match="is not UTF-8 text: save it as UTF-8 JSON"):
        load_user_facts(str(path))
