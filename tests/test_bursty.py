import os

import numpy as np
import pytest

from minitf.experiments import EXPERIMENTS
from minitf.runs import run as run_experiment
from toy_tasks.bursty import EVAL_MODES, BurstyTask

GOLDEN_FLIPPED = "<bos> c216.0 L3 c163.0 L24"  # the first flipped sequence of seed 0, as published


def test_bursty_sequences_follow_the_knobs():
    task = BurstyTask(n_classes=50, p_bursty=1.0, burstiness=3, n_pairs=8, fresh_fraction=0.0)
    rng = np.random.default_rng(0)
    for ex in task.sample(rng, 50):
        items = ex.tokens[1::2]
        query_class = items[-1].split(".")[0]
        assert sum(i.split(".")[0] == query_class for i in items[:-1]) >= 3  # bursty: in context ≥ B times
        assert len(ex.tokens) == task.seq_len and len(ex.scored) == task.n_pairs + 1
        assert all(ex.tokens[p].startswith("L") for p in ex.scored)
    nonbursty = BurstyTask(n_classes=2000, p_bursty=0.0, zipf_alpha=0.0, fresh_fraction=0.0)
    hits = sum(ex.tokens[-2].split(".")[0] in {t.split(".")[0] for t in ex.tokens[1:-2:2]}
               for ex in nonbursty.sample(rng, 200))
    assert hits < 10  # with 2000 uniform classes the query class is rarely in context


def test_fresh_sequences_use_the_holdout_pool_with_random_labels():
    task = BurstyTask(n_classes=20, n_holdout=10, fresh_fraction=1.0)
    seen = {}
    for ex in task.sample(np.random.default_rng(2), 100):
        for item, label in zip(ex.tokens[1::2], ex.tokens[2::2]):
            cls = int(item[1:].split(".")[0])
            assert cls >= 20  # holdout pool only
            seen.setdefault(cls, set()).add(label)
    assert max(len(v) for v in seen.values()) > 3  # labels are re-bound per sequence


def test_evaluation_modes():
    task = BurstyTask()
    rng = np.random.default_rng(1)
    trained = {task.item(c, e) for c in range(task.n_classes) for e in range(task.exemplars)}
    for mode in EVAL_MODES:
        for ex in task.evaluation(mode, rng, 20):
            assert ex.answer == ex.candidates[0] and ex.tokens[ex.answer_pos] == ex.answer
            items = set(ex.tokens[1::2])
            if mode in ("icl", "unseen_labels", "sul_item_tokens_holdout", "random_labels_holdout"):
                assert not items & trained  # holdout items never have a fixed label
                assert ex.answer in ex.tokens[:ex.answer_pos]  # the label is in context
            if mode == "iwl":
                query = ex.tokens[-2].split(".")[0]
                assert all(t.split(".")[0] != query for t in ex.tokens[1:-2:2])
                assert len(ex.candidates) == task.n_labels
            if mode == "flipped":
                assert items <= trained and ex.answer != task.labels()[int(ex.tokens[-2][1:].split(".")[0]) % task.n_labels]
            if mode == "unseen_labels":
                assert ex.answer.startswith("U")
            if mode == "sul_item_tokens_holdout":  # labels are item tokens of trained classes (another role)
                assert set(ex.tokens[2::2]) <= trained and set(ex.candidates) <= trained
            if mode == "sul":  # trained classes with label tokens that are not their gold labels
                gold = {task.labels()[int(it[1:].split(".")[0]) % task.n_labels] for it in items}
                assert items <= trained and set(ex.candidates) <= set(task.labels())
                assert not set(ex.candidates) & gold  # the weights' answer is not a candidate
                labels_of = {}
                for it, lab in zip(ex.tokens[1::2], ex.tokens[2::2]):
                    labels_of.setdefault(it, set()).add(lab)
                assert all(len(v) == 1 for v in labels_of.values())  # consistent within the sequence
            if mode in ("random_labels_trained", "true_labels_trained"):  # gold = the class's own label
                assert items <= trained
                assert ex.answer == task.labels()[int(ex.tokens[-2][1:].split(".")[0]) % task.n_labels]
            if mode == "true_labels_trained":
                assert all(lab == task.labels()[int(it[1:].split(".")[0]) % task.n_labels]
                           for it, lab in zip(ex.tokens[1:-2:2], ex.tokens[2:-2:2]))
            if mode.startswith("random_labels"):  # context labels from the two, not tied to the class
                assert set(ex.tokens[2:-2:2]) <= set(ex.candidates)


