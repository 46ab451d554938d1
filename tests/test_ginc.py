import json
import os

import numpy as np
import pytest

from minitf.experiments import EXPERIMENTS
from minitf.experiments.bayes.ginc import GincSettings, prompt_len
from minitf.runs import run as run_experiment
from toy_tasks.ginc import DELIM, GincTask

TINY = ["n_layers=1", "d_model=32", "d_head=8", "d_mlp=64", "doc_len=41", "steps=6", "control_steps=3",
        "batch_size=8", "eval_every=0", "checkpoint_every=0", "prompts_per_cell=12", "example_lens=2,5",
        "shots=0,2,8"]


def test_world_matrices_are_stochastic_and_structured():
    task = GincTask()
    w = task.world()
    np.testing.assert_allclose(w["entity_T"].sum(1), 1)
    np.testing.assert_allclose(w["property_T"].sum(2), 1)
    np.testing.assert_allclose(w["start"].sum(1), 1)
    np.testing.assert_allclose(w["trans"].sum(2), 1)
    assert w["property_T"].shape == (2 * task.n_concepts, task.n_properties, task.n_properties)
    assert (w["memory"][:, 0] == 0).all() and (w["memory"][:, 1:] >= 1).all()  # property 0 = delimiter
    assert np.diag(w["entity_T"]).min() >= task.entity_stay  # pulled towards the identity
    # entity transitions shared, property transitions per concept: T_c = kron(E, P_c)
    np.testing.assert_allclose(task.transition(3), np.kron(w["entity_T"], w["property_T"][3]))
    assert not np.allclose(w["property_T"][0], w["property_T"][task.n_concepts])  # OOD concepts are new


def test_documents_follow_the_memory_matrix_and_seeds_reproduce():
    task = GincTask(doc_len=50)
    w = task.world()
    docs = task.documents(np.random.default_rng(0), [0, 1, 2] * 20)
    assert docs.shape == (60, 50)
    assert set(np.unique(docs)) <= set(np.unique(w["memory"]))  # every token is some state's emission
    np.testing.assert_array_equal(docs, task.documents(np.random.default_rng(0), [0, 1, 2] * 20))
    a, b = task.sample(np.random.default_rng(5), 4), task.sample(np.random.default_rng(5), 4)
    assert [e.tokens for e in a] == [e.tokens for e in b]
    assert a[0].scored == list(range(1, 50))
    # the single-concept control: every block from concept 0's HMM (its transitions only)
    trans = task.transition(0) > 0
    emit = w["emit"]
    for doc in task.documents(np.random.default_rng(1), [0] * 5):
        states = [set(np.flatnonzero(emit == s)) for s in doc]
        reach = states[0]
        for nxt in states[1:]:
            reach = {j for i in reach for j in nxt if trans[i, j]}
            assert reach  # a path through concept 0's transitions explains the document


def test_prompts_are_well_formed():
    task = GincTask()
    for k, n in ((0, 3), (4, 2), (8, 5)):
        for ex in task.prompts(np.random.default_rng(k), range(task.n_concepts), 30, k, n):
            assert len(ex.tokens) == prompt_len(k, n) == k * (n + 1) + n
            assert [ex.tokens[j * (n + 1) + n] for j in range(k)] == [DELIM] * k  # a delimiter after each example
            assert ex.answer_pos == len(ex.tokens) - 1 and ex.tokens[-1] == ex.answer == ex.candidates[0]
            assert sorted(ex.candidates) == sorted(task.symbols()) and ex.scored == [ex.answer_pos]


