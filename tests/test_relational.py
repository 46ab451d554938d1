import numpy as np
import pytest
import torch

from minitf.config import ModelConfig
from minitf.data import Vocab
from minitf.evaluate import kway_correct, proportion, top1_correct, wilson_interval
from toy_tasks import Example
from toy_tasks.relational import RelationalTask
from toy_tasks.relational_facts import INVERSE


@pytest.fixture(scope="module")
def world():
    return RelationalTask().build_world(np.random.default_rng(0))


def test_world_is_seeded_and_answers_are_unique(world):
    again = RelationalTask().build_world(np.random.default_rng(0))
    assert again.new_facts == world.new_facts and again.new_premises == world.new_premises
    assert len(world.new_facts) == 200
    for kind in ("forward", "reversal"):
        prompts = [q.prompt for q in world.queries[kind]]
        assert len(prompts) == len(set(prompts)), kind  # one right answer per prompt
    pairs = [frozenset((f.x, f.y)) for f in world.new_facts]
    assert len(pairs) == len(set(pairs))  # never both "A r B" and "B r A"
    # roles mix: some entity is the subject of r in one fact and the object of r in another, so
    # "subjects of r are never objects of r" is not a rule the direction test could lean on
    both = {(f.x, f.rel) for f in world.new_facts} & {(f.y, f.rel) for f in world.new_facts}
    assert both
    # the default layout, chains: an entity is the subject of at most one new fact and the
    # object of at most one, so a retrieved context holds one fact with B as object
    subjects, objects = [f.x for f in world.new_facts], [f.y for f in world.new_facts]
    assert len(set(subjects)) == len(subjects) and len(set(objects)) == len(objects)
    # chains of 4 facts under one relation: 150 of the 250 held-out entities take both roles of r
    assert len(both) == 150 and all(f.rel == g.rel for f, g in zip(world.new_facts, world.new_facts[1:])
                                    if f.y == g.x)
    fixed = {e for f in world.fixed_facts for e in (f.x, f.y)}
    new = {e for f in world.new_facts + world.new_premises for e in (f.x, f.y)}
    assert not fixed & new  # new facts are about held-out entities


def test_reversal_and_syllogism_queries_are_entailed(world):
    facts = set(world.new_facts)
    for q in world.queries["reversal"]:
        x, rel = q.prompt
        assert any(f.x == q.answer and f.rel == INVERSE[rel] and f.y == x for f in facts)
        assert q.contrast == (x, INVERSE[rel])
    premises = {(f.x, f.rel): f.y for f in world.new_premises}
    for q in world.queries["syllogism"]:
        quant, a, _ = q.prompt
        b = premises[(a, "all")]
        if quant == "all":
            assert premises[(b, "all")] == q.answer and q.exclude == (b,)
        else:
            assert premises[(b, "no")] == q.answer
    assert len(world.queries["syllogism"]) >= 100


def test_episode_scores_only_answers(world):
    rng = np.random.default_rng(1)
    for _ in range(20):
        ex = world.episode(rng)
        assert len(ex.scored) == world.task.queries_per_episode
        for pos in ex.scored:
            assert ex.tokens[pos] in world.entities and ex.tokens[pos + 1] == "."
            # the answer was stated earlier in the episode (solvable in context)
            assert ex.tokens[pos] in ex.tokens[:pos]
        assert len(ex.tokens) <= world.task.max_seq_len()


def test_conditions_share_queries_and_contexts_hold_the_facts(world):
    rng = np.random.default_rng(2)
    q = world.queries["reversal"][0]
    cands = world.candidates(q, rng, world.queries["reversal"])
    assert cands[0] == q.answer and len(set(cands)) == 4
    ctx = world.in_context(q, rng)
    assert q.facts[0] in ctx and len(ctx) == 1 + world.task.n_distractors
    retrieved = world.retrieve(q, world.new_sentences(), rng)
    assert q.facts[0] in retrieved
    assert set(world.oracle_augmentation()[:5]) == {f.reversed() for f in world.new_facts[:5]}
    ex = world.query_example(q, ctx, cands)
    assert ex.tokens[ex.answer_pos] == q.answer and ex.answer_pos == len(ex.tokens) - 1
    # a question about a context follows the query marker; with no context it is a bare
    # sentence start, the shape of the trained documents
    assert ex.tokens[ex.answer_pos - 3: ex.answer_pos] == ["?", *q.prompt]
    bare = world.query_example(q, [], cands)
    assert bare.tokens == ["<bos>", *q.prompt, q.answer]


