"""The model: forward, generate and its arguments, hook names and shapes, causal variants, padding masks
on every backend, empty inputs and sampling temperatures."""
import pytest
import torch

from minitf.data import Vocab
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


# -- attention_mask: padding gives the unpadded answers; ids are never read as padding --------------
PAD_CONFIGS = {"learned": {}, "rope": {"positional": "rope"}, "none": {"positional": "none"},
               "conv": {"conv_kernel": 3}, "linear": {"attention": "linear"}, "vector": {"d_input": 3}}


def _padded(rows, side, length, pad_value=0):
    """Rows (each (n,) ids or (n, d) vectors) padded on ``side`` to ``length``, and their mask."""
    first = rows[0]
    tokens = torch.full((len(rows), length, *first.shape[1:]), pad_value, dtype=first.dtype)
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    spans = []
    for i, r in enumerate(rows):
        span = slice(length - len(r), length) if side == "left" else slice(0, len(r))
        tokens[i, span], mask[i, span] = r, 1
        spans.append(span)
    return tokens, mask, spans


@pytest.mark.parametrize("impl", ["naive", "sdpa", "triton", "auto"])
@pytest.mark.parametrize("variant", list(PAD_CONFIGS))
@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_rows_give_the_unpadded_logits_on_every_backend(impl, variant, side):
    """Logits at real positions equal each row run alone, within 1e-5 absolute (fp32, logits O(5):
    measured ≤ 4e-6); the triton backend takes no mask and runs masked calls through sdpa."""
    from minitf.config import ModelConfig

    cfg = ModelConfig(n_layers=2, d_model=32, n_heads=2, d_head=16, d_mlp=64, vocab_size=20, n_ctx=16,
                      init_std=0.3, attn_impl=impl, **PAD_CONFIGS[variant])
    model = Transformer(cfg).eval()
    if cfg.d_input:
        rows = [torch.randn(n, cfg.d_input) for n in (5, 11, 2)]
    else:
        rows = [torch.randint(0, cfg.vocab_size, (n,)) for n in (5, 11, 2)]
    tokens, mask, spans = _padded(rows, side, 13, pad_value=7.5 if cfg.d_input else 3)
    out = model(tokens, attention_mask=mask)
    assert torch.isfinite(out).all()
    for row, span, r in zip(out, spans, rows):
        alone = model(r[None])[0]
        assert (row[span] - alone).abs().max().item() <= 1e-5
    # the mask matters: the same padded batch without it is a different computation
    if side == "left":
        assert (model(tokens)[0, spans[0]] - model(rows[0][None])[0]).abs().max().item() > 1e-3


def test_left_padding_keeps_positions_and_the_conv_reads_padding_as_zeros():
    from minitf.config import ModelConfig

    model = Transformer(ModelConfig(n_layers=1, d_model=32, n_heads=2, d_head=16, vocab_size=20, n_ctx=16,
                                    conv_kernel=4, init_std=0.3)).eval()
    tokens = torch.tensor([[0, 0, 0, 5, 6, 7]])
    mask = torch.tensor([[0, 0, 0, 1, 1, 1]])
    _, cache = model.run_with_cache(tokens, attention_mask=mask)
    _, alone = model.run_with_cache(tokens[:, 3:])
    # real tokens take positions 0..2, as unpadded
    torch.testing.assert_close(cache["hook_pos_embed"][0, 3:], alone["hook_pos_embed"], rtol=0, atol=0)
    torch.testing.assert_close(cache["conv_out", 0][0, 3:], alone["conv_out", 0][0], rtol=0, atol=1e-6)
    pattern = cache["pattern", 0][0]
    assert pattern[:, 3:, :3].abs().max() == 0  # real queries never attend to padding
    torch.testing.assert_close(pattern[:, 3:, 3:], alone["pattern", 0][0], rtol=0, atol=1e-6)


def test_no_mask_or_an_all_ones_mask_is_the_unmasked_computation_bit_for_bit(tiny_cfg):
    model = Transformer(tiny_cfg).eval()
    tokens = torch.randint(0, tiny_cfg.vocab_size, (3, 9))
    plain = model(tokens)
    assert torch.equal(model(tokens, attention_mask=torch.ones(3, 9, dtype=torch.long)), plain)
    assert torch.equal(model(tokens, attention_mask=torch.ones(3, 9, dtype=torch.bool)), plain)


