"""The command line: a run folder with every artifact, and one-line errors with exit code 2."""
import json
import os
import subprocess
import sys

import pytest

import minitf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--set", "steps=6", "--set", "segment_len=5", "--set", "min_segment_len=3", "--set", "n_symbols=8", "--set", "eval_every=3"]


def cli(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_run_folder_has_every_artifact_and_loads(tmp_path):
    out = tmp_path / "run"
    r = cli("induction", "--out", str(out), "--seed", "3", *SMALL)
    assert r.returncode == 0, r.stderr
    for name in ("config.json", "vocab.json", "metrics.jsonl", "model.safetensors", "report.json", "loss.png"):
        assert (out / name).exists(), name
    report = json.loads((out / "report.json").read_text())
    assert report["seed"] == 3 and report["loss_first_repeat"] > 0
    model, vocab = minitf.load(str(out))
    assert not model.training and len(vocab) == 10
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [6]  # log_every=10 → only the last step
    # refusing to overwrite an existing run, then --overwrite
    again = cli("induction", "--out", str(out), *SMALL)
    assert again.returncode == 2 and "already holds a run" in again.stderr and "--resume" in again.stderr
    assert (out / "report.json").read_text() == json.dumps(report, indent=2, sort_keys=True) + "\n"
    assert cli("induction", "--out", str(out), "--overwrite", *SMALL).returncode == 0


def test_same_seed_same_numbers(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli("induction", "--out", str(a), *SMALL).returncode == 0
    assert cli("induction", "--out", str(b), *SMALL).returncode == 0
    ra, rb = (json.loads((p / "report.json").read_text()) for p in (a, b))
    assert ra["loss_second_repeat"] == rb["loss_second_repeat"]


@pytest.mark.parametrize("args,needle", [
    (["nosuch"], "unknown experiment 'nosuch'"),
    (["--set", "n_layer=1"], "unknown --set key 'n_layer'"),
    (["--set", "steps=many"], "steps must be of type int"),
    (["--set", "d_model=130"], "d_model must equal n_heads * d_head"),
    (["--set", "vocab_size=10"], "vocab_size=10 is smaller than the task's 64 tokens"),
    (["--set", "n_ctx=50"], "n_ctx=50 is smaller than the task's sequences"),
    (["--resume", "/nonexistent/run"], "does not exist"),
])
def test_bad_input_is_one_line_exit_2(args, needle, tmp_path):
    r = cli("induction", *args, "--out", str(tmp_path / "x")) if args[0].startswith("--set") else cli(*args)
    assert r.returncode == 2
    assert needle in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "x").exists()  # nothing was created before the error


def test_resume_continues_a_finished_or_partial_run(tmp_path):
    out = tmp_path / "run"
    assert cli("induction", "--out", str(out), *SMALL).returncode == 0
    before = json.loads((out / "report.json").read_text())
    r = cli("--resume", str(out))
    assert r.returncode == 0, r.stderr
    after = json.loads((out / "report.json").read_text())
    assert after["loss_second_repeat"] == before["loss_second_repeat"]


def test_seeds_merges_results_over_seeds():
    from minitf.runs.seeds import merge as _merge

    runs = [{"c": {"s": {"acc": a, "ci95": [0, 1], "chance": 0.5, "n": 10}}} for a in (0.6, 0.7, 0.8)]
    merged = _merge(runs)["c"]["s"]
    assert merged["acc"] == pytest.approx(0.7) and merged["n"] == 30 and merged["per_seed"] == [0.6, 0.7, 0.8]
    # t(0.975, df=2) = 4.303, sd = 0.1: half-width 4.303 · 0.1 / √3
    assert merged["ci95"][1] - 0.7 == pytest.approx(4.303 * 0.1 / 3 ** 0.5, abs=1e-6)


def test_seeds_flag_runs_each_seed(tmp_path):
    out = tmp_path / "multi"
    r = cli("bursty", "--seeds", "2", "--out", str(out), "--set", "steps=3", "--set", "eval_every=0",
            "--set", "n_classes=8", "--set", "n_holdout=4")
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["seeds"] == [0, 1] and (out / "seed0" / "report.json").exists() and (out / "seed1").exists()
    assert len(report["results"]["icl"]["per_seed"]) == 2