def test_labels_are_the_concepts_bayes_argmax():
    """bayes_labels against brute-force enumeration of every hidden path that emits x."""
    import itertools

    task = GincTask()
    w, names = task.world(), task.symbols()
    rng = np.random.default_rng(3)
    for concept in (1, 7):
        exs = task.prompts(rng, [concept], 25, 0, 4)
        trans = task.transition(concept)
        for ex in exs:
            x = [names.index(t) for t in ex.tokens[:-1]]
            scores = np.zeros(task.n_symbols)
            for p0 in range(1, task.n_properties):  # the start property is not in the example: try each
                total = np.zeros(task.n_symbols)
                for path in itertools.product(*[np.flatnonzero(w["emit"] == s) for s in x]):
                    if path[0] % task.n_properties != p0:
                        continue
                    prob = np.prod([trans[a, b] for a, b in zip(path, path[1:])])
                    total += prob * (trans[path[-1]] @ np.eye(task.n_symbols)[w["emit"]])
                if total.sum() > 0:
                    label = task.bayes_labels([concept], [p0], np.array([x]))[0]
                    assert total[label] == pytest.approx(total.max())
                    scores[p0] = 1
            assert scores.sum() >= 1  # some start property explains the example
    # the ideal learner told the concept predicts the concept's own next token (start not pinned)
    exs = task.prompts(np.random.default_rng(4), [2], 100, 8, 4)
    ideal = task.ideal_predictions(exs, 4, [2])
    assert np.mean([names[p] == e.answer for p, e in zip(ideal, exs)]) >= 0.9


@pytest.mark.parametrize("delimiter,ood_gap", [("shared", 0.2), ("paper", 0.3)])
def test_bayes_references_learn_in_context_and_fail_out_of_distribution(delimiter, ood_gap):
    task = GincTask(delimiter=delimiter)
    names = task.symbols()

    def acc(concepts, k, predict):
        exs = task.prompts(np.random.default_rng(k), concepts, 150, k, 3)
        return np.mean([names[p] == e.answer for p, e in zip(predict(exs), exs)])

    ideal = lambda exs: task.ideal_predictions(exs, 3, range(task.n_concepts))  # noqa: E731
    assert acc(range(5), 8, ideal) >= acc(range(5), 0, ideal) + 0.1  # examples reveal the concept
    assert acc(range(5, 10), 8, ideal) <= acc(range(5), 8, ideal) - ood_gap  # unseen concepts: the prior is wrong
    doc = task.document_predictions(task.prompts(np.random.default_rng(0), range(5), 20, 2, 3), range(5))
    assert doc.shape == (20,)


def _document_bayes_acc(task, n, k, prompts=400):
    names = task.symbols()
    exs = task.prompts(np.random.default_rng(100 * n + k), range(task.n_concepts), prompts, k, n)
    return np.mean([names[p] == e.answer for p, e in zip(task.document_predictions(exs, range(task.n_concepts)), exs)])


def test_shared_delimiter_is_the_same_boundary_under_every_concept():
    task = GincTask()
    assert task.delimiter == "shared"
    P = task.world()["property_T"]
    n = task.n_properties
    np.testing.assert_allclose(P[:, 0, 1:], 1 / (n - 1))  # out of "/": uniform over the other properties
    np.testing.assert_allclose(P[:, 0, 0], 0)
    np.testing.assert_allclose(P[:, 1:, 0], 1 / n)  # into "/": one probability from every property
    paper = GincTask(delimiter="paper").world()["property_T"]
    assert np.ptp(paper[:, 1:, 0]) > 0.5  # the paper's: concept-specific (some concept sends a property to "/")
    # the rest of each row is the same draw's mix, renormalised
    rest = paper[:, 1:, 1:] / paper[:, 1:, 1:].sum(2, keepdims=True)
    np.testing.assert_allclose(P[:, 1:, 1:], rest * (1 - 1 / n))


def test_the_world_decides_whether_the_bayes_predictor_learns_in_context():
    """The finding behind ``delimiter``: with the paper's concept-specific delimiter the
    pretraining distribution's own Bayes predictor does not gain with k at example length 3 (it
    falls), so no model could show ICL there; with the shared boundary it gains at 2 and 3."""
    shared, paper = GincTask(), GincTask(delimiter="paper")
    for n in (2, 3):
        assert _document_bayes_acc(shared, n, 32) >= _document_bayes_acc(shared, n, 0) + 0.15
    assert _document_bayes_acc(paper, 3, 32) <= _document_bayes_acc(paper, 3, 0)
    assert _document_bayes_acc(paper, 3, 4) <= _document_bayes_acc(paper, 3, 0) - 0.05


