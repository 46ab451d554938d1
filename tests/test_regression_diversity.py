"""The regression experiment's out-of-distribution curves and task-diversity block (plumbing on
a barely trained model; the baselines' side is exact, so it is checked against its own law)."""
import json
import os

import pytest

from minitf import runs
from minitf.experiments.regression.regression import OOD_BASELINES, OOD_SHIFTS
from minitf.experiments.regression.plots import plot_task_diversity, task_diversity_rows

TINY = ["d=2", "n_layers=1", "d_model=16", "n_heads=2", "d_head=8", "d_mlp=32", "steps=20", "eval_every=10",
        "checkpoint_every=20", "eval_prompts=400"]


@pytest.fixture(scope="module")
def pool_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("div") / "n_tasks=4")
    return runs.run("regression", out=out, quiet=True, overrides=[*TINY, "n_tasks=4", "noise_std=0.5"])


def test_task_diversity_block(pool_run):
    t = pool_run["task_diversity"]
    assert t["n_tasks"] == 4 and t["k"] == pool_run["n_points"] - 1
    for where in ("pool", "new"):
        for name in ("model", "ridge", "dmmse"):
            rec = t[where][name]
            assert rec["ci95"][0] <= rec["err"] <= rec["ci95"][1]
    # exact learners obey their law: on pool tasks the pool's Bayes estimator beats ridge; on new
    # tasks (w ~ N(0, I), not in the pool) ridge is the Bayes estimator and beats dMMSE
    assert t["pool"]["dmmse"]["err"] < t["pool"]["ridge"]["err"]
    assert t["new"]["ridge"]["err"] < t["new"]["dmmse"]["err"]
    # the noise floor: σ² / d = 0.125 is the least any learner can reach
    assert t["pool"]["dmmse"]["err"] > 0.125 * 0.8
    assert t["new_over_ridge"] == pytest.approx(t["new"]["model"]["err"] / t["new"]["ridge"]["err"])


def test_ood_curves_only_for_gaussian_training(pool_run, tmp_path):
    ood = pool_run["ood"]
    assert set(ood) == set(OOD_SHIFTS)
    k = str(pool_run["n_points"] - 1) if str(pool_run["n_points"] - 1) in ood["skewed"]["model"] else pool_run["n_points"] - 1
    for shift, curves in ood.items():
        assert set(curves) == {"model", *OOD_BASELINES}
        assert len(curves["model"]) == pool_run["n_points"]
    # scaling x by 2 scales y by 2: the noiseless part of every error grows, so averaging (whose
    # error is mostly signal) is worse at x_scale 2 than at 0.5
    assert ood["x_scale_2"]["averaging"][k]["err"] > ood["x_scale_0.5"]["averaging"][k]["err"]
    shifted = runs.run("regression", out=str(tmp_path / "scaled"), quiet=True,
                       overrides=[*TINY, "x_distribution=scaled", "x_scale=2"])
    assert "ood" not in shifted and "task_diversity" not in shifted


def test_task_diversity_rows_and_plot(pool_run, tmp_path):
    sweep = os.path.dirname(pool_run["run_dir"])
    runs.run("regression", out=os.path.join(sweep, "n_tasks=0"), quiet=True, overrides=[*TINY, "noise_std=0.5",
                                                                                         "ood_eval=false"])
    rows = task_diversity_rows(sweep)
    assert [r["n_tasks"] for r in rows] == [4, 0]
    assert rows[0]["model_new"] == pool_run["task_diversity"]["new"]["model"]["err"]
    assert rows[1]["model_pool"] is None and rows[1]["ridge_new"] > 0
    path = plot_task_diversity(sweep)
    assert os.path.getsize(path) > 1000
    assert plot_task_diversity(str(tmp_path)) is None
    with open(os.path.join(sweep, "n_tasks=0", "report.json")) as f:
        assert "ood" not in json.load(f)