def test_direction_control_swaps_in_an_unrelated_answer_of_the_same_relation(world):
    from minitf.experiments.facts.queryset import _same_role_answer

    rng = np.random.default_rng(4)
    pool = world.queries["reversal"]
    for q in pool[:30]:
        other = _same_role_answer(q, pool, rng)
        assert other != q.answer
        assert any(p.answer == other and p.prompt[1] == q.prompt[1] for p in pool)


def test_shared_relation_split_partitions_the_in_context_queries(world):
    from minitf.experiments.facts.queryset import RelationalQueries, _shares_relation
    from minitf.experiments import EXPERIMENTS
    from minitf.model import Transformer

    q = world.queries["reversal"][0]
    f = q.facts[0]
    same = next(g for g in world.new_facts if g.rel == f.rel and g != f)
    other = next(g for g in world.new_facts if g.rel != f.rel)
    assert _shares_relation(q, [other, f, same]) and not _shares_relation(q, [f, other])
    vocab = EXPERIMENTS["headline"].vocab(world.task)
    qset = RelationalQueries(world, vocab, np.random.default_rng(1))
    torch.manual_seed(0)
    model = Transformer(ModelConfig(d_model=16, d_head=4, vocab_size=len(vocab), n_ctx=world.task.max_seq_len()))
    split = qset.by_shared_relation(model.eval())["reversal_top1"]
    n_shared = sum(_shares_relation(q, c) for q, c in zip(qset.queries["reversal"], qset.context["reversal"]))
    assert split["shared_relation"]["n"] == n_shared > 0
    assert split["shared_relation"]["n"] + split["no_shared_relation"]["n"] == len(world.queries["reversal"])


def test_retrieval_split_counts_the_facts_only_the_relation_tells_apart(world):
    from minitf.experiments.facts.queryset import RelationalQueries, _matching_facts
    from minitf.experiments import EXPERIMENTS
    from minitf.model import Transformer
    from toy_tasks.relational_facts import Fact

    q = world.queries["reversal"][0]  # "B r⁻¹ ?" about the fact A r B
    a, rel, b = q.facts[0].x, q.facts[0].rel, q.facts[0].y
    other = next(r for r in world.task.relations()[::2] if r != rel)
    assert _matching_facts(q, [q.facts[0]]) == "1"
    assert _matching_facts(q, [q.facts[0], Fact(b, other, a)]) == "1"  # B the subject: not its role
    assert _matching_facts(q, [Fact("x", other, b), q.facts[0]]) == "2"
    assert _matching_facts(q, [Fact("x", other, b), Fact("y", "all", b), q.facts[0], Fact("z", rel, b)]) == "3+"
    vocab = EXPERIMENTS["headline"].vocab(world.task)
    qset = RelationalQueries(world, vocab, np.random.default_rng(1))
    torch.manual_seed(0)
    model = Transformer(ModelConfig(d_model=16, d_head=4, vocab_size=len(vocab), n_ctx=world.task.max_seq_len()))
    split = qset.retrieval_by_matching_facts(model.eval())["reversal_top1"]
    assert list(split) == ["1", "2", "3+"]
    labels = [_matching_facts(q, c) for q, c in zip(qset.queries["reversal"], qset.retrieved["reversal"])]
    assert [split[k]["n"] for k in split] == [labels.count(k) for k in split]
    assert sum(r["n"] for r in split.values()) == len(world.queries["reversal"]) and split["1"]["n"] > 0


def test_curriculum_episodes_hold_relation_facts_only(world):
    rng = np.random.default_rng(3)
    relation_only = [world.episode(rng, ["reversal"]) for _ in range(50)]
    assert not any("all" in ex.tokens or "no" in ex.tokens for ex in relation_only)
    mixed = [world.episode(rng) for _ in range(50)]
    assert any("all" in ex.tokens for ex in mixed)  # the full mix has premise chains


def test_shared_relation_episodes_use_one_relation_for_every_fact():
    import dataclasses

    def relations_per_episode(fraction):
        task = dataclasses.replace(RelationalTask(), shared_relation_fraction=fraction, min_facts=4)
        world = task.build_world(np.random.default_rng(0))
        rng, rels = np.random.default_rng(5), set(task.relations())
        out = []
        for _ in range(100):
            ex = world.episode(rng, ["reversal"])
            end = ex.tokens.index("?")  # the facts come before the first query
            out.append(len({t for t in ex.tokens[:end] if t in rels}))
        return out

    assert set(relations_per_episode(1.0)) == {1}
    mixed = relations_per_episode(0.5)
    assert mixed.count(1) >= 30 and max(mixed) > 1


