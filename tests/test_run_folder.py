"""The run folder: every JSON file parses strictly, one writer at a time, a config that cannot fit in
memory is refused before the folder exists, a user's own files are never lost (--out at a file,
--overwrite), artifacts are readable by collaborators, and progress is printed without a terminal."""
import json
import math
import os
import re
import signal
import stat
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from snapshots import snapshot

from minitf import checkpoint
from minitf.config import ModelConfig, TrainConfig
from minitf.data import Batch
from minitf.errors import ConfigError
from minitf.fileio import atomic_write_json, lock_run_folder, to_json, unlock_run_folder
from minitf.model import Transformer
from minitf.trainer import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--set", "segment_len=5", "--set", "min_segment_len=3", "--set", "n_symbols=8"]
SMALL = ["--set", "steps=6", "--set", "segment_len=5", "--set", "min_segment_len=3", "--set", "n_symbols=8",
         "--set", "eval_every=3"]


def cli(*args, **kw):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, env=env, **kw)


def strict(text: str):
    """json.loads that refuses NaN / Infinity / -Infinity, as JSON itself does."""
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)




# -- 3. every JSON file minitf writes parses with a strict parser ---------------------------------------
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), np.float64("nan"), np.float32("inf")])
def test_the_json_writer_writes_null_for_non_finite_values(tmp_path, value):
    data = {"a": value, "nested": {"list": [1.0, value, (value, 2)]}, "ok": 0.5, "n": 3, "s": "x", "b": True}
    atomic_write_json(tmp_path / "r.json", data)
    back = strict((tmp_path / "r.json").read_text())
    assert back == {"a": None, "nested": {"list": [1.0, None, [None, 2]]}, "ok": 0.5, "n": 3, "s": "x", "b": True}
    assert strict(to_json(data)) == back