@pytest.mark.parametrize("field,value", [("delimiter", "none"), ("n_properties", 2), ("n_symbols", 2), ("transition_temp", 0.0),
                                         ("entity_stay", 1.5), ("doc_len", 1), ("doc_blocks", 0),
                                         ("n_concepts", 0)])
def test_invalid_task_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        GincTask(**{field: value}).validate()


@pytest.mark.parametrize("field,value", [("example_lens", "1,3"), ("shots", "a"), ("shots", "2,2"),
                                         ("prompts_per_cell", 0)])
def test_invalid_settings_name_the_field(field, value):
    from minitf.config import apply_overrides

    with pytest.raises(ValueError, match=field):  # the way --set FIELD=VALUE reaches the experiment
        apply_overrides([GincSettings()], [f"{field}={value}"])[0].validate()


def test_ginc_plumbing_on_a_tiny_config(tmp_path):
    out = tmp_path / "run"
    report = run_experiment(EXPERIMENTS["ginc"], out=str(out), quiet=True, overrides=TINY)
    acc = report["accuracy"]
    assert set(acc) == {"in_distribution", "out_of_distribution", "control"}
    # doc_len 41 → n_ctx 40: length 2 fits k ≤ 8 (26 tokens), length 5 fits k ≤ 2 (k=8 needs 53)
    assert report["cells"] == {"2": [0, 2, 8], "5": [0, 2]}
    for table in acc.values():
        assert set(table) == {"2", "5"} and set(table["5"]) == {"0", "2"}
        rec = table["2"]["8"]
        assert set(rec) >= {"acc", "ci95", "chance", "n"} and rec["n"] == 12
        assert rec["chance"] == pytest.approx(1 / 20)
    assert set(report["reference"]) == {"ideal_in_distribution", "ideal_out_of_distribution",
                                        "document_in_distribution", "document_out_of_distribution"}
    assert set(report["results"]) >= {"in_distribution", "out_of_distribution", "control"}
    assert set(report["targets"]["pass"]) == {"grows_with_k", "grows_with_length", "ood_far_below",
                                              "control_no_gain"}
    assert set(report["reference_gain"]) == {"2", "5"} and report["delimiter"] == "shared"
    assert os.path.exists(out / "ginc_accuracy.png")
    assert os.path.exists(out / "model-mixture.safetensors") and os.path.exists(out / "model-control.safetensors")
    with open(out / "report.json") as f:
        assert json.load(f)["accuracy"]["control"]["2"]["0"]["n"] == 12
    assert "control accuracy" in EXPERIMENTS["ginc"].summary(report)


@pytest.mark.slow
def test_ginc_mixture_learns_the_concepts_and_ood_stays_below(tmp_path):
    """~40 s: 400 steps on 67-token blocks. The mixture model learns the in-distribution concepts
    (length-5 zero-shot far above chance and above the single-concept control) and OOD concepts
    stay below them. ICL gain with k is *not* asserted: this model does not show it (docs/ginc.md)."""
    report = run_experiment(EXPERIMENTS["ginc"], out=str(tmp_path / "run"), quiet=True,
                            overrides=["steps=400", "control_steps=150", "doc_len=67", "eval_every=0",
                                       "checkpoint_every=0", "prompts_per_cell=150", "example_lens=2,5",
                                       "shots=0,4,8"])
    acc = report["accuracy"]
    ind, ood, ctrl = (acc[c]["5"] for c in ("in_distribution", "out_of_distribution", "control"))
    assert ind["0"]["acc"] >= 0.6  # chance 0.05
    assert ind["0"]["acc"] >= ctrl["0"]["acc"] + 0.2
    assert ind["8"]["acc"] >= ood["8"]["acc"] + 0.2


@pytest.mark.parametrize("setting,match", [("control_concept=7", "control_concept"), ("example_lens=200", "fits"),
                                           ("shots=500", "fits")])
def test_settings_that_cannot_run_together_are_refused_before_any_folder(tmp_path, setting, match):
    from minitf.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        run_experiment(EXPERIMENTS["ginc"], out=str(tmp_path / "run"), quiet=True, overrides=[setting])
    assert not (tmp_path / "run").exists()
