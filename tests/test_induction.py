"""The induction experiment's verdicts, printed summary and plot titles: a head is judged per
position, on the positions training covered, and never called absent where it works."""
import os

import numpy as np
import pytest

import minitf
from minitf.errors import InputError
from minitf.experiments.circuits.induction import InductionExperiment, ablation_sentence, phase_sentence, top_head
from minitf.experiments.circuits.plots import head_title, plot_position_scores
from minitf.probes import (all_scores, head_verdicts, position_range, repeated_random_tokens,
                           score_curves)

FIXTURE = os.path.join(os.path.dirname(__file__), "data", "induction_run")  # 1500 steps, seed 0


@pytest.fixture(scope="module")
def fixture_report():
    """The report keys the experiment writes, computed on the stored trained run."""
    model, vocab = minitf.load(FIXTURE)
    symbols = [i for i, t in enumerate(vocab.tokens) if t.startswith("t")]
    probe = repeated_random_tokens(np.random.default_rng(1), symbols, 16, 63, bos_id=vocab.index["<bos>"])[:, :-1]
    scores = all_scores(model, probe, 63, start=1)
    curves = score_curves(model, probe, 63, start=1)
    return {"scores": scores, "score_curves": curves, "trained_positions": [0, 125], **head_verdicts(curves, 126),
            "top_induction_head": top_head(scores["prefix_matching"], min_layer=1),
            "top_previous_token_head": top_head(scores["previous_token"]), "phase_change_step": 700,
            "ablation": {"heads": [[1, 0], [1, 1], [1, 2]], "base": 1.01, "ablated": 4.88, "delta": 3.87}}


def test_a_previous_token_head_that_works_at_early_positions_is_called_formed(fixture_report):
    """The new user's run: L0H1 attends to i−1 with ~0.99 up to position ≈ 61 and 0.00 from 64 on, a
    mean of 0.48 over the 125 probe positions. It formed, and the report says where it works."""
    r = fixture_report
    layer, head = r["top_previous_token_head"]
    assert layer == 0 and r["scores"]["previous_token"][layer][head] < 0.5  # the mean that misled the title
    first, last = r["position_range"]["previous_token"][layer][head]
    assert first <= 2 and 50 <= last <= 63
    curve = np.asarray(r["score_curves"]["previous_token"]["score"][layer][head])
    positions = np.asarray(r["score_curves"]["previous_token"]["positions"])
    assert curve[(positions >= 2) & (positions <= 50)].min() > 0.9 and curve[positions >= 64].max() < 0.05
    assert r["formed"]["previous_token"][layer][head]
    assert "no previous-token head" not in head_title(r, "previous-token", "previous_token", [layer, head])
    assert f"positions {first}–{last}" in head_title(r, "previous-token", "previous_token", [layer, head])
    # the layer-1 heads attend to <bos> (i − 1 only at position 1): not previous-token heads
    assert not any(r["formed"]["previous_token"][1]) and r["position_range"]["previous_token"][1] == [None] * 4


def test_curves_average_to_the_reported_scores(fixture_report):
    for name in ("previous_token", "prefix_matching", "duplicate_token"):
        means = np.asarray(fixture_report["score_curves"][name]["score"]).mean(-1)
        np.testing.assert_allclose(means, fixture_report["scores"][name], atol=1e-4)


@pytest.mark.parametrize("curve,expected", [
    ([0.98] * 56 + [0.0] * 69, [1, 56]),  # works early, not late
    ([1.0] + [0.02] * 124, None),  # attends to <bos>: position 1 alone is no range
    ([0.2] * 30 + [0.6, 0.55, 0.49, 0.62, 0.58, 0.51, 0.47, 0.6, 0.57, 0.56, 0.61, 0.53] + [0.1] * 83, [31, 42]),
    ([0.9] * 5 + [0.0] * 10 + [0.8] * 20 + [0.0] * 90, [16, 35]),  # the longest run, if ≥ MIN_RUN long
])
def test_position_range_is_the_longest_run_where_the_head_works(curve, expected):
    positions = list(range(1, len(curve) + 1))
    assert position_range(curve, positions) == expected


