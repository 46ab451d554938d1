"""bench/threads_check.py's comparison on hand-made reports (the script itself is not run here:
it trains every experiment twice)."""
import copy
import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("threads_check", os.path.join(ROOT, "bench", "threads_check.py"))
threads_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(threads_check)

REPORT = {
    "experiment": "induction", "seed": 0, "wall_s": 12.5, "run_dir": "/tmp/a",
    "icl_score": -0.121, "formed": {"previous_token": [[True, False], [False, False]]},
    "ablation": {"base": 4.0494, "ablated": 4.0561, "heads": [[1, 2]]},
    "scores": {"copying": [[0.95, 0.98], [0.94, 0.86]]}, "phase_change_step": None,
}


def test_identical_reports_are_identical():
    r = threads_check.compare(REPORT, copy.deepcopy(REPORT))
    assert r["identical"] and r["n_diff"] == 0 and r["n_other"] == 0
    assert r["max_abs_diff"] is None and r["example"] is None
    assert r["numbers"] == 10  # seed, icl_score, 2 ablation floats, 2 head ids, 4 scores; not wall_s


def test_one_changed_float_is_reported_with_its_path_and_difference():
    b = copy.deepcopy(REPORT)
    b["scores"]["copying"][1][0] = 0.94 + 3e-7
    r = threads_check.compare(REPORT, b)
    assert not r["identical"] and r["n_diff"] == 1 and r["n_other"] == 0
    assert r["example"] == "scores.copying[1][0]"
    assert r["max_abs_diff"] == pytest.approx(3e-7, rel=1e-6)
    assert r["diffs"][0]["a"] == 0.94 and r["diffs"][0]["path"] == "scores.copying[1][0]"


def test_timing_keys_and_run_dir_are_ignored_at_any_depth():
    b = copy.deepcopy(REPORT)
    b["wall_s"], b["run_dir"] = 99.0, "/tmp/b"
    a = dict(REPORT, phases={"phase1": {"wall_s": 1.0, "tokens_per_s": 5e4, "member_steps_per_s": 3.0}})
    b["phases"] = {"phase1": {"wall_s": 2.0, "tokens_per_s": 7e4, "member_steps_per_s": 4.0}}
    assert threads_check.compare(a, b)["identical"]
    assert not threads_check.ignored("follow_rate") and not threads_check.ignored("loss_second_repeat")


def test_non_numeric_differences_count_separately():
    b = copy.deepcopy(REPORT)
    b["formed"]["previous_token"][0][1] = True  # a bool is not a number
    b["ablation"]["heads"].append([0, 1])
    b["phase_change_step"] = 700
    r = threads_check.compare(REPORT, b)
    assert not r["identical"] and r["n_diff"] == 0 and r["n_other"] == 3 and r["max_abs_diff"] is None
    paths = {d["path"] for d in r["other"]}
    assert paths == {"formed.previous_token[0][1]", "ablation.heads (length)", "phase_change_step"}


def test_nan_equals_nan_and_inf_is_a_difference():
    assert threads_check.compare({"x": float("nan")}, {"x": float("nan")})["identical"]
    r = threads_check.compare({"x": 1.0}, {"x": float("inf")})
    assert r["n_diff"] == 1 and r["max_abs_diff"] == float("inf")


def test_loss_rows_compared_by_phase_and_step_ignoring_throughput():
    a = [{"phase": "train", "step": 10, "loss": 4.1, "lr": 1e-3, "tokens_per_s": 5e4},
         {"phase": "train", "step": 10, "eval": {"acc": 0.5}},
         {"phase": "train", "step": 20, "loss": 4.0, "lr": 2e-3, "tokens_per_s": 6e4}]
    b = copy.deepcopy(a)
    b[0]["tokens_per_s"], b[2]["tokens_per_s"] = 1.0, 2.0
    same = threads_check.compare_losses(a, b)
    assert same["identical"] and same["rows"] == 2 and same["first_step"] is None
    b[1]["eval"]["acc"] = 0.6  # an evaluation row: not a loss row
    b[2]["loss"] = 4.0 + 5e-7
    r = threads_check.compare_losses(a, b)
    assert not r["identical"] and r["n_diff"] == 1 and r["first_step"] == "train:20"
    assert r["example"] == "train:20.loss" and r["max_abs_diff"] == pytest.approx(5e-7, rel=1e-6)


def test_table_and_result_are_json():
    result = {"experiment": "induction", "identical": False, "report": threads_check.compare(REPORT, REPORT),
              "losses": {**threads_check.compare_losses([], []), "first_step": None}}
    json.dumps(result, default=str)
    assert "| induction | no | 0 / 10 |" in threads_check.table([result])
