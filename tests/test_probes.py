"""Probes on hand-built weights, where the right answer is known exactly."""
import numpy as np
import pytest
import torch

from minitf.config import ModelConfig
from minitf.model import Transformer
from minitf.probes import (ablate_heads, ablation_effect, copying_score, duplicate_token_score,
                           mean_head_outputs, patch_activations, prefix_matching_score,
                           previous_token_score, repeated_random_tokens)
from minitf.experiments.circuits.induction import phase_change, top_head

CFG = ModelConfig(n_layers=2, d_model=32, n_heads=2, d_head=16, vocab_size=24, n_ctx=32, layer_norm=False,
                  positional="learned")


def previous_token_model():
    """Layer 0 head 0 attends exactly to the previous token, via one-hot position codes in Q/K."""
    torch.manual_seed(0)
    model = Transformer(CFG)
    with torch.no_grad():
        model.embed.weight.zero_()
        pos = torch.zeros(CFG.n_ctx, CFG.d_model)
        pos[torch.arange(CFG.n_ctx), torch.arange(CFG.n_ctx) % 16] = 1.0  # one-hot mod 16 in dims 0..15
        model.pos_embed.weight.copy_(pos)
        attn = model.blocks[0].attn
        attn.qkv.weight.zero_()
        attn.qkv.bias.zero_()
        big = 60.0
        d = CFG.d_model
        for i in range(16):  # q_p = e_(p mod 16), k_j = e_(j+1 mod 16): q_p·k_j is large iff j = p − 1
            attn.qkv.weight[i, i] = big
            attn.qkv.weight[d + (i + 1) % 16, i] = big
    return model


def test_previous_token_head_scores_one():
    model = previous_token_model()
    tokens = torch.randint(0, 24, (4, 16))
    scores = previous_token_score(model, tokens)
    assert scores.shape == (2, 2)
    assert scores[0, 0] > 0.99, scores


def test_ov_identity_head_copies():
    torch.manual_seed(0)
    cfg = ModelConfig(n_layers=1, d_model=16, n_heads=1, d_head=16, vocab_size=16, n_ctx=8, layer_norm=False)
    model = Transformer(cfg)
    with torch.no_grad():
        model.embed.weight.copy_(torch.eye(16))
        model.unembed.weight.copy_(torch.eye(16))
        model.blocks[0].attn.qkv.weight[32:].copy_(torch.eye(16))  # W_V = I
        model.blocks[0].attn.out.weight.copy_(torch.eye(16))  # W_O = I
    assert copying_score(model)[0, 0] == pytest.approx(1.0, abs=1e-9)
    with torch.no_grad():
        model.blocks[0].attn.out.weight.copy_(-torch.eye(16))  # anti-copying
    assert copying_score(model)[0, 0] == pytest.approx(-1.0, abs=1e-9)


def test_pattern_based_scores_on_uniform_and_exact_patterns():
    model = Transformer(CFG)
    seg = 6
    tokens = repeated_random_tokens(np.random.default_rng(0), list(range(24)), 3, seg)
    n = tokens.shape[1]

    def exact(offset):
        def fn(pattern, hook):
            p = torch.zeros_like(pattern)
            for q in range(n):
                p[..., q, max(0, q - offset) if q >= offset else 0] = 1.0
            return p
        return fn

    from minitf.hooks import hooks

    with hooks(model, [("blocks.1.attn.hook_pattern", exact(seg - 1))]):
        pm = prefix_matching_score(model, tokens, seg)
    assert pm[1] == pytest.approx([1.0, 1.0]) and pm[0].max() < 0.9
    with hooks(model, [("blocks.0.attn.hook_pattern", exact(seg))]):
        dup = duplicate_token_score(model, tokens, seg)
    assert dup[0] == pytest.approx([1.0, 1.0])


def test_ablation_and_patching_change_what_they_should():
    torch.manual_seed(0)
    model = Transformer(CFG).eval()
    tokens = torch.randint(0, 24, (2, 10))
    base = model(tokens)
    with ablate_heads(model, [(1, 0)]):
        z_ablated = model.run_with_cache(tokens, names_filter="blocks.1.attn.hook_z")[1]["z", 1]
        assert torch.all(z_ablated[:, :, 0] == 0) and not torch.all(z_ablated[:, :, 1] == 0)
    means = mean_head_outputs(model, tokens)
    with ablate_heads(model, [(0, 1)], mode="mean", means=means):
        assert not torch.allclose(model(tokens), base)
    with pytest.raises(ValueError, match="does not exist"):
        with ablate_heads(model, [(5, 0)]):
            model(tokens)
    effect = ablation_effect(model, [(1, 1)], lambda m: m(tokens).square().mean().item())
    assert effect["delta"] == pytest.approx(effect["ablated"] - effect["base"])
    # patching a clean run's residual into a corrupted run restores the clean output exactly
    _, clean = model.run_with_cache(tokens, names_filter="blocks.1.hook_resid_post")
    corrupted = tokens.flip(0)
    with patch_activations(model, {"blocks.1.hook_resid_post": clean["blocks.1.hook_resid_post"]}):
        torch.testing.assert_close(model(corrupted), base)


def test_phase_change_and_top_head():
    rows = [{"step": s, "eval": {"loss_second_repeat": l, "scores": {"s": s}}}
            for s, l in [(25, 4.1), (50, 4.0), (75, 1.2), (100, 0.3)]]
    step, scores = phase_change(rows)
    assert step == 75 and scores == {"s": 75}
    assert phase_change(rows[:2]) == (None, None)
    assert top_head([[0.9, 0.1], [0.2, 0.7]], min_layer=1) == [1, 1]
    assert top_head([[0.9, 0.1]], min_layer=1) is None