def test_formed_is_judged_on_the_positions_training_covered():
    positions = list(range(1, 101))
    works_late = [0.0] * 60 + [0.95] * 40  # only at positions 61..100
    works_early = [0.95] * 40 + [0.0] * 60
    curves = {"previous_token": {"positions": positions, "score": [[works_late, works_early]]}}
    covered = head_verdicts(curves, 101)
    assert covered["formed"]["previous_token"] == [[True, True]]
    assert covered["position_range"]["previous_token"] == [[[61, 100], [1, 40]]]
    short = head_verdicts(curves, 51)  # training sequences of 51 tokens: positions 0..50
    assert short["formed"]["previous_token"] == [[False, True]]
    assert short["position_range"]["previous_token"] == [[None, [1, 40]]]
    assert short["score_trained"]["previous_token"][0][1] == pytest.approx(0.95 * 40 / 50, abs=1e-4)


def test_score_curves_need_a_query_position(tiny_cfg):
    model = minitf.Transformer(tiny_cfg)
    with pytest.raises(InputError, match="no query position for prefix_matching"):
        score_curves(model, repeated_random_tokens(np.random.default_rng(0), list(range(1, 9)), 2, 6)[:, :6], 6, 0)


@pytest.mark.parametrize("phase_step,expected", [(None, "No phase change"), (700, "Phase change at step 700")])
def test_the_phase_change_is_a_sentence_never_none(phase_step, expected):
    text = phase_sentence({"phase_change_step": phase_step})
    assert text.startswith(expected) and "None" not in text and text.endswith(".")


def test_the_ablation_is_one_or_two_clean_sentences(fixture_report):
    formed = ablation_sentence(fixture_report)
    assert formed == "Ablating the induction heads L1H0, L1H1, L1H2: second-repeat loss 1.010 → 4.880 nats/token."
    untrained = {**fixture_report, "formed": {**fixture_report["formed"], "prefix_matching": [[False] * 4] * 2},
                 "ablation": {"heads": [[1, 1]], "base": 4.089, "ablated": 4.092, "delta": 0.003}}
    text = ablation_sentence(untrained)
    assert text == ("No induction head formed (prefix-matching ≤ 0.5). Ablating the best candidate, L1H1: "
                    "second-repeat loss 4.089 → 4.092 nats/token.")
    assert ";" not in text and "ablating no" not in text.lower()


def test_the_printed_summary_has_no_spliced_or_empty_lines(fixture_report):
    report = {**fixture_report, "architecture": "2 layers", "loss_first_repeat": 4.45, "loss_second_repeat": 1.01,
              "icl_score": -3.8, "phase_change_step": None}
    text = InductionExperiment().summary(report)
    assert "None" not in text and "at step None" not in text
    assert "Previous-token heads: L0H0 (positions 1–" in text and "Induction heads: L1H" in text
    old = {k: v for k, v in report.items() if k not in ("formed", "position_range", "score_curves", "score_trained")}
    assert "None" not in InductionExperiment().summary(old)  # a report written before these keys


def test_position_scores_png_is_written(tmp_path, fixture_report):
    plot_position_scores(str(tmp_path), fixture_report)
    assert (tmp_path / "position_scores.png").read_bytes()[:4] == b"\x89PNG"
    plot_position_scores(str(tmp_path / "missing"), {"scores": {}})  # an old report: nothing to draw, no error


def test_an_untrained_model_has_no_formed_head(tiny_cfg):
    """Near-uniform attention: 1/(i+1) at position i, above 0.5 only at position 1 — no run."""
    from dataclasses import replace

    model = minitf.Transformer(replace(tiny_cfg, n_ctx=32)).eval()
    probe = repeated_random_tokens(np.random.default_rng(0), list(range(1, 20)), 8, 15, bos_id=0)[:, :-1]
    verdicts = head_verdicts(score_curves(model, probe, 15, start=1), 30)
    for name in ("previous_token", "prefix_matching", "duplicate_token"):
        assert not np.any(verdicts["formed"][name]), name
        assert all(r is None for layer in verdicts["position_range"][name] for r in layer)
