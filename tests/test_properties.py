"""Property-based checks (hypothesis): any valid config works; any invalid one gets the documented error."""
import dataclasses

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minitf.attention import attention
from minitf.config import ModelConfig, TrainConfig, apply_overrides
from minitf.errors import ConfigError
from minitf.model import Transformer

valid_configs = st.builds(
    lambda layers, heads, d_head, mlp, vocab, ctx, pos, ln, tie, conv: ModelConfig(
        n_layers=layers, n_heads=heads, d_head=d_head, d_model=heads * d_head, d_mlp=mlp, vocab_size=vocab,
        n_ctx=ctx, positional=pos, layer_norm=ln, tie_embeddings=tie, conv_kernel=conv),
    st.integers(1, 3), st.integers(1, 4), st.sampled_from([2, 4, 8]), st.sampled_from([0, 16]),
    st.integers(2, 40), st.integers(1, 24), st.sampled_from(["learned", "rope", "none"]), st.booleans(),
    st.booleans(), st.integers(0, 4))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=valid_configs, data=st.data())
def test_valid_configs_build_run_and_backends_agree(cfg, data):
    torch.manual_seed(0)
    model = Transformer(cfg)
    seq = data.draw(st.integers(1, cfg.n_ctx))
    tokens = torch.randint(0, cfg.vocab_size, (2, seq))
    logits = model(tokens)
    assert logits.shape == (2, seq, cfg.vocab_size) and torch.isfinite(logits).all()
    logits.sum().backward()
    with torch.no_grad():
        for impl in ("naive", "sdpa"):
            for block in model.blocks:
                block.attn.cfg = dataclasses.replace(cfg, attn_impl=impl)
            torch.testing.assert_close(model(tokens), logits.detach(), atol=1e-5, rtol=1e-5)


@settings(max_examples=40, deadline=None)
@given(q=st.integers(1, 6), d=st.sampled_from([1, 3, 8]), causal=st.booleans())
def test_attention_backends_agree(q, d, causal):
    x = torch.randn(3, 1, 2, q, d, dtype=torch.float64)
    ref = attention(*x, causal=causal, impl="naive")
    torch.testing.assert_close(attention(*x, causal=causal, impl="sdpa"), ref, atol=1e-10, rtol=0)


bad_model_fields = st.one_of(
    st.tuples(st.just("n_layers"), st.integers(-5, 0)),
    st.tuples(st.just("vocab_size"), st.integers(-5, 0)),
    st.tuples(st.just("d_mlp"), st.integers(-9, -1)),
    st.tuples(st.just("conv_kernel"), st.integers(-9, -1)),
    st.tuples(st.just("init_std"), st.floats(-1.0, 0.0)),
    st.tuples(st.just("positional"), st.text(min_size=1, max_size=8).filter(lambda s: s not in ("learned", "rope", "none"))),
    st.tuples(st.just("attn_impl"), st.text(min_size=1, max_size=8).filter(
        lambda s: s not in ("auto", "sdpa", "naive", "triton"))),
    st.tuples(st.just("d_model"), st.integers(1, 200).filter(lambda d: d != 64)),
)


@settings(max_examples=60, deadline=None)
@given(bad=bad_model_fields)
def test_invalid_model_configs_raise_config_error(bad):
    field, value = bad
    try:
        Transformer(dataclasses.replace(ModelConfig(), **{field: value}))
    except ConfigError as e:
        assert field in str(e)
    else:
        raise AssertionError(f"{field}={value!r} was accepted")


@settings(max_examples=60, deadline=None)
@given(key=st.text(min_size=1, max_size=12).filter(lambda s: "=" not in s), value=st.text(max_size=6))
def test_overrides_never_fail_obscurely(key, value):
    try:
        apply_overrides([ModelConfig(), TrainConfig()], [f"{key}={value}"])
    except ConfigError:
        pass  # the documented error; any other exception type fails the test
