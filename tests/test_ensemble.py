"""An ensemble member trains exactly like a single run with its seed (to float32 reordering), and an
ensemble checks every member's gradients before any step."""
import numpy as np
import pytest
import torch

from minitf.config import ModelConfig, TrainConfig
from minitf.data import Vocab, collate
from minitf.ensemble import Ensemble, train_ensemble
from minitf.errors import NonFiniteLossError
from minitf.evaluate import per_position_loss
from minitf.model import Transformer
from minitf.trainer import Trainer
from toy_tasks.induction import InductionTask

TASK = InductionTask(n_symbols=12, segment_len=8, min_segment_len=3)
VOCAB = Vocab(TASK.vocab_tokens())
CFG = ModelConfig(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=32, vocab_size=len(VOCAB), n_ctx=16)
TRAIN = TrainConfig(steps=50, batch_size=8, warmup=5, log_every=1, checkpoint_every=0, lr=3e-3)


def make(seed):
    torch.manual_seed(seed)
    return Transformer(CFG)


def stream(seed):
    return lambda step: collate(TASK.sample(np.random.default_rng([seed, step]), TRAIN.batch_size), VOCAB)


def test_members_match_single_runs(tmp_path):
    seeds = [0, 1, 2]
    ensemble = Ensemble(make, seeds)
    history = train_ensemble(ensemble, TRAIN, [stream(s) for s in seeds])
    eval_batch = collate(TASK.sample(np.random.default_rng(99), 64, full_length=True), VOCAB)
    for i, seed in enumerate(seeds):
        model = make(seed)
        run = tmp_path / f"s{seed}"
        run.mkdir()
        trainer = Trainer(model, TRAIN, stream(seed), str(run))
        trainer.fit()
        single = [trainer.losses[s] for s in range(1, TRAIN.steps + 1)]
        np.testing.assert_allclose(history[i], single, atol=1e-4, rtol=0)
        member = ensemble.member(i).eval()
        torch.testing.assert_close(per_position_loss(member, eval_batch), per_position_loss(model.eval(), eval_batch),
                                   atol=1e-3, rtol=0)
    assert history[0] != history[1]  # members are really independent


def test_ensemble_cli_members_are_ordinary_runs_matching_single_runs(tmp_path):
    """`train.py bursty --ensemble 2`: per-member run folders whose losses (every step) and final
    evaluation equal a plain run with that seed; a member resumes and loads like any run."""
    import json

    import minitf
    from minitf.experiments import EXPERIMENTS
    from minitf.runs import run as run_experiment
    from minitf.runs import run_ensemble

    over = ["steps=40", "log_every=1", "eval_every=20", "n_classes=32", "d_model=32", "d_head=8"]
    bursty = EXPERIMENTS["bursty"]
    merged = run_ensemble(bursty, 2, out=str(tmp_path / "ens"), seed=3, overrides=over)
    single = run_experiment(bursty, out=str(tmp_path / "single"), seed=4, overrides=over, quiet=True)
    member = json.loads((tmp_path / "ens" / "seed4" / "report.json").read_text())

    def losses(run):
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        return [r["loss"] for r in rows if "loss" in r]

    np.testing.assert_allclose(losses(tmp_path / "ens" / "seed4"), losses(tmp_path / "single"), atol=1e-4, rtol=0)
    assert len(losses(tmp_path / "single")) == 40
    for mode, res in single["results"].items():  # same accuracy, up to one borderline example per mode
        assert abs(member["results"][mode]["acc"] - res["acc"]) <= 1 / res["n"] + 1e-9, mode
    assert merged["seeds"] == [3, 4] and merged["results"]["icl"]["per_seed"][1] == member["results"]["icl"]["acc"]
    assert losses(tmp_path / "ens" / "seed3") != losses(tmp_path / "ens" / "seed4")
    model, vocab = minitf.load(str(tmp_path / "ens" / "seed4"))  # a member loads like any run
    assert model.cfg.d_model == 32


def test_members_with_batches_of_different_lengths_get_their_own_losses():
    """Tasks collate to their longest sequence, so members' batches differ in length; padding
    them to one length must not change any member's loss."""
    from minitf.ensemble import stack_batches
    from minitf.trainer import masked_loss

    ensemble = Ensemble(make, [0, 1])
    batches = [collate(TASK.sample(np.random.default_rng([s, 0]), 4), VOCAB) for s in (0, 1)]
    batches[1] = type(batches[1])(*(t[:, :10] for t in (batches[1].inputs, batches[1].targets, batches[1].mask)))
    assert batches[0].inputs.shape[1] != batches[1].inputs.shape[1]
    stacked = stack_batches(batches)
    with torch.no_grad():
        losses = masked_loss(ensemble.logits(stacked.inputs), stacked)
        for i, b in enumerate(batches):
            single = masked_loss(ensemble.member(i)(b.inputs), b)
            torch.testing.assert_close(losses[i], single, atol=1e-5, rtol=0)


def test_ensemble_checks_before_it_steps(tiny_cfg, random_batches):
    def make(seed):
        torch.manual_seed(seed)
        return Transformer(tiny_cfg)
    ensemble = Ensemble(make, [0, 1])
    before = {k: v.detach().clone() for k, v in ensemble.params.items()}
    ensemble.params["blocks.0.attn.out.weight"].register_hook(lambda g: g * float("inf"))
    cfg = TrainConfig(steps=2, batch_size=4, warmup=1, grad_clip=0.0)
    with pytest.raises(NonFiniteLossError, match="no update was applied"):
        train_ensemble(ensemble, cfg, [random_batches(tiny_cfg), random_batches(tiny_cfg)])
    assert all(torch.equal(before[k], v.detach()) for k, v in ensemble.params.items())
