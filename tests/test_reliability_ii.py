"""Reliability II: each fault class found from peers' bug reports and a newcomer's first hour,
with the reported input and others of its kind; the expected value is the right behaviour."""
import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest
import torch
from snapshots import snapshot

from minitf import checkpoint
from minitf.config import ModelConfig, TrainConfig
from minitf.data import Batch, Vocab
from minitf.errors import CheckpointError, ConfigError, InputError, NonFiniteLossError
from minitf.hooks import hooks, run_with_cache
from minitf.model import Transformer
from minitf.trainer import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--set", "steps=6", "--set", "segment_len=5", "--set", "min_segment_len=3", "--set", "n_symbols=8",
         "--set", "eval_every=3"]


def cli(*args, **kw):
    # as a user's shell has it: conftest turns Triton's interpreter on for this process only
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, env=env, **kw)




# -- 1. a misspelled hook name never silently does nothing ---------------------------------------
@pytest.mark.parametrize("names", [["blocks.0.attn.hook_z", "blocks.0.hook_mlp_outt"], "blocks.0.attn.hook_pattrn",
                                   ["blocks.1.hook_resid_post", "blocks.9.hook_resid_post"], ["hook_embedd"]])
def test_every_misspelled_hook_name_raises_with_the_nearest(tiny_cfg, names):
    model = Transformer(tiny_cfg)
    tokens = torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(InputError, match="no hook point named") as err:
        with hooks(model, [(names, lambda a, h: None)]):
            model(tokens)
    assert "did you mean" in str(err.value) or "available" in str(err.value)
    with pytest.raises(InputError, match="no hook point named"):
        run_with_cache(model, tokens, names_filter=names)


def test_valid_names_and_callable_filters_work(tiny_cfg):
    model = Transformer(tiny_cfg)
    tokens = torch.zeros(1, 3, dtype=torch.long)
    _, cache = model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_pattern")
    assert list(cache) == ["blocks.0.attn.hook_pattern"]
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("nothing_matches"))
    assert cache == {}  # a filter function is taken as is, even when it matches nothing


def test_hooks_that_cannot_fire_are_not_listed():
    cfg = ModelConfig(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=0, conv_kernel=0, positional="rope",
                      vocab_size=10, n_ctx=8)
    model = Transformer(cfg)
    _, cache = model.run_with_cache(torch.zeros(1, 4, dtype=torch.long))
    assert not [n for n in cache if "mlp" in n or "conv" in n or n == "hook_pos_embed"]
    for missing in ("blocks.0.hook_mlp_out", "blocks.0.hook_conv_out", "hook_pos_embed"):
        with pytest.raises(InputError, match=missing.replace(".", r"\.")):
            with hooks(model, [(missing, lambda a, h: None)]):
                pass


# -- 2. weights of a compiled (or DDP-wrapped) model load into a plain one ----------------------
def test_compiled_model_weights_load_into_plain_model(tiny_cfg, tmp_path):
    model = Transformer(tiny_cfg)
    compiled = torch.compile(model, backend="eager")
    path = tmp_path / "w.safetensors"
    checkpoint.save_weights(compiled, path)
    fresh = Transformer(tiny_cfg)
    checkpoint.load_weights(fresh, path)
    tokens = torch.randint(0, tiny_cfg.vocab_size, (2, 7))
    assert torch.equal(fresh(tokens), model(tokens))


