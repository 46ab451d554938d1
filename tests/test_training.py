"""Trainer, checkpoints and resume: exactness and crash safety; a non-finite loss or gradient is never
applied or saved, and a compiled model trains, checkpoints and resumes like a plain one."""
import dataclasses
import os
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch

from minitf import checkpoint
from minitf.config import ModelConfig, TrainConfig
from minitf.data import Vocab, collate
from minitf.errors import CheckpointError, CheckpointNotFoundError, NonFiniteLossError
from minitf.model import Transformer
from minitf.trainer import Trainer, lr_at
from toy_tasks.induction import InductionTask

TASK = InductionTask(n_symbols=10, segment_len=6, min_segment_len=3)
VOCAB = Vocab(TASK.vocab_tokens())
MODEL = ModelConfig(n_layers=2, d_model=32, n_heads=4, d_head=8, vocab_size=len(VOCAB), n_ctx=12)


def batch_fn(step):
    return collate(TASK.sample(np.random.default_rng([0, step]), 8), VOCAB)


def dies_at(stop: int):
    """``batch_fn`` that dies (KeyboardInterrupt) while fetching step ``stop``'s batch."""
    def batch(step):
        if step == stop:
            raise KeyboardInterrupt
        return batch_fn(step)
    return batch


def make(run_dir, steps, **kw):
    torch.manual_seed(0)
    model = Transformer(MODEL)
    kw.setdefault("checkpoint_every", 0)
    cfg = TrainConfig(steps=steps, batch_size=8, warmup=3, log_every=1, **kw)
    return model, Trainer(model, cfg, batch_fn, str(run_dir))


