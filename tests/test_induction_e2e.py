"""End to end: the default induction run starts forming an induction circuit (slow, still run in CI)."""
import json

import numpy as np
import pytest

from minitf.experiments import EXPERIMENTS, run_experiment


@pytest.mark.slow
def test_induction_circuit_forms(tmp_path):
    report = run_experiment(EXPERIMENTS["induction"], out=str(tmp_path / "run"), seed=0, quiet=True)
    # measured (seed 0, 1000 steps, ~55 s): first 4.62, second 2.46 nats; best layer-0
    # previous-token 0.30, best layer-1 prefix-matching 0.36; ICL score −3.7
    assert report["loss_second_repeat"] <= 0.75 * report["loss_first_repeat"]
    s = report["scores"]
    assert max(s["previous_token"][0]) > 0.2 > max(s["previous_token"][1])
    assert max(s["prefix_matching"][1]) > 0.25 > max(s["prefix_matching"][0])
    layer, head = report["top_induction_head"]
    assert layer == 1 and s["copying"][layer][head] > 0.8
    assert report["icl_score"] < -2.0
    assert report["phase_change_step"] is not None
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    tracked = [r for r in rows if "eval" in r]
    assert len(tracked) >= 10 and np.array(tracked[-1]["eval"]["scores"]["copying"]).shape == (2, 4)
    for png in ("loss.png", "scores.png", "head_scores.png", "attention.png"):
        assert (tmp_path / "run" / png).exists()