def test_metrics_of_a_skipped_non_finite_step_parse_strictly(tmp_path):
    """The reported case: metrics.jsonl held a bare NaN after --skip-nonfinite skipped a step."""
    cfg = ModelConfig(n_layers=1, d_model=16, n_heads=2, d_head=8, vocab_size=10, n_ctx=8)
    torch.manual_seed(0)
    model = Transformer(cfg)
    calls = {"n": 0}

    def poison(module, inputs, output):  # step 2 gives NaN logits, step 3 inf ones
        calls["n"] += 1
        return output * {2: float("nan"), 3: float("inf")}.get(calls["n"], 1.0)
    model.register_forward_hook(poison)
    gen = torch.Generator().manual_seed(0)

    def batches(step):
        ids = torch.randint(1, 10, (4, 7), generator=gen)
        return Batch(ids[:, :-1], ids[:, 1:], torch.ones(4, 6))
    train = TrainConfig(steps=5, batch_size=4, warmup=1, log_every=1, eval_every=0, checkpoint_every=0,
                        skip_nonfinite=2)
    trainer = Trainer(model, train, batches, str(tmp_path), evaluate=lambda m, step: {"nan": float("nan"), "x": 1.0})
    trainer.fit()
    rows = [strict(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    skipped = [r for r in rows if "skipped_nonfinite" in r]
    assert [r["step"] for r in skipped] == [2, 3] and all(r["skipped_nonfinite"] is None for r in skipped)
    assert [r["eval"] for r in rows if "eval" in r] == [{"nan": None, "x": 1.0}]


def test_weights_metadata_is_strict_json(tmp_path):
    cfg = ModelConfig(n_layers=1, d_model=16, n_heads=2, d_head=8, vocab_size=10, n_ctx=8, init_std=float("inf"))
    model = Transformer(ModelConfig(n_layers=1, d_model=16, n_heads=2, d_head=8, vocab_size=10, n_ctx=8))
    model.cfg = cfg  # an unvalidated config with a non-finite value must still write strict JSON
    checkpoint.save_weights(model, tmp_path / "w.safetensors")
    data = (tmp_path / "w.safetensors").read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    meta = strict(data[8:8 + size].decode())["__metadata__"]
    assert strict(meta["config"])["init_std"] is None and strict(meta["architecture"])["d_model"] == 16


def test_a_finished_run_folder_has_only_strict_json(tmp_path):
    out = tmp_path / "run"
    r = cli("induction", "--out", str(out), "--set", "steps=4", "--set", "eval_every=2", *TINY)
    assert r.returncode == 0, r.stderr
    for name in ("config.json", "vocab.json", "report.json"):
        strict((out / name).read_text())
    for line in (out / "metrics.jsonl").read_text().splitlines():
        strict(line)


def test_every_json_writer_goes_through_the_one_helper():
    """json.dump / json.dumps write files only in minitf.fileio (to_json); user_facts uses json.dumps to
    quote an entry in a message, viz to write JavaScript into an HTML page, not a JSON file."""
    allowed = {"minitf/fileio.py", "toy_tasks/user_facts.py",
               "minitf/viz.py"}  # props inside attention.html's <script>: JavaScript, not a JSON file
    offenders = []
    for folder in ("minitf", "toy_tasks"):
        for dirpath, _, names in os.walk(os.path.join(ROOT, folder)):
            for n in names:
                if n.endswith(".py"):
                    rel = os.path.relpath(os.path.join(dirpath, n), ROOT)
                    text = open(os.path.join(ROOT, rel), encoding="utf-8").read()
                    if re.search(r"\bjson\.dumps?\(", text) and rel not in allowed:
                        offenders.append(rel)
    assert not offenders, f"JSON written without minitf.fileio.to_json: {offenders}"


# -- 11. one writer per run folder -------------------------------------------------------------------
def test_a_second_writer_in_this_or_another_process(tmp_path):
    lock_run_folder(tmp_path)
    lock_run_folder(tmp_path)  # this process again: fine (an ensemble creates, then runs, its members)
    code = ("import sys; from minitf.fileio import lock_run_folder, RunBusyError\n"
            f"try: lock_run_folder({str(tmp_path)!r})\nexcept RunBusyError as e: print(e); sys.exit(3)")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert other.returncode == 3 and f"process {os.getpid()}" in other.stdout
    unlock_run_folder(tmp_path)
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60).returncode == 0


def start(args):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_resume_or_overwrite_of_a_run_still_training_is_refused_and_a_killed_run_resumes(tmp_path):
    """The reported case: --resume RUN while RUN still trained, and both trained."""
    out = tmp_path / "run"
    args = ["induction", "--out", str(out), "--set", "steps=150", "--set", "checkpoint_every=5", "--set",
            "log_every=1", "--set", "eval_every=0", *TINY]
    first = start(args)
    deadline = time.time() + 120
    while not (out / "trainer_state.pt").exists() and time.time() < deadline and first.poll() is None:
        time.sleep(0.01)
    first.send_signal(signal.SIGSTOP)  # frozen mid-run, still holding the folder
    try:
        assert first.poll() is None, "the run finished before it could be caught"
        before = snapshot(out)
        for second in (["--resume", str(out)], [*args, "--overwrite"], ["--resume", str(out)]):
            r = cli(*second)
            assert r.returncode == 2, r.stderr
            assert "is being written by another minitf process" in r.stderr and str(first.pid) in r.stderr
            assert len(r.stderr.strip().splitlines()) == 1, r.stderr
            assert snapshot(out) == before  # the second writer changed nothing
    finally:
        first.send_signal(signal.SIGKILL)
        first.send_signal(signal.SIGCONT)
        first.wait()
    r = cli("--resume", str(out))  # a SIGKILLed writer leaves no lock behind
    assert r.returncode == 0, r.stderr
    assert strict((out / "report.json").read_text())["seed"] == 0


# -- a config that cannot fit in memory ---------------------------------------------------------------
@pytest.mark.parametrize("setting,part", [("n_ctx=1000000000", "n_ctx"), ("batch_size=1000000000", "batch_size"),
                                          ("d_mlp=400000000", "d_mlp"), ("vocab_size=1000000000000000000", "vocab_size")])
def test_a_config_too_large_for_memory_is_one_line_before_any_folder(tmp_path, setting, part):
    out = tmp_path / "run"
    r = cli("induction", "--out", str(out), "--set", setting, *TINY)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    need = re.search(r"needs at least ([\d,.]+) GiB", r.stderr)
    assert need and float(need.group(1).replace(",", "")) > 24 and "GiB" in r.stderr and part in r.stderr
    assert not out.exists()


def test_the_estimate_is_a_lower_bound_that_passes_ordinary_configs():
    from minitf.runs.folder import check_memory, memory_estimate

    cfg = ModelConfig(n_layers=2, d_model=64, n_heads=4, d_head=16, vocab_size=64, n_ctx=128)
    est = memory_estimate(cfg, TrainConfig(batch_size=32), 127)
    n_params = sum(p.numel() for p in Transformer(cfg).parameters())
    assert est["params"] == n_params and est["bytes"] >= 16 * n_params
    check_memory(cfg, TrainConfig(batch_size=32), 127)  # fits
    with pytest.raises(ConfigError, match="needs at least"):
        check_memory(cfg, TrainConfig(batch_size=2 ** 40), 127)
    assert math.isfinite(est["bytes"])


def test_an_ensemble_is_checked_for_k_members_at_once():
    """``--ensemble K`` trains K members together: K times one member's memory."""
    from minitf.runs.folder import available_memory, check_memory, memory_estimate

    cfg = ModelConfig(n_layers=2, d_model=64, n_heads=4, d_head=16, vocab_size=64, n_ctx=128)
    one = memory_estimate(cfg, TrainConfig(batch_size=32), 127)["bytes"]
    have = available_memory("cpu")
    k = int(have // one) + 1  # one member fits, K of them do not
    check_memory(cfg, TrainConfig(batch_size=32), 127)
    with pytest.raises(ConfigError, match=f"{k} ensemble members"):
        check_memory(cfg, TrainConfig(batch_size=32), 127, members=k)


# -- a user's work is never lost, a failed command never blocks the fix -----------------------------
def test_out_pointing_at_a_file_is_one_clear_error(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    r = cli("induction", "--out", str(f), *SMALL)
    assert r.returncode == 2 and "is an existing file" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert f.read_text() == "mine"


def test_overwrite_replaces_only_minitfs_files(finished, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / "notes.txt").write_text("my notes")
    (run / "analysis").mkdir()
    (run / "analysis" / "plot.png").write_bytes(b"x")
    r = cli("induction", "--out", str(run), "--overwrite", *SMALL)
    assert r.returncode == 0, r.stderr
    assert (run / "notes.txt").read_text() == "my notes" and (run / "analysis" / "plot.png").exists()
    refused = cli("induction", "--out", str(run), *SMALL)
    assert refused.returncode == 2 and "keeps your own" in refused.stderr


def test_artifacts_are_readable_by_collaborators(finished):
    umask = os.umask(0)
    os.umask(umask)
    want = 0o666 & ~umask
    for name in ("config.json", "vocab.json", "model.safetensors", "report.json", "trainer_state.pt", "loss.png"):
        assert stat.S_IMODE(os.stat(finished / name).st_mode) == want, name


def test_progress_is_printed_when_output_is_not_a_terminal(tmp_path):
    r = cli("induction", "--out", str(tmp_path / "run"), *SMALL)
    assert "phase train: steps 0..6" in r.stdout and "phase train: eval at step 3" in r.stdout
