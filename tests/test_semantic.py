"""The semantic-structure corpus: tree shape, inheritance, the control world, and every split's
promise (what is withheld from training, what a prompt shows, what distractors are)."""
import numpy as np
import pytest

from minitf.errors import ConfigError
from minitf.experiments import EXPERIMENTS
from minitf.runs.folder import build_configs
from toy_tasks.hierarchy import ATTRIBUTES, N_PHRASINGS, SPLITS
from toy_tasks.semantic import SemanticTask


@pytest.fixture(scope="module")
def worlds():
    return SemanticTask().build_worlds(seed=0)


def test_tree_meets_the_size_the_benchmark_promises(worlds):
    tree = worlds["structured"].tree
    assert len(tree.categories) >= 40
    depths = [len(tree.ancestors(c)) for c in tree.categories]
    assert max(depths) + 1 >= 3
    assert all(len(tree.children[c]) >= 3 for c in tree.categories if len(tree.ancestors(c)) < max(depths))
    holdout = worlds["structured"].holdout
    for c in tree.categories:
        own = [p for p in tree.stated["has"].get(c, []) if p not in tree.true_objects(tree.parent[c], "has")] \
            if tree.parent[c] else tree.stated["has"][c]
        assert (c in holdout) == (len(own) == 0) and len(own) <= 3


def test_structured_world_inherits_and_control_world_does_not(worlds):
    overlap = {}
    for name, world in worlds.items():
        tree, shared = world.tree, []
        for c in tree.categories:
            p = tree.parent[c]
            if p is None:
                continue
            assert tree.true_objects(p, "has") <= tree.true_objects(c, "has")  # truth is inherited in both
            mine = set(tree.stated["has"].get(c, []))
            shared.append(len(mine & set(tree.stated["has"].get(p, []))) / max(1, len(mine)))
        overlap[name] = np.mean(shared)
    assert overlap["structured"] > 0.15 and overlap["control"] < 0.02, overlap
    s, c = worlds["structured"], worlds["control"]
    assert len(s.facts) == len(c.facts) and s.holdout == c.holdout
    assert [f.rel for f in s.facts] == [f.rel for f in c.facts]  # same sentences of every kind
    assert {k: len(q) for k, q in s.queries.items()} == pytest.approx({k: len(q) for k, q in c.queries.items()},
                                                                      abs=5)


def test_worlds_are_seeded():
    a, b = SemanticTask().build_worlds(3), SemanticTask().build_worlds(3)
    for name in a:
        assert a[name].facts == b[name].facts and a[name].queries == b[name].queries
    assert SemanticTask().build_worlds(4)["structured"].facts != a["structured"].facts


@pytest.mark.parametrize("name", ["structured", "control"])
def test_each_split_withholds_exactly_what_it_tests(worlds, name):
    world = worlds[name]
    trained = set(world.training_sentences())
    trained_facts = {f for f, _ in trained}
    for q in world.queries["rephrasing"]:
        assert q.phrasing != 0 and (q.fact, q.phrasing) not in trained and (q.fact, 0) in trained
    for q in world.queries["reversal"]:
        assert q.fact not in trained_facts and (q.fact.reversed(), 0) in trained
    for split in ("syllogism", "holdout"):
        for q in world.queries[split]:
            assert q.fact.rel in ATTRIBUTES and q.fact not in trained_facts
            assert all(p in trained for p in q.premises)  # the premises are trained, the conclusion is not
            chain = [p for p, _ in q.premises]
            assert chain[0].x == q.fact.x and chain[-1].y == q.fact.y
            assert all(a.y == b.x for a, b in zip(chain, chain[1:]))
    for c in world.holdout:  # a holdout category's only trained fact is its parent
        assert {(f.rel, f.y) for f in trained_facts if f.x == c} == {("is-a", world.tree.parent[c])}
    assert all(world.queries[s] for s in SPLITS)


@pytest.mark.parametrize("name", ["structured", "control"])
def test_distractors_are_false_here_and_true_elsewhere(worlds, name):
    world, rng = worlds[name], np.random.default_rng(0)
    for split, queries in world.queries.items():
        for q in queries[:40]:
            cands = world.candidates(q, rng)
            assert cands[0] == q.fact.y and len(set(cands)) == len(cands) == 4
            truth = world.true_objects(q.fact.x, q.fact.rel)
            assert q.fact.y in truth and not truth & set(cands[1:])
            assert set(q.exclude) == truth - {q.fact.y}


