"""Configs: validation with one message for every problem (and fixes that are themselves valid), JSON
round trips, --set overrides and the value rules every settings dataclass gets."""
import json

import pytest

from minitf.config import ModelConfig, TrainConfig, apply_overrides, from_dict, to_dict
from minitf.errors import ConfigError


def test_defaults_validate():
    ModelConfig().validate()
    TrainConfig().validate()


def test_d_model_mismatch_message():
    with pytest.raises(ConfigError, match=r"d_model must equal n_heads \* d_head \(got 130 vs 4\*32\)"):
        ModelConfig(d_model=130, n_heads=4, d_head=32).validate()


@pytest.mark.parametrize("field,value,needle", [
    ("positional", "sinusoid", "positional must be one of"),
    ("attn_impl", "flash", "attn_impl must be one of"),
    ("n_layers", 0, "n_layers must be >= 1"),
    ("init_std", 0.0, "init_std must be > 0"),
    ("d_mlp", -1, "d_mlp must be >= 0"),
    ("conv_kernel", -2, "conv_kernel must be >= 0"),
])
def test_model_config_errors(field, value, needle):
    with pytest.raises(ConfigError, match=needle):
        ModelConfig(**{field: value}).validate()


def test_several_problems_reported_together():
    with pytest.raises(ConfigError) as e:
        ModelConfig(n_layers=0, positional="x").validate()
    assert "n_layers" in str(e.value) and "positional" in str(e.value)


def test_train_config_errors():
    with pytest.raises(ConfigError, match="lr must be > 0"):
        TrainConfig(lr=0).validate()
    with pytest.raises(ConfigError, match="device must be one of"):
        TrainConfig(device="tpu").validate()


def test_json_round_trip():
    cfg = ModelConfig(n_layers=3, positional="rope", layer_norm=False, init_std=0.125)
    again = from_dict(ModelConfig, json.loads(json.dumps(to_dict(cfg))))
    assert again == cfg


def test_from_dict_rejects_unknown_and_ill_typed():
    with pytest.raises(ConfigError, match="unknown ModelConfig keys"):
        from_dict(ModelConfig, {"n_layer": 2})
    with pytest.raises(ConfigError, match="n_layers must be of type int"):
        from_dict(ModelConfig, {"n_layers": "two"})


def test_overrides_route_to_owner_and_type_check():
    m, t = apply_overrides([ModelConfig(), TrainConfig()],
                           ["n_layers=1", "steps=500", "lr=1e-3", "layer_norm=false", "positional=rope"])
    assert (m.n_layers, m.layer_norm, m.positional) == (1, False, "rope")
    assert (t.steps, t.lr) == (500, 1e-3)
    with pytest.raises(ConfigError, match="unknown --set key 'n_layer'; valid keys: .*n_layers"):
        apply_overrides([ModelConfig(), TrainConfig()], ["n_layer=1"])
    with pytest.raises(ConfigError, match="steps must be of type int"):
        apply_overrides([ModelConfig(), TrainConfig()], ["steps=1.5"])
    with pytest.raises(ConfigError, match="expects key=value"):
        apply_overrides([ModelConfig(), TrainConfig()], ["steps"])


# -- every numeric setting is checked against what its consumer accepts, in one place --------------------
@pytest.mark.parametrize("cls,field,value", [
    (TrainConfig, "lr", float("inf")), (TrainConfig, "lr", float("nan")), (TrainConfig, "grad_clip", float("inf")),
    (TrainConfig, "weight_decay", float("-inf")), (ModelConfig, "init_std", float("inf")),
    (TrainConfig, "seed", -1), (TrainConfig, "seed", 2 ** 32), (TrainConfig, "seed", 2 ** 64),
    (TrainConfig, "steps", 2 ** 63), (ModelConfig, "n_ctx", 10 ** 30),
])
def test_values_no_consumer_can_take_are_config_errors(cls, field, value):
    with pytest.raises(ConfigError) as e:
        cls(**{field: value}).validate()
    assert str(e.value).count(f"{field} must") == 1  # said once, even where a range check would also fire
    assert "finite" in str(e.value) or " in " in str(e.value)


@pytest.mark.parametrize("seed", [0, 1, 2 ** 32 - 1])
def test_the_whole_seed_range_runs_in_numpy_and_torch(seed):
    import numpy as np
    import torch

    TrainConfig(seed=seed).validate()
    np.random.default_rng([seed, 3, 7]).integers(10)
    torch.manual_seed(seed)


def test_task_and_experiment_settings_get_the_same_rule():
    """The one check (minitf.config.value_problems) runs for any settings dataclass, with or without
    a validate() of its own."""
    from dataclasses import dataclass

    from minitf.runs.folder import _validate

    @dataclass
    class Settings:  # no validate(): optional (docs/experiments.md)
        noise: float = 0.1
        count: int = 3

    _validate(Settings())
    for bad, needle in ((Settings(noise=float("nan")), "noise must be a finite number"),
                        (Settings(count=2 ** 70), "count must be in")):
        with pytest.raises(ConfigError, match=needle):
            _validate(bad)


@pytest.mark.parametrize("d_model,n_heads,d_head", [(128, 3, 32), (128, 3, 42), (100, 8, 16)])
def test_suggested_head_fix_is_itself_valid(d_model, n_heads, d_head):
    import re

    with pytest.raises(ConfigError) as err:
        ModelConfig(d_model=d_model, n_heads=n_heads, d_head=d_head).validate()
    for key, value in re.findall(r"set (\w+)=(\d+)", str(err.value)):
        fixed = {**dict(d_model=d_model, n_heads=n_heads, d_head=d_head), key: int(value)}
        assert fixed["d_model"] == fixed["n_heads"] * fixed["d_head"], (key, value)
