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


# -- settings refused where their consumer would fail, before any folder -------------------------------
@pytest.mark.parametrize("args,needle", [
    (["--set", "lr=inf"], "lr must be a finite number (got inf)"),  # used to fail at step 2
    (["--set", "lr=nan"], "lr must be a finite number (got nan)"),
    (["--set", "weight_decay=-inf"], "weight_decay must be a finite number"),
    (["--set", "init_std=inf"], "init_std must be a finite number"),
    (["--set", "min_segment_len=99999999999999999999"], "min_segment_len must be in"),  # a task field: same rule
    (["--seed", "-1"], "seed must be in 0..4294967295"),  # used to fail inside numpy after the folder existed
    (["--seed", str(2 ** 64)], "seed must be in 0..4294967295"),
    (["--set", f"seed={2 ** 32}"], "seed must be in 0..4294967295"),
    (["--seeds", "2", "--seed", str(2 ** 32 - 1)], "needs seeds 4294967295..4294967296; each must be in"),
    (["--seeds", str(10 ** 12)], "needs seeds 0..999999999999"),  # refused before a list of them is built
    (["--ensemble", "3", "--seed", str(2 ** 32 - 2)], "--ensemble 3 from seed 4294967294"),
])
def test_numbers_their_consumers_cannot_take_are_one_line(args, needle, tmp_path):
    out = tmp_path / "x"
    r = cli("induction", "--out", str(out), "--set", "steps=6", "--set", "segment_len=8", "--set", "n_symbols=8", *args)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not out.exists()


@pytest.mark.parametrize("experiment,setting,needle", [("bursty", "zipf_alpha=inf", "zipf_alpha must be a finite"),
                                                       ("bursty", "p_bursty=nan", "p_bursty must be a finite"),
                                                       ("ginc", "entity_stay=-inf", "entity_stay must be a finite")])
def test_task_settings_get_the_same_rule(experiment, setting, needle, tmp_path):
    r = cli(experiment, "--set", setting, "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "x").exists()


# -- --grid compares values as parsed ---------------------------------------------------------------------
@pytest.mark.parametrize("grid,same", [("lr=1e-3,0.001", "1e-3 and 0.001"), ("n_layers=2,1,02", "2 and 02"),
                                       ("layer_norm=true,1", "true and 1"), ("lr=3e-3,0.0030", "3e-3 and 0.0030")])
def test_grid_values_that_parse_to_the_same_setting_are_refused(grid, same, tmp_path):
    out = tmp_path / "g"
    r = cli("induction", "--grid", grid, "--out", str(out), *SMALL)
    assert r.returncode == 2 and same in r.stderr and "same model twice" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not out.exists()


def test_check_distinct_passes_different_values_and_leaves_bad_ones_to_the_run():
    from minitf.config import ModelConfig, TrainConfig
    from minitf.errors import ConfigError
    from minitf.runs.grid import check_distinct

    configs = [ModelConfig(), TrainConfig()]
    check_distinct({"lr": ("1e-3", "1e-2"), "n_layers": ("1", "2"), "steps": ("x", "y")}, configs)
    with pytest.raises(ConfigError, match="0.5 and 5e-1"):
        check_distinct({"init_std": ("0.5", "5e-1")}, configs)


# -- --facts on an experiment without facts ----------------------------------------------------------------
@pytest.mark.parametrize("experiment", ["induction", "bursty", "tests/example_experiment.py:FirstTokenExperiment"])
def test_facts_on_an_experiment_that_takes_none_says_so(experiment, tmp_path):
    out = tmp_path / "x"
    r = cli(experiment, "--facts", "examples/facts/family.json", "--out", str(out))
    assert r.returncode == 2 and "takes no facts file" in r.stderr and "headline" in r.stderr, r.stderr
    assert "facts_file" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()


# -- standard streams: closed, piped into head, without isatty -------------------------------------------
def closed(fd):
    return lambda: os.close(fd)


@pytest.mark.parametrize("fd,goes_to", [(2, "stdout"), (1, "stderr")])
def test_a_run_with_a_closed_standard_stream_finishes_and_says_where_messages_went(tmp_path, fd, goes_to):
    """The reported case: `2>&-` exited 1 with no message and a half-made folder."""
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "induction", "--out", str(out), *SMALL],
                       capture_output=True, text=True, cwd=ROOT, timeout=300, preexec_fn=closed(fd))
    assert r.returncode == 0, (r.stdout, r.stderr)
    seen = r.stdout if goes_to == "stdout" else r.stderr
    assert f"is closed; its messages go to {goes_to}" in seen and f"run folder: {out}" in seen
    assert (out / "report.json").exists()
    assert not [n for n in os.listdir(out) if n.startswith(".tmp-")]
    assert json.loads((out / "config.json").read_text())["experiment"] == "induction"  # no stray output in files