def test_resume_matches_uninterrupted(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    model_a, straight = make(tmp_path / "a", 20)
    straight.fit()
    # an interrupted run: checkpoints every 10 steps and dies while fetching step 11's batch
    model_b, first = make(tmp_path / "b", 20, checkpoint_every=10)

    first.batch_fn = dies_at(10)
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    state = checkpoint.load_trainer_state(tmp_path / "b" / checkpoint.TRAINER_STATE)
    assert state["step"] == 10
    model_c, resumed = make(tmp_path / "b", 20)
    resumed.fit(resume_state=state)
    assert resumed.step == 20
    for step in range(11, 21):
        assert abs(resumed.losses[step] - straight.losses[step]) <= 1e-6, step
    for (name, p), q in zip(model_a.state_dict().items(), model_c.state_dict().values()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0, msg=name)


def test_fast_step_matches_textbook_step(tmp_path):
    """The trainer's step (foreach AdamW, SDPA, masked loss) gives the losses of the plain one:
    naive attention, F.cross_entropy over every position, AdamW's per-parameter loop."""
    model, trainer = make(tmp_path, 30)
    trainer.fit()
    torch.manual_seed(0)
    plain = Transformer(dataclasses.replace(MODEL, attn_impl="naive"))
    decay = [p for p in plain.parameters() if p.dim() >= 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": trainer.cfg.weight_decay},
                             {"params": [p for p in plain.parameters() if p.dim() < 2], "weight_decay": 0.0}],
                            betas=(0.9, 0.95), foreach=False)
    for step in range(30):
        batch = batch_fn(step)
        assert bool(batch.mask.all())  # induction batches score every position, so the losses compare as is
        for group in opt.param_groups:
            group["lr"] = lr_at(step, trainer.cfg)
        loss = torch.nn.functional.cross_entropy(plain(batch.inputs).flatten(0, 1), batch.targets.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(plain.parameters(), trainer.cfg.grad_clip)
        opt.step()
        opt.zero_grad()
        assert abs(loss.item() - trainer.losses[step + 1]) <= 1e-5, step


FAULTS_PER_STEP = """
import resource, torch
from minitf.config import ModelConfig, TrainConfig
from minitf.data import Batch
from minitf.model import Transformer
from minitf.trainer import keep_freed_memory, make_optimizer, masked_loss
print(keep_freed_memory())
torch.manual_seed(0)
model = Transformer(ModelConfig(n_layers=2, d_model=64, n_heads=4, d_head=16, d_mlp=256, vocab_size=256, n_ctx=64))
opt = make_optimizer(model, TrainConfig())
for step in range(13):
    if step == 3:  # after warm-up
        start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    ids = torch.randint(0, 256, (32, 65))
    masked_loss(model(ids[:, :-1]), Batch(ids[:, :-1], ids[:, 1:], torch.ones(32, 64))).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) / 10)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="keep_freed_memory is a glibc setting")
def test_keep_freed_memory_stops_page_faulting_every_step():
    """With glibc's defaults each step maps its activations afresh (hundreds of page faults);
    kept, they are reused. MINITF_KEEP_FREED_MEMORY=0 restores the defaults."""
    faults = {}
    for flag in ("0", "1"):
        out = subprocess.run([sys.executable, "-c", FAULTS_PER_STEP], capture_output=True, text=True, check=True,
                             env={**os.environ, "MINITF_KEEP_FREED_MEMORY": flag}, cwd=os.path.dirname(os.path.dirname(__file__)))
        applied, per_step = out.stdout.split()
        assert applied == ("True" if flag == "1" else "False")
        faults[flag] = float(per_step)
    assert faults["0"] > 4 * faults["1"], faults  # measured 1,178–2,179 vs 0.2–103


def test_crash_mid_save_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch):
    model, trainer = make(tmp_path, 4)
    trainer.fit()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)

    real_replace = os.replace

    def crash(src, dst):
        raise OSError("simulated crash during os.replace")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        checkpoint.save_weights(model, tmp_path / checkpoint.WEIGHTS)
    monkeypatch.setattr(os, "replace", real_replace)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]  # temp cleaned up
    fresh = Transformer(MODEL)
    checkpoint.load_weights(fresh, tmp_path / checkpoint.WEIGHTS)
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, before[k])


def test_corrupt_and_missing_checkpoints_give_clear_errors(tmp_path):
    model, trainer = make(tmp_path, 2)
    trainer.fit()
    weights = tmp_path / checkpoint.WEIGHTS
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        checkpoint.load_weights(Transformer(MODEL), weights)
    state = tmp_path / checkpoint.TRAINER_STATE
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        checkpoint.load_trainer_state(state)
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        checkpoint.load_weights(Transformer(MODEL), tmp_path / "nope.safetensors")


def test_mismatched_checkpoint_is_a_clear_error(tmp_path):
    model, trainer = make(tmp_path, 2)
    trainer.fit()
    other = Transformer(ModelConfig(n_layers=1, d_model=32, n_heads=4, d_head=8, vocab_size=len(VOCAB), n_ctx=12))
    with pytest.raises(CheckpointError, match="does not match the model config"):
        checkpoint.load_weights(other, tmp_path / checkpoint.WEIGHTS)


def test_nonfinite_loss_stops_with_step_and_checkpoint(tmp_path):
    model, trainer = make(tmp_path, 6)
    trainer.cfg.checkpoint_every = 2
    real = trainer.batch_fn

    def poisoned(step):
        if step == 4:
            with torch.no_grad():
                model.blocks[0].attn.qkv.weight[0, 0] = float("nan")
        return real(step)

    trainer.batch_fn = poisoned
    with pytest.raises(NonFiniteLossError, match=r"at step 5 .*last good checkpoint is step 4"):
        trainer.fit()
    state = checkpoint.load_trainer_state(tmp_path / checkpoint.TRAINER_STATE)
    assert state["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_skip_nonfinite_skips_then_stops(tmp_path):
    model, trainer = make(tmp_path, 8, skip_nonfinite=2)
    real = trainer.batch_fn
    bad_steps = {3, 5, 7}

    def poisoned(step):
        batch = real(step)
        if step + 1 in bad_steps:  # a corrupt batch: the mask is NaN, so the loss is NaN
            batch.mask = batch.mask * float("nan")
        return batch

    trainer.batch_fn = poisoned
    with pytest.raises(NonFiniteLossError, match=r"at step 7 .*after skipping steps \[3, 5\]"):
        trainer.fit()
    assert trainer.skipped == [3, 5]
    assert all(torch.isfinite(p).all() for p in model.parameters())  # skipped steps changed nothing


# -- a non-finite gradient is never applied, whatever the clip setting ---------------------------
@pytest.mark.parametrize("clip", [0.0, 1.0])
def test_inf_gradient_under_finite_loss_is_caught_before_the_step(tiny_cfg, random_batches, tmp_path, clip):
    torch.manual_seed(0)
    model = Transformer(tiny_cfg)
    model.blocks[0].attn.out.weight.register_hook(lambda g: g * float("inf"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(steps=3, batch_size=4, warmup=1, grad_clip=clip, checkpoint_every=1, eval_every=0)
    trainer = Trainer(model, cfg, random_batches(tiny_cfg), str(tmp_path), phase="train")
    with pytest.raises(NonFiniteLossError, match="step 1"):
        trainer.fit()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not (tmp_path / checkpoint.TRAINER_STATE).exists()


def test_a_checkpoint_never_holds_non_finite_weights(tiny_cfg, random_batches, tmp_path):
    model = Transformer(tiny_cfg)
    with torch.no_grad():
        model.embed.weight[0, 0] = float("nan")
    trainer = Trainer(model, TrainConfig(steps=1), random_batches(tiny_cfg), str(tmp_path))
    with pytest.raises(NonFiniteLossError, match="nothing was saved"):
        trainer.save_checkpoint([])
    assert not os.listdir(tmp_path)


def _policy_step(model, batch, step):
    """A stand-in for REINFORCE: a sampled (step-seeded) loss, no update on every third step."""
    g = torch.Generator().manual_seed(1000 + step)
    weights = torch.rand(batch.inputs.shape, generator=g)
    if step % 3 == 2:
        return None, {"reward": float(weights.mean())}
    logits = model(batch.inputs)
    return (logits.logsumexp(-1) * weights).mean(), {"reward": float(weights.mean())}


def test_a_step_loss_phase_logs_and_resumes_exactly(tmp_path):
    """A phase trained with ``step_loss`` (REINFORCE's path through the trainer): its numbers are
    in metrics.jsonl, steps without an update are logged as such, and a run that dies after a
    checkpoint resumes to the same weights as an uninterrupted one."""
    import json

    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    model_a, straight = make(tmp_path / "a", 12)
    straight.step_loss = _policy_step
    straight.fit()
    rows = [json.loads(line) for line in open(tmp_path / "a" / "metrics.jsonl")]
    assert [r["step"] for r in rows if r.get("no_update")] == [3, 6, 9, 12]
    assert all("reward" in r for r in rows if "loss" in r or r.get("no_update"))
    model_b, first = make(tmp_path / "b", 12, checkpoint_every=6)
    first.step_loss = _policy_step
    first.batch_fn = dies_at(8)
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    state = checkpoint.load_trainer_state(tmp_path / "b" / checkpoint.TRAINER_STATE)
    model_c, resumed = make(tmp_path / "b", 12)
    resumed.step_loss = _policy_step
    resumed.fit(resume_state=state)
    for (name, p), q in zip(model_a.state_dict().items(), model_c.state_dict().values()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0, msg=name)


def test_trainer_runs_a_compiled_model_end_to_end(tiny_cfg, random_batches, tmp_path):
    torch.manual_seed(0)
    model = torch.compile(Transformer(tiny_cfg), backend="eager")
    cfg = TrainConfig(steps=4, batch_size=4, warmup=1, checkpoint_every=2, eval_every=0)
    trainer = Trainer(model, cfg, random_batches(tiny_cfg), str(tmp_path), phase="train")
    trainer.fit()
    state = checkpoint.load_trainer_state(tmp_path / checkpoint.TRAINER_STATE)
    assert not [k for k in state["model"] if k.startswith("_orig_mod.")]
    plain = Transformer(tiny_cfg)
    checkpoint.load_weights(plain, tmp_path / checkpoint.WEIGHTS)
    resumed = Trainer(torch.compile(Transformer(tiny_cfg), backend="eager"), cfg, random_batches(tiny_cfg),
                      str(tmp_path), phase="train")
    resumed.restore(state)
    assert resumed.step == 4