@pytest.mark.parametrize("tokens", [[[0, 0, 3, 4]], [[5, 0, 6, 0, 7]], [[0, 1, 2, 3], [4, 0, 0, 9]]])
def test_pad_id_anywhere_is_an_ordinary_token_without_a_mask(tiny_cfg, tokens):
    """Random-token probes (TransformerLens's head detector) draw id 0 anywhere: a model that knows
    its vocab runs them as written, as it runs any ids."""
    from minitf.data import Vocab

    model = Transformer(tiny_cfg).eval()
    plain = model(torch.tensor(tokens))
    model.vocab = Vocab([f"t{i}" for i in range(tiny_cfg.vocab_size - 1)])
    assert torch.equal(model(torch.tensor(tokens)), plain)
    logits, _ = model.run_with_cache(torch.tensor(tokens))
    assert logits.shape == (len(tokens), len(tokens[0]), tiny_cfg.vocab_size)


@pytest.mark.parametrize("mask,match", [
    (torch.ones(2, 5), r"attention_mask has shape \(2, 5\) but the input is \(2, 6\)"),
    (torch.ones(2, 6) * 2, "only 0 .padding. and 1 .real token."),
    (torch.full((2, 6), -1), "only 0 .padding. and 1 .real token."),
    ([[1] * 6] * 2, "attention_mask must be a tensor"),
])
def test_a_malformed_mask_is_one_input_error(tiny_cfg, mask, match):
    model = Transformer(tiny_cfg)
    with pytest.raises(InputError, match=match):
        model(torch.randint(0, 20, (2, 6)), attention_mask=mask)


@pytest.mark.parametrize("row", [[1, 0, 1, 1], [1, 1, 0, 1], [0, 1, 0, 1]])
def test_inner_padding_is_refused_only_where_the_conv_would_mix_it_in(tiny_cfg, row):
    from dataclasses import replace

    tokens, mask = torch.tensor([[4, 5, 6, 7]]), torch.tensor([row])
    with pytest.raises(InputError, match="padding between real tokens.*pad only on the left or the right"):
        Transformer(replace(tiny_cfg, conv_kernel=3))(tokens, attention_mask=mask)
    model = Transformer(replace(tiny_cfg, init_std=0.3)).eval()  # attention only: inner padding is exact
    real = mask[0].bool()
    out = model(tokens, attention_mask=mask)[0, real]
    assert (out - model(tokens[:, real])[0]).abs().max().item() <= 1e-5


def test_batched_generate_with_left_padding_equals_one_prompt_at_a_time(tiny_cfg):
    model = Transformer(tiny_cfg).eval()
    prompts = [torch.tensor([3, 4, 5, 6]), torch.tensor([7, 8]), torch.tensor([9])]
    tokens, mask, _ = _padded(prompts, "left", 4)
    out = model.generate(tokens, 5, attention_mask=mask)
    for row, p in zip(out, prompts):
        assert torch.equal(row[4 - len(p):], model.generate(p[None], 5)[0])
    right, right_mask, _ = _padded(prompts, "right", 4)
    with pytest.raises(InputError, match="row 1 of the prompt ends in padding.*pad prompts on the left"):
        model.generate(right, 3, attention_mask=right_mask)
    with pytest.raises(InputError, match="row 1 of attention_mask has no real token"):
        model.generate(tokens, 3, attention_mask=torch.tensor([[1] * 4, [0] * 4, [0, 0, 0, 1]]))


def test_left_padding_with_a_mask_and_right_padding_are_exact(tiny_cfg):
    model = Transformer(tiny_cfg).eval()
    model.vocab = Vocab([f"t{i}" for i in range(tiny_cfg.vocab_size - 1)])
    prompt = torch.tensor([[3, 4, 5, 6]])
    left = model(torch.tensor([[0, 0, 3, 4, 5, 6]]), attention_mask=torch.tensor([[0, 0, 1, 1, 1, 1]]))
    assert torch.allclose(left[:, 2:], model(prompt), atol=1e-6)
    padded = model(torch.tensor([[3, 4, 5, 6, 0, 0]]))  # right padding: earlier positions unchanged
    assert torch.allclose(padded[:, :4], model(prompt), atol=1e-6)