def test_hub_episodes_ask_about_an_entity_only_the_relation_can_place():
    import dataclasses
    task = dataclasses.replace(RelationalTask(), shared_relation_fraction=0.0, hub_fraction=1.0,
                               hub_object_fraction=1.0, min_facts=4).validate()
    world = task.build_world(np.random.default_rng(0))
    rng, rels = np.random.default_rng(5), set(task.relations())
    for _ in range(50):
        ex = world.episode(rng, ["reversal"])
        end = ex.tokens.index("?")
        facts = [tuple(ex.tokens[i:i + 3]) for i in range(1, end, 4)]
        hub = ex.tokens[ex.scored[0] - 2]  # a hub episode asks about the hub first
        hub_facts = [f for f in facts if f[2] == hub]
        assert not any(f[0] == hub for f in facts)
        assert 2 <= len(hub_facts) <= 4 and len({r for _, r, _ in hub_facts}) == len(hub_facts)
        # the first queries are the hub's reversals, each answered by the subject of its own fact
        n_hard = min(len(hub_facts), task.queries_per_episode)
        for s in ex.scored[:n_hard]:
            entity, inverse, answer = ex.tokens[s - 2], ex.tokens[s - 1], ex.tokens[s]
            assert entity == hub and inverse in rels
            assert (answer, INVERSE[inverse], hub) in hub_facts


def test_invalid_task_config_is_rejected():
    with pytest.raises(ValueError, match="splits must be"):
        RelationalTask(splits=("reversal", "nonsense")).validate()
    with pytest.raises(ValueError, match="n_entities must leave"):
        RelationalTask(n_entities=150).validate()
    with pytest.raises(ValueError, match="shared_relation_fraction"):
        RelationalTask(shared_relation_fraction=1.5).validate()
    with pytest.raises(ValueError, match="sum to <= 1"):
        RelationalTask(shared_relation_fraction=0.6, hub_fraction=0.6).validate()
    # 20 held-out entities hold at most 20 * 8 / 2 facts: rejected up front, not an endless draw
    with pytest.raises(ValueError, match="200 facts cannot be drawn from 20 held-out entities"):
        RelationalTask(n_entities=320, new_fact_layout="random").validate()
    with pytest.raises(ValueError, match="200 new facts in chains of 4 need 250 held-out entities"):
        RelationalTask(n_entities=500).validate()
    with pytest.raises(ValueError, match="new_fact_layout must be one of"):
        RelationalTask(new_fact_layout="ring").validate()


def test_tiny_worlds_still_get_k_distinct_candidates():
    """A 20-entity category forest can reach only 3 roots (this seed does): the 4-way
    candidates are then filled with other entities of the facts, never the answer twice."""
    task = RelationalTask(n_entities=75, n_fixed_entities=12, n_fixed_facts=10, n_new_facts=20, n_chain_entities=20)
    world = task.build_world(np.random.default_rng([1, 77]))
    rng = np.random.default_rng(0)
    queries = world.queries["syllogism"]
    assert len({q.answer for q in queries}) < 4  # the case being tested
    for q in queries:
        cands = world.candidates(q, rng, queries)
        assert cands[0] == q.answer and len(set(cands)) == 4
        assert not set(cands[1:]) & {*q.exclude, *q.prompt}


def test_random_layout_puts_entities_in_several_facts():
    """The other layout: the same number of facts, entities reused across them (the world in
    which retrieved contexts hold several facts with B as object)."""
    world = RelationalTask(n_entities=450, new_fact_layout="random").build_world(np.random.default_rng(0))
    assert len(world.new_facts) == 200
    objects = [f.y for f in world.new_facts]
    assert len(set(objects)) < len(objects)
    prompts = [q.prompt for q in world.queries["reversal"]]
    assert len(prompts) == len(set(prompts))


