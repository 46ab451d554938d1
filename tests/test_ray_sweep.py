"""Sweeps of many runs (``--seeds`` / ``--sweep`` / ``--grid``, on Ray with ``--workers``): the
same reports as each run alone, skip + resume after a kill, and one line per bad cell or failed
run. One local Ray (2 CPUs) serves the whole module; the runs are tiny."""
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from minitf import runs
from minitf.errors import ConfigError, RunExistsError
from minitf.runs.grid import parse_grid
from minitf.runs.sweep import SweepError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENT = os.path.join(ROOT, "tests", "example_experiment.py") + ":FirstTokenExperiment"
TINY = ["steps=30", "batch_size=16", "log_every=1", "checkpoint_every=10", "eval_every=0", "eval_prompts=50"]
GRID = {"lr": ("3e-3", "1e-2")}


def cli(*args, env=None, prelude=""):
    code = f"{prelude}import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    return subprocess.run([sys.executable, "-c", code, os.path.join(ROOT, "train.py"), *args], cwd=ROOT,
                          env=dict(os.environ, OMP_NUM_THREADS="1", **(env or {})), capture_output=True, text=True,
                          timeout=300)


def read(path):
    with open(path) as f:
        return json.load(f)


def losses(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [(r["step"], r["loss"]) for r in map(json.loads, f) if "loss" in r]


def comparable(report):
    return {k: v for k, v in report.items() if k not in ("run_dir", "wall_s")}


def alone(out, lr, seed=0):
    """The cell run on its own, in this process, with one thread as a Ray worker has."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return runs.run(EXPERIMENT, out=str(out), seed=seed, overrides=[*TINY, f"lr={lr}"], quiet=True)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray", reason="the sweep extra (pip install -e '.[sweep]') is not installed")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_sweep_on_ray_equals_each_run_alone(ray_session, tmp_path):
    out = tmp_path / "sweep"
    result = runs.run_sweep(EXPERIMENT, out=str(out), overrides=TINY, grid=GRID, seeds=2, workers=2)
    for lr in GRID["lr"]:
        for seed in (0, 1):
            swept = read(out / f"lr={lr}" / f"seed{seed}" / "report.json")
            assert comparable(swept) == comparable(alone(tmp_path / f"alone-{lr}-{seed}", lr, seed))
        merged = read(out / f"lr={lr}" / "report.json")  # the cell's --seeds report
        assert merged["seeds"] == [0, 1] and len(merged["results"]["first_token"]["per_seed"]) == 2
    data = read(out / "sweep.json")
    assert data["grid"] == result["grid"]
    assert [row["lr"] for row in data["grid"]] == [3e-3, 1e-2] and data["axes"] == {"lr": ["3e-3", "1e-2"]}
    summary = data["cells"][0]["summary"]["results.first_token"]
    assert summary["n"] == 2 and summary["ci95"][0] <= summary["mean"] <= summary["ci95"][1]
    assert (out / "sweep-lr.png").exists() and data["failed"] == []


@pytest.mark.slow
def test_killed_sweep_restarts_skipping_finished_runs_and_resuming_the_rest(ray_session, tmp_path):
    out = tmp_path / "sweep"
    args = [EXPERIMENT, "--out", str(out), *[x for s in TINY for x in ("--set", s)], "--grid", "lr=3e-3,1e-2"]
    # in-process sweep, one run after another: writes 1-10 are cell lr=3e-3 (config, vocab, checkpoints at
    # steps 10 and 20, the phase end, report.json); the 15th is lr=1e-2's step-20 checkpoint
    killed = cli(*args, env={"MINITF_KILL_AT_WRITE": "15"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    first, second = out / "lr=3e-3", out / "lr=1e-2"
    assert (first / "report.json").exists() and (second / "trainer_state.pt").exists()
    assert not (second / "report.json").exists()
    before = (first / "report.json").read_bytes(), os.stat(first / "report.json").st_mtime_ns
    runs.run_sweep(EXPERIMENT, out=str(out), overrides=TINY, grid=GRID, workers=2)  # the same sweep, on Ray
    assert ((first / "report.json").read_bytes(), os.stat(first / "report.json").st_mtime_ns) == before
    reference = tmp_path / "alone"
    alone(reference, "1e-2")
    got, ref = losses(second), losses(reference)
    assert [s for s, _ in got] == list(range(1, 31))
    assert max(abs(a - b) for (_, a), (_, b) in zip(got, ref)) <= 1e-6
    assert comparable(read(second / "report.json")) == comparable(read(reference / "report.json"))
    # a changed setting is not silently mixed into the finished folder
    with pytest.raises(RunExistsError, match="cell lr=3e-3: .* holds a run with other settings"):
        runs.run_sweep(EXPERIMENT, out=str(out), overrides=[*TINY, "n_symbols=12"], grid=GRID)


@pytest.mark.slow
def test_a_failing_run_is_one_line_and_the_others_finish(ray_session, tmp_path, capsys):
    out = tmp_path / "sweep"
    with pytest.raises(SweepError, match=r"1 of 2 runs failed \(lr=1e30\)"):
        runs.run_sweep(EXPERIMENT, out=str(out), overrides=TINY, grid={"lr": ("3e-3", "1e30")}, workers=2)
    lines = [x for x in capsys.readouterr().out.splitlines() if "FAILED" in x]
    assert len(lines) == 1 and lines[0].split("] ", 1)[1].startswith("lr=1e30: FAILED: NonFiniteLossError")
    assert (out / "lr=3e-3" / "report.json").exists()
    data = read(out / "sweep.json")
    assert [row["lr"] for row in data["grid"]] == [3e-3] and data["failed"][0]["run"] == "lr=1e30"


@pytest.mark.parametrize("flags,needle", [
    (["--grid", "lr"], "--grid 'lr': --grid takes KEY=V1,V2"),
    (["--grid", "lr=1e-3,"], "--grid 'lr=1e-3,': --grid takes KEY=V1,V2"),
    (["--grid", "lr=1,1"], "repeats the value '1'"),
    (["--grid", "n_layer=1,2"], "--grid n_layer: unknown config key; did you mean n_layers?"),
    (["--grid", "n_heads=2,3"], "cell n_heads=3: invalid ModelConfig"),
    (["--grid", "n_layers=1,x"], "cell n_layers=x: n_layers must be of type int"),
    (["--grid", "lr=1e-3", "--set", "lr=1"], "--set lr=1 sets a key the sweep varies"),
    (["--grid", "lr=1e-3", "--sweep"], "--sweep runs the experiment's own grid"),
    (["--workers", "2"], "--workers and --ray-address run the runs of a sweep"),
    (["--seeds", "2", "--workers", "0"], "--workers must be >= 1"),
])
def test_bad_sweep_commands_are_one_line_and_write_nothing(flags, needle, tmp_path):
    r = cli(EXPERIMENT, "--out", str(tmp_path / "x"), *flags)
    assert r.returncode == 2 and needle in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "x").exists()


def test_workers_without_ray_names_the_extra(tmp_path):
    r = cli(EXPERIMENT, "--out", str(tmp_path / "x"), "--seeds", "2", "--workers", "2",
            prelude="import sys; sys.modules['ray'] = None; ")
    assert r.returncode == 2 and 'pip install -e ".[sweep]"' in r.stderr, r.stderr
    assert not (tmp_path / "x").exists()


def test_parse_grid():
    assert parse_grid(["lr=1e-3, 3e-3", "n_layers=1"]) == {"lr": ("1e-3", "3e-3"), "n_layers": ("1",)}
    with pytest.raises(ConfigError, match="given twice; put all its values in one flag: --grid lr=1,2"):
        parse_grid(["lr=1", "lr=2"])
    with pytest.raises(ConfigError, match="may not contain '/'"):
        parse_grid(["facts_file=a/b.json"])