def test_random_labels_break_the_mapping_and_old_modes_keep_their_streams():
    task = BurstyTask()
    exs = task.evaluation("random_labels_holdout", np.random.default_rng(3), 300)
    # a demonstration shows the gold label of its class half the time
    shown = [lab == ex.answer for ex in exs for it, lab in zip(ex.tokens[1:-2:2], ex.tokens[2:-2:2])
             if it == ex.tokens[-2]]
    assert 0.4 < np.mean(shown) < 0.6
    # the evaluation sequences that published numbers came from are drawn as before (golden)
    first = task.evaluation("flipped", np.random.default_rng(0), 1)[0]
    assert " ".join(first.tokens[:5]) == GOLDEN_FLIPPED
    with pytest.raises(ValueError, match="unknown evaluation mode 'unrelated'"):
        task.evaluation("unrelated", np.random.default_rng(0), 1)


def test_invalid_bursty_config():
    with pytest.raises(ValueError, match="2\\*burstiness <= n_pairs"):
        BurstyTask(burstiness=5, n_pairs=8).validate()


@pytest.mark.slow
def test_bursty_run_reports_every_mode(tmp_path):
    report = run_experiment(EXPERIMENTS["bursty"], out=str(tmp_path / "run"), quiet=True,
                            overrides=["steps=300", "eval_every=100", "n_classes=64"])
    assert set(report["results"]) == set(EVAL_MODES)
    assert report["results"]["iwl"]["acc"] >= 0.9  # 64 classes are memorized within 300 steps
    assert report["results"]["iwl"]["chance"] == pytest.approx(1 / 32)
    assert set(report["ablation"]) >= {"heads", "icl_acc"}
    assert np.array(report["scores"]["prefix_matching"]).shape == (2, 4)
    # the weights answer trained classes: random labels in context cost little (Min et al. 2022)
    res = report["results"]
    assert res["true_labels_trained"]["acc"] >= 0.9
    assert res["true_labels_trained"]["acc"] - res["random_labels_trained"]["acc"] <= 0.1
    assert res["flipped"]["follow_rate"] == res["flipped"]["acc"]
    assert [p["step"] for p in report["follow_rate_curve"]] == [100, 200, 300]
    from minitf.experiments.circuits.bursty import follow_rate_sweep
    from minitf.experiments.circuits.plots import plot_follow_rate

    rows = follow_rate_sweep(str(tmp_path))
    assert [r["setting"] for r in rows] == [{"p_bursty": 0.9, "n_classes": 64, "fresh_fraction": 0.2,
                                             "relabel_fraction": 0.0, "step": s} for s in (100, 200, 300)]
    assert rows[-1]["follow_rate"] == res["flipped"]["acc"]
    assert os.path.getsize(plot_follow_rate(str(tmp_path), rows)) > 1000
    lab = report["labels"]
    assert lab["random_label_cost_trained"] == pytest.approx(res["true_labels_trained"]["acc"]
                                                             - res["random_labels_trained"]["acc"])
    assert lab["sul"] == res["sul"] and lab["relabel_fraction"] == 0.0


