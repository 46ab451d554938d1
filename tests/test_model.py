import pytest
import torch

from minitf.errors import InputError
from minitf.hooks import hooks
from minitf.model import Transformer


def test_forward_shape_and_generate(tiny_cfg):
    model = Transformer(tiny_cfg)
    tokens = torch.randint(0, tiny_cfg.vocab_size, (3, 10))
    assert model(tokens).shape == (3, 10, tiny_cfg.vocab_size)
    out = model.generate(tokens[:, :4], max_new_tokens=5)
    assert out.shape == (3, 9) and torch.equal(out[:, :4], tokens[:, :4])
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    s1 = model.generate(tokens[:, :4], 5, temperature=1.0, generator=g1)
    s2 = model.generate(tokens[:, :4], 5, temperature=1.0, generator=g2)
    assert torch.equal(s1, s2)


def test_greedy_generate_is_argmax(tiny_cfg):
    model = Transformer(tiny_cfg).eval()
    prompt = torch.randint(0, tiny_cfg.vocab_size, (2, 5))
    out = model.generate(prompt, 1)
    assert torch.equal(out[:, -1], model(prompt)[:, -1].argmax(-1))


def test_out_of_vocab_and_too_long_raise_before_compute(tiny_cfg):
    model = Transformer(tiny_cfg)
    with pytest.raises(InputError, match=r"token id 20 is out of vocab \(valid ids are 0..19\)"):
        model(torch.tensor([[1, 2, 20]]))
    with pytest.raises(InputError, match="token id -1 is out of vocab"):
        model(torch.tensor([[1, -1]]))
    with pytest.raises(InputError, match="sequence length 17 exceeds the model's context n_ctx=16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(InputError, match="integer tensor"):
        model(torch.zeros(1, 4))
    with pytest.raises(InputError, match=r"shape \(batch, seq\)"):
        model(torch.zeros(4, dtype=torch.long))
    with pytest.raises(InputError, match="exceeds n_ctx"):
        model.generate(torch.zeros(1, 10, dtype=torch.long), max_new_tokens=7)


EXPECTED_HOOKS = ["hook_embed", "hook_pos_embed", "ln_final.hook_normalized"] + [
    f"blocks.{i}.{name}" for i in range(2) for name in (
        "hook_resid_pre", "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_pattern",
        "attn.hook_z", "hook_attn_out", "mlp.hook_post", "hook_resid_post")]


def test_run_with_cache_has_tl_names_and_shapes(tiny_cfg):
    model = Transformer(tiny_cfg)
    tokens = torch.randint(0, 20, (2, 7))
    logits, cache = model.run_with_cache(tokens)
    for name in EXPECTED_HOOKS:
        assert name in cache, name
    assert cache["blocks.0.attn.hook_pattern"].shape == (2, 4, 7, 7)
    assert cache["blocks.1.attn.hook_q"].shape == (2, 7, 4, 8)
    assert cache["pattern", 1] is cache["blocks.1.attn.hook_pattern"]
    pattern = cache["pattern", 0]
    assert torch.allclose(pattern.sum(-1), torch.ones(2, 4, 7), atol=1e-6)
    assert torch.all(pattern.triu(1) == 0)  # causal
    # caching (which forces the naive path) does not change the output of the fused path
    assert torch.allclose(logits, model(tokens), atol=1e-5)
    _, only = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    assert sorted(only) == ["blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"]


def test_conv_hook_exists_when_enabled(tiny_cfg):
    from dataclasses import replace

    model = Transformer(replace(tiny_cfg, conv_kernel=4))
    tokens = torch.randint(0, 20, (1, 6))
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: "conv" in n)
    assert cache["blocks.0.hook_conv_out"].shape == (1, 6, 32)
    # causal: changing a later token leaves earlier conv outputs unchanged
    t2 = tokens.clone()
    t2[0, 4] = (t2[0, 4] + 1) % 20
    _, c2 = model.run_with_cache(t2, names_filter=lambda n: "conv" in n)
    assert torch.allclose(cache["blocks.0.hook_conv_out"][:, :4], c2["blocks.0.hook_conv_out"][:, :4])


def test_hook_replacement_changes_output(tiny_cfg):
    model = Transformer(tiny_cfg)
    tokens = torch.randint(0, 20, (2, 7))
    base = model(tokens)

    def zero_head0(z, hook):
        z = z.clone()
        z[:, :, 0] = 0.0
        return z

    with hooks(model, [("blocks.1.attn.hook_z", zero_head0)]):
        ablated = model(tokens)
    assert not torch.allclose(base, ablated)
    assert torch.allclose(base, model(tokens))  # hooks removed on exit

    def uniform(pattern, hook):
        n = pattern.shape[-1]
        return torch.ones_like(pattern).tril() / torch.arange(1, n + 1).view(n, 1)

    with hooks(model, [("blocks.0.attn.hook_pattern", uniform)]):
        replaced = model(tokens)
    assert not torch.allclose(base, replaced)


def test_unknown_hook_name_is_an_error(tiny_cfg):
    model = Transformer(tiny_cfg)
    with pytest.raises(InputError, match="no hook point named 'blocks.0.attn.hook_patern'"):
        with hooks(model, [("blocks.0.attn.hook_patern", lambda a, h: None)]):
            model(torch.zeros(1, 3, dtype=torch.long))


@pytest.mark.parametrize("positional", ["learned", "rope", "none"])
@pytest.mark.parametrize("layer_norm", [True, False])
def test_variants_run_and_are_causal(tiny_cfg, positional, layer_norm):
    from dataclasses import replace

    model = Transformer(replace(tiny_cfg, positional=positional, layer_norm=layer_norm, d_mlp=0,
                                tie_embeddings=True))
    tokens = torch.randint(0, 20, (2, 9))
    out = model(tokens)
    t2 = tokens.clone()
    t2[:, -1] = (t2[:, -1] + 1) % 20
    assert torch.allclose(out[:, :-1], model(t2)[:, :-1], atol=1e-6)
    out.sum().backward()


def test_run_with_cache_logits_equal_the_plain_forward_within_the_stated_bound():
    """Caching hook_pattern switches attention to the explicit path: ≤ 1e-5 in float32 (the
    bound run_with_cache documents); without patterns in the cache, the very same path."""
    from minitf.config import ModelConfig

    torch.manual_seed(0)
    for cfg in (ModelConfig(n_layers=2, d_model=64, n_heads=4, d_head=16, vocab_size=50, n_ctx=64),
                ModelConfig(n_layers=2, d_model=128, n_heads=4, d_head=32, conv_kernel=4, vocab_size=600,
                            n_ctx=120, init_std=0.1)):
        model = Transformer(cfg).eval()
        tokens = torch.randint(0, cfg.vocab_size, (8, cfg.n_ctx))
        plain = model(tokens)
        cached, cache = model.run_with_cache(tokens)
        assert "blocks.1.attn.hook_pattern" in cache
        assert (cached - plain).abs().max().item() <= 1e-5
        same, _ = model.run_with_cache(tokens, names_filter=lambda n: not n.endswith("hook_pattern"))
        assert torch.equal(same, plain)