def test_ranking_metrics_on_hand_made_scores():
    vocab = Vocab(["a", "b", "c", "d"])
    exs = [Example(["a", "b"], [1], 1, ["b", "c"], "b"), Example(["a", "c"], [1], 1, ["c", "d"], "c")]
    lp = torch.full((2, len(vocab)), -10.0)
    lp[0, vocab.index["b"]] = -1.0  # right
    lp[1, vocab.index["d"]] = -1.0  # wrong: d beats c
    lp[1, vocab.index["c"]] = -2.0
    assert kway_correct(lp, exs, vocab) == [True, False]
    assert top1_correct(lp, exs, vocab, ["a", "b", "c", "d"]) == [True, False]
    assert top1_correct(lp, exs, vocab, ["a", "b", "c", "d"], [(), ("d",)]) == [True, True]
    r = proportion([True, False, True, True], chance=0.5)
    assert r["acc"] == 0.75 and r["n"] == 4 and r["ci95"][0] < 0.75 < r["ci95"][1]
    lo, hi = wilson_interval(0, 200)
    assert lo == 0.0 and 0.0 < hi < 0.02


def _world_digest(task, seed, n=200) -> str:
    """A hash of everything a world produces for a seed: vocab, facts, queries with their
    candidates and in-context / retrieval prompts, episodes, documents, augmentation prompts."""
    import hashlib

    world = task.build_world(np.random.default_rng([seed, 77]))
    rng, h = np.random.default_rng(seed), hashlib.sha256()

    def put(tokens):
        h.update((" ".join(map(str, tokens)) + "\n").encode())

    put(task.vocab_tokens())
    for f in world.fixed_facts + world.new_facts + world.new_premises:
        put(f.tokens())
    for kind, queries in world.queries.items():
        for q in queries:
            cands = world.candidates(q, rng, queries)
            put([kind, *q.prompt, q.answer, *q.exclude, *q.contrast, *cands])
            put(world.query_example(q, world.in_context(q, rng), cands).tokens)
            put(world.query_example(q, world.retrieve(q, world.new_sentences(), rng), cands).tokens)
    for _ in range(n):
        put(world.episode(rng).tokens)
        put(world.document(rng, world.fixed_world_sentences()).tokens)
    for p, (x, rel) in world.augmentation_prompts():
        put([*p, x, rel])
    return h.hexdigest()[:16]


def test_generated_worlds_are_unchanged():
    """Pinned before a user's facts could replace the new facts (toy_tasks.user_facts): the
    generated worlds, and every published number drawn from them, stay the same per seed."""
    assert _world_digest(RelationalTask(), 0) == "3a9e4b6fd80d084b"
    assert _world_digest(RelationalTask(), 1) == "f1494f03efc8e29d"
    hub = RelationalTask(n_entities=450, new_fact_layout="random", hub_fraction=0.3)
    assert _world_digest(hub, 0) == "ebd6e107cb32047f"


def test_identity_facts_state_no_reversed_relation(world):
    """The identity bridge (Ma et al. 2026) adds "A are A ." for the new facts' entities: an
    identity relation only — no sentence of its training mix states any new fact reversed."""
    from functools import partial

    from minitf.experiments.facts.binding import phase2_sampler
    from minitf.experiments.facts.headline import IDENTITY, identity_facts, identity_mixture

    facts = identity_facts(world)
    assert all(f.x == f.y and f.rel == IDENTITY for f in facts)
    assert {f.x for f in facts} == {e for f in world.new_facts for e in (f.x, f.y)}
    reversed_new = {tuple(f.reversed(world.inverse).tokens()[:3]) for f in world.new_facts}
    base = phase2_sampler(partial(world.document, facts=world.new_sentences()), world.task.new_fact_fraction,
                          lambda rng, n: [world.document(rng, world.fixed_facts)])
    docs = identity_mixture(world, 0.5, base)(np.random.default_rng(0), 400)
    sentences = [tuple(d.tokens[i:i + 3]) for d in docs for i in range(1, len(d.tokens), 4)]
    assert not set(sentences) & reversed_new
    share = np.mean([d.tokens[2] == IDENTITY for d in docs])
    assert 0.4 < share < 0.6  # the identity documents' share of the mix


def test_head_selection_reaches_layer_0():
    """With the causal conv the induction-like heads form in layer 0 (prefix-matching 0.58–0.61 on
    seed 0, every layer-1 head 0.03): the selection ranks every layer, and takes all heads above
    the threshold together."""
    from minitf.probes import select_heads

    scores = [[0.58, 0.61, 0.59, 0.40], [0.03, 0.03, 0.02, 0.03]]
    assert select_heads(scores, threshold=0.5, min_layer=0) == [[0, 1], [0, 2], [0, 0]]
    assert select_heads(scores, threshold=0.9, min_layer=0) == [[0, 1]]  # none above: the best one
    assert select_heads(scores, threshold=0.5, min_layer=1) == [[1, 0]]  # the old default missed them
