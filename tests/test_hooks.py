"""Hook points: a misspelled or impossible hook name is an error naming the nearest, never a silent no-op;
valid names and filter functions work as given."""
import pytest
import torch

from minitf.config import ModelConfig
from minitf.errors import InputError
from minitf.hooks import hooks, run_with_cache
from minitf.model import Transformer


# -- a misspelled hook name never silently does nothing -------------------------------------------
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

