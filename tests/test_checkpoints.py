"""Checkpoints: weights carry the architecture they compute with, a run folder's models load by name,
weights of a compiled (or DDP-wrapped) model load into a plain one, and corrupt weights are a CheckpointError."""
import dataclasses
import json

import pytest
import torch
from safetensors.torch import save_file

import minitf
from minitf import checkpoint, meta_learners
from minitf.config import ModelConfig, TrainConfig, to_dict
from minitf.data import Vocab
from minitf.errors import CheckpointError, CheckpointNotFoundError
from minitf.model import Transformer
from minitf.trainer import Trainer

CFG = ModelConfig(n_layers=1, d_model=16, n_heads=2, d_head=8, vocab_size=12, n_ctx=8)
VOCAB = Vocab([f"t{i}" for i in range(11)])


def model(cfg=CFG, seed=0):
    torch.manual_seed(seed)
    return Transformer(cfg)


# -- the architecture is stored with the weights and checked on every load ------------------------
@pytest.mark.parametrize("change", [dict(tie_embeddings=True), dict(positional="rope"), dict(n_heads=4, d_head=4),
                                    dict(attention="linear"), dict(layer_norm=False)])
def test_weights_refuse_a_model_that_would_compute_something_else(tmp_path, change):
    path = tmp_path / "w.safetensors"
    checkpoint.save_weights(model(), path)
    other = Transformer(dataclasses.replace(CFG, **change))
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        checkpoint.load_weights(other, path)
    field = next(iter(change))
    assert f"{field}={getattr(CFG, field)!r}" in str(err.value) and f"{field}={change[field]!r}" in str(err.value)
    assert len(str(err.value).splitlines()) == 1
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())  # nothing was loaded


@pytest.mark.parametrize("change", [dict(attn_impl="naive"), dict(init_std=0.5), dict(positional="rope", n_ctx=32)])
def test_fields_that_do_not_change_the_computation_still_load(tmp_path, change):
    base = dataclasses.replace(CFG, positional=change.get("positional", CFG.positional))
    path = tmp_path / "w.safetensors"
    source = model(base)
    checkpoint.save_weights(source, path)
    other = Transformer(dataclasses.replace(base, **change)).eval()
    checkpoint.load_weights(other, path)
    tokens = torch.randint(1, 12, (2, 6))
    assert torch.allclose(other(tokens), source.eval()(tokens), atol=1e-5)


def test_the_reported_case_untied_weights_under_a_tied_config_json(tmp_path):
    """A run folder whose config.json says tie_embeddings=true but whose weights are untied used to
    load silently, with logits far from the trained model's."""
    run = make_run(tmp_path / "run", {"model": model()})
    data = json.loads((run / "config.json").read_text())
    data["model"]["tie_embeddings"] = True
    (run / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="tie_embeddings=False.*tie_embeddings=True"):
        minitf.load(run)


def test_old_files_without_architecture_metadata_still_load(tmp_path):
    source = model().eval()
    tensors = {k: v.contiguous().clone() for k, v in source.state_dict().items()}
    save_file(tensors, tmp_path / "none.safetensors")  # no metadata at all
    save_file(tensors, tmp_path / "config_only.safetensors", metadata={"config": json.dumps(vars(CFG))})
    tokens = torch.randint(1, 12, (1, 5))
    for name in ("none", "config_only"):
        fresh = Transformer(CFG).eval()
        checkpoint.load_weights(fresh, tmp_path / f"{name}.safetensors")
        assert torch.equal(fresh(tokens), source(tokens))
    # the older files' "config" still records the architecture: a mismatch is refused from it too
    with pytest.raises(CheckpointError, match="tie_embeddings"):
        checkpoint.load_weights(Transformer(dataclasses.replace(CFG, tie_embeddings=True)),
                                tmp_path / "config_only.safetensors")


def test_a_resume_state_refuses_another_architecture(tmp_path):
    gen = torch.Generator().manual_seed(0)

    def batches(step):
        from minitf.data import Batch

        ids = torch.randint(1, 12, (4, 7), generator=gen)
        return Batch(ids[:, :-1], ids[:, 1:], torch.ones(4, 6))
    cfg = TrainConfig(steps=2, batch_size=4, warmup=1, checkpoint_every=0, eval_every=0)
    Trainer(model(), cfg, batches, str(tmp_path)).fit()
    state = checkpoint.load_trainer_state(tmp_path / checkpoint.TRAINER_STATE)
    assert state["architecture"]["tie_embeddings"] is False
    other = Trainer(Transformer(dataclasses.replace(CFG, tie_embeddings=True)), cfg, batches, str(tmp_path))
    with pytest.raises(CheckpointError, match="tie_embeddings"):
        other.restore(state)
    del state["architecture"]  # a state written before it was stored: names and shapes, as before
    Trainer(model(), cfg, batches, str(tmp_path)).restore(state)


