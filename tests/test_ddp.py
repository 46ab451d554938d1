"""One model on two processes: ``torchrun --nproc_per_node 2 train.py ...`` (gloo, CPU) trains the
same model as one process (loss curve within 1e-5), writes its files from rank 0 only, and
resumes after a SIGKILL like a single run does."""
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from minitf.data import Batch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENT = os.path.join(ROOT, "tests", "example_experiment.py") + ":FirstTokenExperiment"
TINY = ["--seed", "2", "--set", "steps=30", "--set", "batch_size=16", "--set", "log_every=1",
        "--set", "checkpoint_every=10", "--set", "eval_every=10", "--set", "eval_prompts=50"]
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def train(*args, nproc=1, env=None, timeout=300):
    launcher = [sys.executable] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    return subprocess.run([*launcher, os.path.join(ROOT, "train.py"), EXPERIMENT, *args], cwd=ROOT,
                          env=dict(ENV, **(env or {})), capture_output=True, text=True, timeout=timeout)


def losses(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def report(run_dir):
    with open(os.path.join(run_dir, "report.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ddp") / "single")
    r = train("--out", out, *TINY)
    assert r.returncode == 0, r.stderr
    return out


def assert_same_run(out, single, tol=1e-5):
    got, ref = losses(out), losses(single)
    assert [s for s, _ in got] == list(range(1, 31)), "every step logged exactly once"
    worst = max(abs(a - b) for (_, a), (_, b) in zip(got, ref))
    assert worst <= tol, f"2-process loss curve differs from 1 process by {worst}"
    w, ref_w = load_file(os.path.join(out, "model.safetensors")), load_file(os.path.join(single, "model.safetensors"))
    assert max((w[k] - v).abs().max().item() for k, v in ref_w.items()) <= 1e-4


@pytest.mark.slow
def test_two_gloo_processes_train_like_one_and_only_rank0_writes(single, tmp_path):
    out = str(tmp_path / "ddp")
    r = train("--out", out, *TINY, nproc=2)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_same_run(out, single)
    assert sorted(os.listdir(out)) == sorted(os.listdir(single))  # the same artifacts, nothing per rank
    a, b = report(out), report(single)
    assert a["results"] == b["results"] and a["architecture"] == b["architecture"]
    assert r.stdout.count("run folder:") == 2, r.stdout  # printed by rank 0 only (start and end)
    evals = [json.loads(x) for x in open(os.path.join(out, "metrics.jsonl")) if '"eval"' in x]
    assert [e["step"] for e in evals] == [10, 20, 30]  # rank 1's evaluations are not logged


@pytest.mark.slow
def test_sigkill_under_ddp_then_resume_under_ddp(single, tmp_path):
    out = str(tmp_path / "killed")
    # rank 0's 5th atomic write is the step-20 checkpoint (1-2 config/vocab, 3-4 step 10)
    r = train("--out", out, *TINY, nproc=2, env={"MINITF_KILL_AT_WRITE": "5"})
    assert r.returncode != 0 and not os.path.exists(os.path.join(out, "report.json"))
    resumed = train("--resume", out, nproc=2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(out, single)


def test_batch_shards_partition_the_global_batch():
    inputs = torch.arange(10 * 3).view(10, 3)
    batch = Batch(inputs, inputs + 1, torch.ones(10, 3))
    shards = [batch.shard(r, 3) for r in range(3)]
    assert sorted(torch.cat([s.inputs for s in shards])[:, 0].tolist()) == inputs[:, 0].tolist()
    with pytest.raises(ValueError, match="batch_size"):
        batch.shard(0, 11)


def test_too_small_global_batch_is_one_line(tmp_path):
    r = train("--out", str(tmp_path / "x"), "--set", "batch_size=1", nproc=2)
    assert r.returncode != 0
    assert "error: batch_size=1 is the global batch, split over 2 processes" in r.stderr
    assert r.stderr.count("error: batch_size=1") == 1  # said once, by rank 0
    assert not (tmp_path / "x").exists()


def test_sweeps_refuse_torchrun(monkeypatch):
    from minitf.errors import ConfigError
    from minitf.runs import run_ensemble, run_seeds, run_sweep

    monkeypatch.setenv("WORLD_SIZE", "2")
    for start in (lambda: run_sweep(EXPERIMENT, grid={"lr": ("1e-3",)}), lambda: run_seeds(EXPERIMENT, 2),
                  lambda: run_ensemble(EXPERIMENT, 2)):
        with pytest.raises(ConfigError, match="cannot run under torchrun"):
            start()
