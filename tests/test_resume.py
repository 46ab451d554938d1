"""Resume: SIGKILL at random moments (and mid-checkpoint) or Ctrl-C, then --resume, equals a clean run;
an interrupt prints the resume command; resuming a finished run changes nothing; a damaged checkpoint's
advice is a command that works; resume errors are one line."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from snapshots import snapshot

from minitf import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = ["induction", "--seed", "5", "--set", "steps=40", "--set", "segment_len=8", "--set", "min_segment_len=3",
       "--set", "n_symbols=12", "--set", "checkpoint_every=4", "--set", "log_every=1", "--set", "eval_every=10"]


def start(args, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def cli(*args, **kw):
    # as a user's shell has it: conftest turns Triton's interpreter on for this process only
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, env=env, **kw)


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


# -- resuming a finished or damaged run, and the interrupt message ---------------------------------
def test_resuming_a_finished_run_changes_nothing(finished, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    weights = run / checkpoint.WEIGHTS
    weights.write_bytes(weights.read_bytes()[:100])  # truncated weights: a resume must not touch anything
    before = snapshot(run)
    r = cli("--resume", str(run))
    assert r.returncode == 0 and "finished" in r.stdout
    assert snapshot(run) == before


@pytest.mark.parametrize("damage", ["trainer_state", "phase_weights"])
def test_damaged_checkpoint_advice_is_a_command_that_works(tmp_path, damage):
    out = tmp_path / "run"
    args = ["induction", "--out", str(out), "--seed", "2", "--set", "steps=40", "--set", "segment_len=5",
            "--set", "min_segment_len=3", "--set", "n_symbols=8", "--set", "checkpoint_every=10"]
    r = cli(*args)
    assert r.returncode == 0
    (out / "report.json").unlink()  # as if killed after its last checkpoint
    (out / "notes.txt").write_text("keep me")
    target = out / (checkpoint.TRAINER_STATE if damage == "trainer_state" else "model-train.safetensors")
    target.write_bytes(target.read_bytes()[:50])
    before = snapshot(out)
    r = cli("--resume", str(out))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert snapshot(out) == before  # a failed resume changes nothing
    command = r.stderr.split("from scratch")[1].split(": ", 1)[1].strip()
    assert command.startswith("python train.py induction") and "--overwrite" in command
    fixed = subprocess.run([sys.executable, *command.split()[1:]], cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
    assert fixed.returncode == 0, fixed.stderr
    assert (out / "notes.txt").read_text() == "keep me"
    assert json.loads((out / "report.json").read_text())["seed"] == 2


def test_interrupt_prints_the_exact_resume_command_on_its_own_line(tmp_path):
    out = tmp_path / "run"
    p = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), "induction", "--out", str(out),
                          "--set", "steps=100000", "--set", "segment_len=5", "--set", "min_segment_len=3",
                          "--set", "n_symbols=8"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() and time.time() < deadline:
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130
    assert f"  python train.py --resume {out}" in err.splitlines()