def test_label_sweep_merges_runs_by_relabel_fraction(tmp_path):
    import json

    from minitf.experiments.circuits.bursty import label_sweep

    def write(name, frac, follow, cost):
        os.makedirs(tmp_path / name)
        with open(tmp_path / name / "report.json", "w") as f:
            json.dump({"experiment": "bursty", "labels": {"relabel_fraction": frac, "follow_rate": follow,
                                                         "random_label_cost_trained": cost, "sul": {"acc": 0.6}}}, f)

    for i, (frac, follow, cost) in enumerate([(0.0, 0.0, 0.0), (0.0, 0.02, 0.01), (0.1, 0.3, 0.1), (0.1, 0.4, 0.1),
                                              (0.3, 0.6, 0.3), (0.3, 0.7, 0.2)]):
        write(f"run{i}", frac, follow, cost)
    out = label_sweep(str(tmp_path))
    rows = out["label_sweep"]
    assert [r["relabel_fraction"] for r in rows] == [0.0, 0.1, 0.3] and rows[2]["n_runs"] == 2
    assert rows[2]["follow_rate"]["mean"] == pytest.approx(0.65)
    lo, hi = rows[2]["follow_rate"]["ci95"]
    assert lo < 0.65 < hi and hi - lo == pytest.approx(2 * 12.706 * 0.05 / np.sqrt(2) * np.sqrt(2), rel=1e-3)
    assert all(out["label_targets"]["pass"].values())
    write("run9", 0.3, 0.0, 0.0)  # the largest fraction's mean falls below the middle one's (0.325 < 0.35)
    write("run10", 0.3, 0.0, 0.0)
    assert not label_sweep(str(tmp_path))["label_targets"]["pass"]["follow_rate_rises"]


def test_label_attention_scores_a_hand_set_induction_pattern():
    """A head made to attend only to the labels after earlier copies of the query item scores
    1.0; a head attending only to <bos> scores 0.0."""
    import torch

    import minitf
    from minitf.config import ModelConfig
    from minitf.data import Vocab
    from minitf.experiments.circuits.bursty import label_attention
    from minitf.model import Transformer

    task = BurstyTask(n_classes=16, n_holdout=4)
    vocab = Vocab(task.vocab_tokens())
    examples = task.evaluation("icl", np.random.default_rng(0), 20)
    torch.manual_seed(0)
    model = Transformer(ModelConfig(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=0,
                                    vocab_size=len(vocab), n_ctx=task.seq_len - 1, attn_impl="naive"))
    target = torch.zeros(len(examples), examples[0].answer_pos)
    for row, e in enumerate(examples):
        for pos in range(2, e.answer_pos - 1, 2):
            target[row, pos] = float(e.tokens[pos - 1] == e.tokens[e.answer_pos - 1])
    target /= target.sum(-1, keepdim=True)

    def set_pattern(pattern, hook=None):
        pattern = pattern.clone()
        pattern[:, 0, -1] = target  # head 0: induction; head 1: all on <bos>
        pattern[:, 1, -1] = 0.0
        pattern[:, 1, -1, 0] = 1.0
        return pattern

    with minitf.hooks(model, [("blocks.1.attn.hook_pattern", set_pattern)]):
        scores = label_attention(model, examples, vocab)
    assert scores[1][0] == pytest.approx(1.0, abs=1e-6)
    assert scores[1][1] == pytest.approx(0.0, abs=1e-6)


def test_relabel_fraction_shows_trained_classes_with_other_labels():
    """Dynamic labels (Chan et al.): with relabel_fraction > 0 a trained class appears with a
    non-gold label in training, consistently within its sequence; at 0 it never does and the
    training stream is the one earlier runs saw."""
    def off_gold(task, seed=0, n=400):
        bad, inconsistent = 0, 0
        for ex in task.sample(np.random.default_rng(seed), n):
            seen = {}
            for item, label in zip(ex.tokens[1::2], ex.tokens[2::2]):
                cls = int(item[1:].split(".")[0])
                if cls < task.n_classes:
                    bad += label != task.labels()[cls % task.n_labels]
                    inconsistent += seen.setdefault(item, label) != label
        return bad, inconsistent

    assert off_gold(BurstyTask()) == (0, 0)
    bad, inconsistent = off_gold(BurstyTask(relabel_fraction=0.3))
    assert bad > 100 and inconsistent == 0
    base = BurstyTask().sample(np.random.default_rng(7), 50)
    assert [e.tokens for e in base] == [e.tokens for e in BurstyTask(relabel_fraction=0.0).sample(
        np.random.default_rng(7), 50)]
    with pytest.raises(ValueError, match="relabel_fraction"):
        BurstyTask(relabel_fraction=1.5).validate()
