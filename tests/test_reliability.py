"""Crash safety: SIGKILL at random moments (and mid-checkpoint) then --resume equals a clean run."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from minitf import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = ["induction", "--seed", "5", "--set", "steps=40", "--set", "segment_len=8", "--set", "min_segment_len=3",
       "--set", "n_symbols=12", "--set", "checkpoint_every=4", "--set", "log_every=1", "--set", "eval_every=10"]


def start(args, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def losses(run_dir):
    rows = [json.loads(x) for x in open(os.path.join(run_dir, "metrics.jsonl"))]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def weights(run_dir):
    from safetensors.torch import load_file

    return load_file(os.path.join(run_dir, checkpoint.WEIGHTS))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ref") / "run")
    p = start([*RUN, "--out", out])
    assert p.wait(timeout=300) == 0, p.stderr.read()
    return out, losses(out), weights(out)


def assert_same_as_reference(out, reference):
    _, ref_losses, ref_weights = reference
    got = losses(out)
    assert [s for s, _ in got] == list(range(1, 41))  # every step logged exactly once
    for (s, a), (_, b) in zip(got, ref_losses):
        assert abs(a - b) <= 1e-6, (s, a, b)
    w = weights(out)
    for k, v in ref_weights.items():
        assert (w[k] - v).abs().max().item() <= 1e-6, k
    assert not [n for n in os.listdir(out) if n.startswith(".tmp-")]


def wait_for_step(out, step, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            if any(s >= step for s, _ in losses(out)):
                return
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            time.sleep(0.01)  # not written yet, or a line caught mid-write: look again
            continue
        time.sleep(0.01)


@pytest.mark.parametrize("kill_after_step", [0, 3, 9, 22, 37])
def test_sigkill_then_resume_matches_uninterrupted(tmp_path, reference, kill_after_step):
    out = str(tmp_path / "run")
    p = start([*RUN, "--out", out])
    if kill_after_step:
        wait_for_step(out, kill_after_step, p)
    else:  # right after the run folder appears, before the first checkpoint
        deadline = time.time() + 120
        while not os.path.exists(os.path.join(out, "vocab.json")) and time.time() < deadline:
            time.sleep(0.005)
    p.send_signal(signal.SIGKILL)
    assert p.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    r = start(["--resume", out])
    assert r.wait(timeout=300) == 0, r.stderr.read()
    assert_same_as_reference(out, reference)


@pytest.mark.parametrize("write_index", [3, 6, 9])
def test_kill_during_checkpoint_write_then_resume(tmp_path, reference, write_index):
    """Writes 1-2 are config/vocab; later ones are checkpoint files: the kill lands mid-write."""
    out = str(tmp_path / "run")
    p = start([*RUN, "--out", out], {"MINITF_KILL_AT_WRITE": str(write_index)})
    assert p.wait(timeout=300) == -signal.SIGKILL
    assert [n for n in os.listdir(out) if n.startswith(".tmp-")]  # a half-written temp file is left
    if os.path.exists(os.path.join(out, checkpoint.TRAINER_STATE)):
        checkpoint.load_trainer_state(os.path.join(out, checkpoint.TRAINER_STATE))  # never half-written
    r = start(["--resume", out])
    assert r.wait(timeout=300) == 0, r.stderr.read()
    assert_same_as_reference(out, reference)


def test_resume_errors_are_one_line(tmp_path, reference):
    out = reference[0]
    r = start(["headline", "--resume", out])
    _, err = r.communicate(timeout=120)
    assert r.returncode == 2 and "is a run of experiment 'induction', not 'headline'" in err
    assert len(err.strip().splitlines()) == 1
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "vocab.json"):
        (broken / name).write_bytes(open(os.path.join(out, name), "rb").read())
    (broken / checkpoint.TRAINER_STATE).write_bytes(b"\x80\x02garbage")
    r = start(["--resume", str(broken)])
    _, err = r.communicate(timeout=120)
    assert r.returncode == 2 and "corrupt or truncated" in err and len(err.strip().splitlines()) == 1


TINY_HEADLINE = ["headline", "--seed", "1", "--set", "n_entities=75", "--set", "n_fixed_entities=12", "--set",
                 "n_fixed_facts=10", "--set", "n_new_facts=20", "--set", "n_chain_entities=20", "--set", "d_model=32",
                 "--set", "d_head=8", "--set", "steps=20", "--set", "phase2_steps=8", "--set", "checkpoint_every=5",
                 "--set", "eval_every=10", "--set", "log_every=1", "--set", "batch_size=8",
                 "--set", "relation_steps=10"]


@pytest.mark.slow
def test_multi_phase_run_resumes_exactly(tmp_path):
    """Killed in a later phase (phase 1 and phase2 done), the resumed headline reports the same numbers."""
    ref = str(tmp_path / "ref")
    p = start([*TINY_HEADLINE, "--out", ref])
    assert p.wait(timeout=300) == 0, p.stderr.read()
    # writes: config, vocab, 2×2 phase1_relations checkpoints, its end (3), 4×2 phase-1 checkpoints,
    # phase-1 end (3), phase2 end (3), then phase2_oracle
    out = str(tmp_path / "run")
    p = start([*TINY_HEADLINE, "--out", out], {"MINITF_KILL_AT_WRITE": "23"})
    assert p.wait(timeout=300) == -signal.SIGKILL
    state = checkpoint.load_trainer_state(os.path.join(out, checkpoint.TRAINER_STATE))
    assert "phase1" in state["phases_done"] and state["phase"] != "phase1"
    r = start(["--resume", out])
    assert r.wait(timeout=300) == 0, r.stderr.read()
    a = json.load(open(os.path.join(ref, "report.json")))
    b = json.load(open(os.path.join(out, "report.json")))
    assert a["results"] == b["results"] and a["self_generation"] == b["self_generation"]
    assert [x for x in losses(out)] == [x for x in losses(ref)]


@pytest.mark.parametrize("stop_after_step", [5, 18, 29])
def test_ctrl_c_writes_a_checkpoint_and_resume_matches_uninterrupted(tmp_path, reference, stop_after_step):
    """Ctrl-C used to lose every step since the last checkpoint; now the run stops at the end of the
    step, writes one (atomically) and --resume continues from there to the same numbers. The
    checkpoints here come only every 100 steps, so what resumes is the Ctrl-C checkpoint."""
    out = str(tmp_path / "run")
    args = [a if a != "checkpoint_every=4" else "checkpoint_every=100" for a in RUN]
    p = start([*args, "--out", out])
    wait_for_step(out, stop_after_step, p)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert f"  python train.py --resume {out}" in err.splitlines()
    state = checkpoint.load_trainer_state(os.path.join(out, checkpoint.TRAINER_STATE))
    assert stop_after_step <= state["step"] < 40 and state["phases_done"] == []
    assert max(s for s, _ in losses(out)) == state["step"]  # every finished step is kept, no more
    r = start(["--resume", out])
    assert r.wait(timeout=300) == 0, r.stderr.read()
    assert_same_as_reference(out, reference)