def test_prompts_show_the_premises_and_fit_the_context(worlds):
    world, rng = worlds["structured"], np.random.default_rng(1)
    task = world.task
    for split, queries in world.queries.items():
        for q in queries[:30]:
            ctx = world.in_context(q, rng)
            assert set(q.premises) <= set(ctx) and len(ctx) == len(q.premises) + task.n_distractors
            retrieved = {f for f, _ in world.retrieve(q, rng)}
            if split != "rephrasing":
                assert any(q.fact.x in (f.x, f.y) for f in retrieved)
            ex = world.query_example(q, ctx, world.candidates(q, rng))
            assert ex.tokens[ex.answer_pos] == q.fact.y and len(ex.tokens) <= task.max_seq_len()
    for _ in range(200):
        ep = world.episode(rng)
        assert len(ep.tokens) <= task.max_seq_len() and len(ep.scored) == task.queries_per_episode
        assert all(ep.tokens[i + 1] == "." for i in ep.scored)


def test_augmentation_covers_reversals_rephrasings_and_inheritance(worlds):
    world = worlds["structured"]
    prompts = world.augmentation_prompts()
    written = {(f, p) for _, f, p in prompts}
    for f in world.facts:
        assert (f.reversed(), 0) in written and all((f, p) in written for p in range(1, N_PHRASINGS))
    inferred = [f for ctx, f, _ in prompts if len(ctx) == 2]
    assert inferred and all(f.y in world.true_objects(f.x, f.rel) for f in inferred)


@pytest.mark.parametrize("override, fragment", [("branching=1", "branching"), ("max_props=0", "max_props"),
                                                ("reversal_fraction=0.9", "reversal_fraction")])
def test_bad_task_config_is_one_clear_error(override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        build_configs(EXPERIMENTS["semantic"], [override])


def test_corpora_do_not_depend_on_the_python_hash_seed():
    """Same seed ⇒ same data in every process: set iteration order (which follows PYTHONHASHSEED)
    must never decide what is drawn."""
    import os
    import subprocess
    import sys

    code = ("import hashlib, numpy as np\n"
            "from toy_tasks.semantic import SemanticTask\n"
            "from toy_tasks.relational import RelationalTask\n"
            "out = []\n"
            "for w in SemanticTask().build_worlds(0).values():\n"
            "    rng = np.random.default_rng(0)\n"
            "    out += [(q, w.candidates(q, rng), w.in_context(q, rng), w.retrieve(q, rng))\n"
            "            for qs in w.queries.values() for q in qs]\n"
            "    out += [w.augmentation_prompts(), w.training_sentences(), w.episode(rng)]\n"
            "r = RelationalTask().build_world(np.random.default_rng(0))\n"
            "out += [r.episode(np.random.default_rng(1)), r.queries]\n"
            "print(hashlib.md5(repr(out).encode()).hexdigest())\n")
    digests = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": h}).stdout for h in ("1", "2")}
    assert len(digests) == 1, digests


def test_sibling_split_separates_co_occurrence_from_inheritance():
    """The control for "a category has its parent's properties in weights": a syllogism query
    whose fact a sibling states could be answered by co-occurrence; the split finds them."""
    from minitf.experiments.facts.queryset import sibling_states
    from toy_tasks.hierarchy import Fact, Hierarchy

    tree = Hierarchy({"animal": None, "dog": "animal", "cat": "animal", "fish": "animal"},
                     {"has": {"animal": ["fur"], "cat": ["fur", "claws"]}, "eats": {}, "fears": {}})
    assert sibling_states(tree, Fact("dog", "has", "fur"))  # the cat states it
    assert not sibling_states(tree, Fact("dog", "has", "scales"))
    assert not sibling_states(tree, Fact("animal", "has", "fur"))  # a root has no siblings
    from toy_tasks.semantic import SemanticTask

    world = SemanticTask().build_worlds(0)["structured"]
    split = [sibling_states(world.tree, q.fact) for q in world.queries["syllogism"]]
    assert 0 < sum(split) < len(split)  # both halves exist in the default world