# -- zero-length input: (batch, 0) gives (batch, 0, …); generate needs a prompt -----------------------
@pytest.mark.parametrize("extra", [{}, {"conv_kernel": 3}, {"conv_kernel": 2, "positional": "rope"},
                                   {"attention": "linear"}, {"d_input": 3}])
@pytest.mark.parametrize("impl", ["naive", "sdpa", "triton"])
def test_zero_positions_give_empty_outputs_everywhere(extra, impl):
    from minitf.config import ModelConfig

    cfg = ModelConfig(n_layers=2, d_model=32, n_heads=2, d_head=16, vocab_size=20, n_ctx=16, attn_impl=impl,
                      **extra)
    model = Transformer(cfg)
    x = torch.zeros(2, 0, 3) if cfg.d_input else torch.zeros(2, 0, dtype=torch.long)
    width = 1 if cfg.d_input else cfg.vocab_size
    assert model(x).shape == (2, 0, width)
    assert model(x, attention_mask=torch.zeros(2, 0)).shape == (2, 0, width)
    logits, cache = model.run_with_cache(x)
    assert logits.shape == (2, 0, width) and cache["pattern", 1].shape == (2, 2, 0, 0)
    assert model.run_with_hooks(x, [("blocks.0.hook_resid_post", lambda a, hook: a)]).shape == (2, 0, width)


@pytest.mark.parametrize("prompt", [torch.zeros(1, 0, dtype=torch.long), torch.zeros(3, 0, dtype=torch.long)])
@pytest.mark.parametrize("max_new", [0, 4])
def test_generate_from_an_empty_prompt_is_one_input_error(tiny_cfg, prompt, max_new):
    model = Transformer(tiny_cfg)
    with pytest.raises(InputError, match="prompt of at least one token.*start the prompt with <bos>"):
        model.generate(prompt, max_new)


@pytest.mark.parametrize("text", ["", "   ", []])
def test_to_tokens_of_nothing_is_an_empty_int64_row(tiny_cfg, text):
    from minitf.data import Vocab

    model = Transformer(tiny_cfg)
    model.vocab = Vocab([f"t{i}" for i in range(tiny_cfg.vocab_size - 1)])
    ids = model.to_tokens(text)
    assert ids.dtype == torch.int64 and ids.shape == (1, 0)
    assert model(ids).shape == (1, 0, tiny_cfg.vocab_size)
    assert model.to_string(ids[0]) == ""


# -- sampling at extreme temperatures ----------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("temperature", [1e-4, 1e-30, 1e-45, 5e-324])
def test_tiny_temperatures_sample_the_argmax_in_any_dtype(tiny_cfg, dtype, temperature):
    from dataclasses import replace

    model = Transformer(replace(tiny_cfg, init_std=0.5)).to(dtype).eval()
    prompt = torch.randint(0, tiny_cfg.vocab_size, (4, 5))
    out = model.generate(prompt, 6, temperature=temperature, generator=torch.Generator().manual_seed(0))
    greedy = model.generate(prompt, 6)
    assert torch.equal(out, greedy)


@pytest.mark.parametrize("temperature", [1e3, 1e30, 1e300])
def test_huge_temperatures_sample_valid_ids(tiny_cfg, temperature):
    model = Transformer(tiny_cfg).half().eval()
    out = model.generate(torch.randint(0, 20, (8, 3)), 6, temperature=temperature,
                         generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.int64 and 0 <= int(out.min()) and int(out.max()) < tiny_cfg.vocab_size
    assert len(set(out[:, 3:].flatten().tolist())) > 5  # near-uniform draws, not one token


@pytest.mark.parametrize("temperature", [-1e-9, float("inf"), float("nan"), "0.5", True])
def test_a_temperature_outside_its_range_is_one_input_error(tiny_cfg, temperature):
    with pytest.raises(InputError, match="temperature must be a finite number >= 0, 0 meaning greedy"):
        Transformer(tiny_cfg).generate(torch.tensor([[1, 2]]), 2, temperature=temperature)


def test_non_finite_logits_are_named_not_a_multinomial_error(tiny_cfg):
    model = Transformer(tiny_cfg).eval()
    for bad in (float("nan"), float("inf")):
        with torch.no_grad():
            model.unembed.weight[3, 0] = bad
        with pytest.raises(FloatingPointError, match="logits hold NaN or \\+inf"):
            model.generate(torch.tensor([[1, 2]]), 2, temperature=0.7)


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