# -- a run folder's models, by name ------------------------------------------------------------------
def make_run(run, models: dict, experiment="induction", default=None, cfg=CFG, vocab=VOCAB):
    """A run folder as the runner writes it: config.json, vocab.json, model-<name>.safetensors per
    model and model.safetensors = the last one."""
    run.mkdir(parents=True)
    data = {"experiment": experiment, "model": to_dict(cfg), "train": to_dict(TrainConfig()), "task": {}}
    if default is not None:
        data["default_model"] = default
    checkpoint.write_run_config(run, data)
    vocab.save(run / "vocab.json")
    for name, net in models.items():
        checkpoint.save_weights(net, run / (f"model-{name}.safetensors" if name != "model" else "model.safetensors"))
    if "model" not in models:
        checkpoint.save_weights(list(models.values())[-1], run / "model.safetensors")
    return run


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("experiment,names,default", [
    ("ginc", ["mixture", "control"], "mixture"),  # the control trains last: it used to load silently
    ("semantic", ["phase1", "structured_phase2", "control_phase2", "control_self"], "structured_phase2"),
    ("headline", ["phase1", "phase2", "phase2_self"], None),  # no main model: the last phase, as before
])
def test_the_default_model_is_the_experiments_and_any_loads_by_name(tmp_path, experiment, names, default):
    nets = {n: model(seed=i) for i, n in enumerate(names)}
    for run, recorded in ((make_run(tmp_path / "old", nets, experiment), None),  # made before config.json said
                          (make_run(tmp_path / "new", nets, experiment, default=[default] if default else []), 1)):
        assert minitf.models(run) == {"default": default, "names": sorted(names)}
        loaded, _ = minitf.load(run)
        assert same(loaded, nets[default or names[-1]]) and loaded.run_model == (default or "model")
        for n in names:
            assert same(minitf.load(run, model=n)[0], nets[n])
        with pytest.raises(CheckpointNotFoundError) as err:
            minitf.load(run, model="nosuch")
        assert ", ".join(sorted(names)) in str(err.value)


def test_the_frozen_main_models_of_old_runs_are_the_experiments_own():
    """Runs made before config.json recorded "default_model" load by checkpoint's frozen table; it
    must name what the experiments' main_model says (no lookup of the registry from checkpoint)."""
    from minitf.experiments import EXPERIMENTS

    for name, names in checkpoint.MAIN_MODELS_BEFORE_RECORDED.items():
        assert tuple(EXPERIMENTS[name].main_model) == names, name


def test_a_run_whose_last_model_is_not_a_transformer_loads_each_by_name(tmp_path):
    """metalearn: the classic learners train after the transformer, so model.safetensors holds a
    prototypical network; loading the run used to fail with advice to do what it did."""
    icl_cfg = ModelConfig(n_layers=1, d_model=16, n_heads=2, d_head=8, vocab_size=1, n_ctx=5, positional="none",
                          d_input=6)
    torch.manual_seed(0)
    icl = Transformer(icl_cfg)
    proto = meta_learners.build("protonet", 4)
    cnp = meta_learners.build("cnp_wide", 4, 16, 8)
    run = make_run(tmp_path / "run", {"icl_mixture": icl, "protonet_mixture": proto, "cnp_wide_mixture": cnp},
                   "metalearn", cfg=icl_cfg, vocab=Vocab([]))
    default, _ = minitf.load(run)
    assert isinstance(default, Transformer) and same(default, icl) and default.run_model == "icl_mixture"
    for name, net in (("protonet_mixture", proto), ("cnp_wide_mixture", cnp)):
        loaded, _ = minitf.load(run, model=name)
        assert type(loaded) is type(net) and same(loaded, net) and loaded.cfg == net.cfg
    x = torch.randn(3, 5, 6)
    assert torch.equal(minitf.load(run, model="cnp_wide_mixture")[0](x), cnp.eval()(x))
    with pytest.raises(CheckpointError, match="meta-learner|cnp_wide model"):
        checkpoint.load_weights(Transformer(icl_cfg), run / "model-cnp_wide_mixture.safetensors")


def test_phase_is_the_older_name_of_model(tmp_path):
    nets = {"a": model(seed=1), "b": model(seed=2)}
    run = make_run(tmp_path / "run", nets)
    assert same(minitf.load(run, phase="a")[0], nets["a"])
    with pytest.raises(CheckpointError, match="once"):
        minitf.load(run, model="a", phase="b")


# -- weights of a compiled (or DDP-wrapped) model load into a plain one -------------------------
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


def test_corrupt_weights_in_a_run_folder_is_a_checkpoint_error(finished, tmp_path):
    import shutil

    import minitf

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / checkpoint.WEIGHTS).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        minitf.load(run)