def test_an_error_with_stderr_closed_is_still_one_line_on_stdout(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "induction", "--set", "n_layer=1",
                        "--out", str(tmp_path / "x")], capture_output=True, text=True, cwd=ROOT, timeout=300,
                       preexec_fn=closed(2))
    assert r.returncode == 2 and "unknown --set key 'n_layer'" in r.stdout
    assert not (tmp_path / "x").exists()


def test_a_stream_without_isatty_is_not_a_terminal(tmp_path, monkeypatch, capsys):
    import io

    import torch

    from minitf.config import ModelConfig, TrainConfig
    from minitf.data import Batch
    from minitf.model import Transformer
    from minitf.trainer import Trainer

    class WriteOnly:  # e.g. an IDE's or a logger's stream: write and flush only
        def __init__(self):
            self.text = io.StringIO()

        def write(self, s):
            return self.text.write(s)

        def flush(self):
            pass
    for stream in (WriteOnly(), None):
        monkeypatch.setattr(sys, "stderr", stream)
        model = Transformer(ModelConfig(n_layers=1, d_model=16, n_heads=2, d_head=8, vocab_size=10, n_ctx=8))

        def batches(step):
            ids = torch.randint(1, 10, (2, 7))
            return Batch(ids[:, :-1], ids[:, 1:], torch.ones(2, 6))
        trainer = Trainer(model, TrainConfig(steps=3, batch_size=2, warmup=1, eval_every=0, checkpoint_every=0),
                          batches, str(tmp_path))
        trainer.fit()
        assert trainer.step == 3 and "phase train: steps 0..3" in capsys.readouterr().out


@pytest.mark.parametrize("args", [["--show-config"], ["--help"], ["induction", "--show-config"]])
def test_output_piped_into_head_exits_quietly(args):
    """The reported case: `python train.py --show-config | head` ended in a BrokenPipeError traceback."""
    cmd = " ".join([sys.executable, os.path.join(ROOT, "train.py"), *args]) + " | head -1; exit ${PIPESTATUS[0]}"
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert len(r.stdout.splitlines()) == 1


def test_a_run_piped_into_head_still_finishes(tmp_path):
    out = tmp_path / "run"
    cmd = " ".join([sys.executable, os.path.join(ROOT, "train.py"), "induction", "--out", str(out), *SMALL]) \
        + " | head -1; exit ${PIPESTATUS[0]}"
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert (out / "report.json").exists()


# -- --seeds / --ensemble print their means -----------------------------------------------------------------
@pytest.mark.parametrize("mode", ["--seeds", "--ensemble"])
def test_seeds_and_ensemble_print_the_means_of_a_report_without_results(mode, tmp_path):
    """The reported case: induction's merged table was empty (its means were only in report.json)."""
    out = tmp_path / "multi"
    r = cli("induction", mode, "2", "--out", str(out), *SMALL)
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "report.json").read_text())["summary"]
    table = r.stdout[r.stdout.index("mean over 2 seeds"):]
    for key in ("loss_first_repeat", "loss_second_repeat"):
        mean = summary[key]["mean"]
        line = next(x for x in table.splitlines() if x.startswith(key + " "))
        assert f"{mean:.4g}" in line, (line, mean)
    assert "wall_s" not in table
