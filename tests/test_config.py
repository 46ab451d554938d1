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