@pytest.mark.parametrize("prefix", ["_orig_mod.", "module.", "module._orig_mod."])
def test_files_that_kept_a_wrapper_prefix_still_load(tiny_cfg, tmp_path, prefix):
    from safetensors.torch import save_file

    model = Transformer(tiny_cfg)
    save_file({prefix + k: v.contiguous().clone() for k, v in model.state_dict().items()}, tmp_path / "w.safetensors")
    fresh = Transformer(tiny_cfg)
    checkpoint.load_weights(fresh, tmp_path / "w.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
    checkpoint.load_weights(torch.compile(Transformer(tiny_cfg), backend="eager"), tmp_path / "w.safetensors")


def _batches(cfg, n=4, seq=8):
    gen = torch.Generator().manual_seed(1)

    def batch(step):
        ids = torch.randint(1, cfg.vocab_size, (n, seq + 1), generator=gen)
        return Batch(ids[:, :-1], ids[:, 1:], torch.ones(n, seq))
    return batch


def test_trainer_runs_a_compiled_model_end_to_end(tiny_cfg, tmp_path):
    torch.manual_seed(0)
    model = torch.compile(Transformer(tiny_cfg), backend="eager")
    cfg = TrainConfig(steps=4, batch_size=4, warmup=1, checkpoint_every=2, eval_every=0)
    trainer = Trainer(model, cfg, _batches(tiny_cfg), str(tmp_path), phase="train")
    trainer.fit()
    state = checkpoint.load_trainer_state(tmp_path / checkpoint.TRAINER_STATE)
    assert not [k for k in state["model"] if k.startswith("_orig_mod.")]
    plain = Transformer(tiny_cfg)
    checkpoint.load_weights(plain, tmp_path / checkpoint.WEIGHTS)
    resumed = Trainer(torch.compile(Transformer(tiny_cfg), backend="eager"), cfg, _batches(tiny_cfg),
                      str(tmp_path), phase="train")
    resumed.restore(state)
    assert resumed.step == 4


# -- 3. a non-finite gradient is never applied, whatever the clip setting ----------------------
@pytest.mark.parametrize("clip", [0.0, 1.0])
def test_inf_gradient_under_finite_loss_is_caught_before_the_step(tiny_cfg, tmp_path, clip):
    torch.manual_seed(0)
    model = Transformer(tiny_cfg)
    model.blocks[0].attn.out.weight.register_hook(lambda g: g * float("inf"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(steps=3, batch_size=4, warmup=1, grad_clip=clip, checkpoint_every=1, eval_every=0)
    trainer = Trainer(model, cfg, _batches(tiny_cfg), str(tmp_path), phase="train")
    with pytest.raises(NonFiniteLossError, match="step 1"):
        trainer.fit()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not (tmp_path / checkpoint.TRAINER_STATE).exists()


def test_a_checkpoint_never_holds_non_finite_weights(tiny_cfg, tmp_path):
    model = Transformer(tiny_cfg)
    with torch.no_grad():
        model.embed.weight[0, 0] = float("nan")
    trainer = Trainer(model, TrainConfig(steps=1), _batches(tiny_cfg), str(tmp_path))
    with pytest.raises(NonFiniteLossError, match="nothing was saved"):
        trainer.save_checkpoint([])
    assert not os.listdir(tmp_path)


def test_ensemble_checks_before_it_steps(tiny_cfg):
    from minitf.ensemble import Ensemble, train_ensemble

    def make(seed):
        torch.manual_seed(seed)
        return Transformer(tiny_cfg)
    ensemble = Ensemble(make, [0, 1])
    before = {k: v.detach().clone() for k, v in ensemble.params.items()}
    ensemble.params["blocks.0.attn.out.weight"].register_hook(lambda g: g * float("inf"))
    cfg = TrainConfig(steps=2, batch_size=4, warmup=1, grad_clip=0.0)
    with pytest.raises(NonFiniteLossError, match="no update was applied"):
        train_ensemble(ensemble, cfg, [_batches(tiny_cfg), _batches(tiny_cfg)])
    assert all(torch.equal(before[k], v.detach()) for k, v in ensemble.params.items())


# -- 4. a backend's limits are checked at config time; auto picks a backend that can run -------
@pytest.mark.parametrize("d_model,n_heads,d_head", [(48, 2, 24), (40, 2, 20), (96, 1, 96)])
def test_triton_head_sizes_it_cannot_run_are_config_errors(d_model, n_heads, d_head):
    with pytest.raises(ConfigError, match="triton"):
        ModelConfig(d_model=d_model, n_heads=n_heads, d_head=d_head, attn_impl="triton").validate()
    ModelConfig(d_model=d_model, n_heads=n_heads, d_head=d_head, attn_impl="auto").validate()


def test_auto_falls_back_to_sdpa_for_shapes_the_kernel_cannot_run(caplog):
    from minitf.attention import resolve_impl

    assert resolve_impl("auto", torch.device("cuda"), 24) == "sdpa"
    assert resolve_impl("auto", torch.device("cuda"), 24) == "sdpa"
    assert sum("uses sdpa" in r.message for r in caplog.records) <= 1  # said once, not per call
    assert resolve_impl("auto", torch.device("cpu"), 64) == "sdpa"


def test_explicit_triton_on_cpu_without_interpreter_writes_nothing_then_the_fix_runs(tmp_path):
    out = tmp_path / "run"
    r = cli("induction", "--out", str(out), "--set", "attn_impl=triton", *SMALL)
    assert r.returncode == 2 and "TRITON_INTERPRET=1" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()
    assert cli("induction", "--out", str(out), *SMALL).returncode == 0


# -- 6. run folders: a user's work is never lost, a failed command never blocks the fix ---------
def test_out_pointing_at_a_file_is_one_clear_error(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    r = cli("induction", "--out", str(f), *SMALL)
    assert r.returncode == 2 and "is an existing file" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert f.read_text() == "mine"


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("fin") / "run"
    r = cli("induction", "--out", str(out), *SMALL)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"run folder: {out}")  # printed when the run starts
    return out


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


def test_artifacts_are_readable_by_collaborators(finished):
    umask = os.umask(0)
    os.umask(umask)
    want = 0o666 & ~umask
    for name in ("config.json", "vocab.json", "model.safetensors", "report.json", "trainer_state.pt", "loss.png"):
        assert stat.S_IMODE(os.stat(finished / name).st_mode) == want, name


def test_progress_is_printed_when_output_is_not_a_terminal(tmp_path):
    r = cli("induction", "--out", str(tmp_path / "run"), *SMALL)
    assert "phase train: steps 0..6" in r.stdout and "phase train: eval at step 3" in r.stdout


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


@pytest.mark.parametrize("d_model,n_heads,d_head", [(128, 3, 32), (128, 3, 42), (100, 8, 16)])
def test_suggested_head_fix_is_itself_valid(d_model, n_heads, d_head):
    import re

    with pytest.raises(ConfigError) as err:
        ModelConfig(d_model=d_model, n_heads=n_heads, d_head=d_head).validate()
    for key, value in re.findall(r"set (\w+)=(\d+)", str(err.value)):
        fixed = {**dict(d_model=d_model, n_heads=n_heads, d_head=d_head), key: int(value)}
        assert fixed["d_model"] == fixed["n_heads"] * fixed["d_head"], (key, value)


# -- also: padding and one-line errors -----------------------------------------------------------
def test_left_padding_with_a_mask_and_right_padding_are_exact(tiny_cfg):
    model = Transformer(tiny_cfg).eval()
    model.vocab = Vocab([f"t{i}" for i in range(tiny_cfg.vocab_size - 1)])
    prompt = torch.tensor([[3, 4, 5, 6]])
    left = model(torch.tensor([[0, 0, 3, 4, 5, 6]]), attention_mask=torch.tensor([[0, 0, 1, 1, 1, 1]]))
    assert torch.allclose(left[:, 2:], model(prompt), atol=1e-6)
    padded = model(torch.tensor([[3, 4, 5, 6, 0, 0]]))  # right padding: earlier positions unchanged
    assert torch.allclose(padded[:, :4], model(prompt), atol=1e-6)


def test_generate_rejects_bad_arguments_and_stops_rows_separately(tiny_cfg):
    model = Transformer(tiny_cfg).eval()
    prompt = torch.tensor([[1, 2], [3, 4]])
    with pytest.raises(InputError, match="max_new_tokens"):
        model.generate(prompt, -1)
    with pytest.raises(InputError, match="temperature"):
        model.generate(prompt, 2, temperature=-0.5)
    first = model.generate(prompt, 1)[:, -1]
    out = model.generate(prompt, 5, stop_token=int(first[0]))
    assert (out[0, 2:] == first[0]).all()  # row 0 stopped at once and repeats its stop token


def test_corrupt_weights_in_a_run_folder_is_a_checkpoint_error(finished, tmp_path):
    import shutil

    import minitf

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / checkpoint.WEIGHTS).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        minitf.load(run)
