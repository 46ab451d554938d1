"""TransformerLens interop: a minitf model as a ``HookedTransformer`` and back.

TransformerLens (TL; Nanda & Bloom, github.com/TransformerLensOrg/TransformerLens) is where
interpretability researchers analyse models. minitf's architecture is a subset of TL's
``HookedTransformer`` (pre-LN blocks as in Elhage et al. 2021, "A Mathematical Framework
for Transformer Circuits"), so a model converts exactly — logits equal to float32 rounding,
every hook under the same name (the differences are listed in docs/interop.md):

    hooked = to_hooked_transformer(model, vocab)      # vocab: optional, gives TL a tokenizer
    model2 = from_hooked_transformer(hooked)

Weight mapping (minitf ``nn.Linear`` stores (out, in); TL uses the ``x @ W`` convention):

    embed.weight (vocab, d)             → embed.W_E (d_vocab, d_model)
    pos_embed.weight (n_ctx, d)         → pos_embed.W_pos (n_ctx, d_model)  [zeros if positional='none']
    blocks.L.attn.qkv.weight (3·d, d)   → blocks.L.attn.W_Q / W_K / W_V (head, d_model, d_head)
    blocks.L.attn.qkv.bias (3·d,)       → blocks.L.attn.b_Q / b_K / b_V (head, d_head)
    blocks.L.attn.out.weight (d, d)     → blocks.L.attn.W_O (head, d_head, d_model), bias → b_O
    blocks.L.mlp.fc_in / fc_out         → blocks.L.mlp.W_in (d_model, d_mlp) / W_out (d_mlp, d_model)
    blocks.L.ln1.ln / ln2.ln / ln_final.ln (weight, bias) → …ln1.w / b (TL normalization_type "LN")
    unembed.weight (vocab, d)           → unembed.W_U (d_model, d_vocab), b_U = 0 (minitf has none)

Rotary: minitf rotates interleaved pairs (x[0::2], x[1::2]) — TL's ``rotary_adjacent_pairs=True``
(GPT-J style), the default here, so q/k and their hooks are identical. With
``rotary_adjacent_pairs=False`` (TL's default, GPT-NeoX style: pair i is (x[i], x[i+d/2]))
the q/k columns of each head are permuted so the pair dims line up; logits stay exact.

TL has no "no positions" or tied-embedding setting: positional='none' becomes
positional_embedding_type "standard" with W_pos = 0, and tied embeddings become W_U = W_Eᵀ
(a copy). TL cannot express minitf's causal conv (conv_kernel > 0), vector models (d_input > 0) or
linear attention: ``ConfigError``.

Needs the ``lens`` extra (TransformerLens 3.x, whose ``HookedTransformer`` 4.0 removed):
``pip install -e ".[lens]"``; without it every function here raises ``ImportError`` naming it.

CLI: ``python -m minitf.interop RUN_DIR --out DIR`` writes ``tl_config.json``,
``tl_state_dict.pt`` and the tokenizer (``tokenizer.json``, ``tokenizer_config.json``) — loadable with
TL and ``transformers`` alone, no minitf import (docs/interop.md).
"""
import argparse
import io
import math
import os
import sys
import warnings

import torch
from einops import rearrange

from minitf.config import ModelConfig
from minitf.errors import ConfigError, MinitfError

LENS_INSTALL = 'pip install -e ".[lens]"'
TL_CONFIG = "tl_config.json"
TL_STATE_DICT = "tl_state_dict.pt"
ROPE_BASE = 10000.0  # minitf.model.rotary's default
SUPPORTED = ("supported: attention-only or GELU MLP (d_mlp > 0), LayerNorm on/off, learned / rotary / "
             "no positions, tied or untied embeddings, biases on every Linear (none on the unembed), "
             "causal softmax attention with 1/sqrt(d_head) scaling; a token model (d_input=0), conv_kernel=0")


def require_lens():
    """``(HookedTransformer, HookedTransformerConfig)``; ``ImportError`` naming the extra if absent."""
    try:
        import transformer_lens  # noqa: F401
    except ImportError as e:
        raise ImportError(f"minitf.interop needs TransformerLens, which is not installed: {LENS_INSTALL} "
                          "(the 'lens' extra: transformer-lens>=3.0,<4 and circuitsvis)") from e
    try:
        from transformer_lens import HookedTransformer, HookedTransformerConfig
    except ImportError as e:  # TL >= 4.0 removed HookedTransformer (TransformerBridge wraps HF models)
        raise ImportError("minitf.interop needs TransformerLens 3.x (HookedTransformer was removed in 4.0): "
                          f"{LENS_INSTALL} installs transformer-lens>=3.0,<4") from e
    return HookedTransformer, HookedTransformerConfig


def _check_convertible(cfg: ModelConfig) -> None:
    """One ``ConfigError`` naming every setting a HookedTransformer cannot express."""
    problems = []
    if cfg.conv_kernel > 0:
        problems.append(f"the causal conv (conv_kernel={cfg.conv_kernel})")
    if getattr(cfg, "d_input", 0) > 0:
        problems.append(f"a vector model (d_input={cfg.d_input}: linear read-in and read-out, no token embedding)")
    if getattr(cfg, "attention", "softmax") != "softmax":
        problems.append(f"attention={cfg.attention!r} (TL attention is softmax)")
    if problems:
        raise ConfigError(f"TransformerLens cannot express {'; '.join(problems)} — {SUPPORTED}")


def tl_config_dict(cfg: ModelConfig, rotary_adjacent_pairs: bool = True) -> dict:
    """The ``HookedTransformerConfig(**kwargs)`` for a minitf config, as plain JSON values.

    Raises ``ConfigError`` for what TL cannot express (conv_kernel > 0, d_input > 0, linear attention).
    """
    cfg.validate()
    _check_convertible(cfg)
    out = {"model_name": "minitf", "n_layers": cfg.n_layers, "d_model": cfg.d_model, "n_heads": cfg.n_heads,
           "d_head": cfg.d_head, "n_ctx": cfg.n_ctx, "d_vocab": cfg.vocab_size, "d_vocab_out": cfg.vocab_size,
           "attn_only": cfg.d_mlp == 0, "normalization_type": "LN" if cfg.layer_norm else None,
           "eps": 1e-5,  # torch.nn.LayerNorm's
           "positional_embedding_type": "rotary" if cfg.positional == "rope" else "standard",
           # minitf has no BOS convention of its own: strings are tokenized exactly as written
           "default_prepend_bos": False}
    if cfg.d_mlp:
        out.update(d_mlp=cfg.d_mlp, act_fn="gelu")  # TL's "gelu" is F.gelu (erf), as minitf's MLP
    if cfg.positional == "rope":
        out.update(rotary_dim=cfg.d_head, rotary_base=ROPE_BASE, rotary_adjacent_pairs=rotary_adjacent_pairs)
    return out


def _neox_perm(d_head: int) -> torch.Tensor:
    """Column order taking interleaved rotary pairs (2i, 2i+1) to halves (i, i + d_head/2)."""
    return torch.cat([torch.arange(0, d_head, 2), torch.arange(1, d_head, 2)])


@torch.no_grad()
def tl_state_dict(model, rotary_adjacent_pairs: bool = True) -> dict[str, torch.Tensor]:
    """minitf weights under TL's parameter names and shapes (see the module docstring).

    Buffers (TL's causal mask, rotary tables) are not included: TL builds them itself.
    """
    cfg = model.cfg
    _check_convertible(cfg)
    h, dh = cfg.n_heads, cfg.d_head
    sd = {"embed.W_E": model.embed.weight.clone(),
          "unembed.W_U": model.unembed.weight.T.clone(),
          "unembed.b_U": model.unembed.weight.new_zeros(cfg.vocab_size)}
    if cfg.positional != "rope":
        sd["pos_embed.W_pos"] = (model.pos_embed.weight.clone() if model.pos_embed is not None
                                 else model.embed.weight.new_zeros(cfg.n_ctx, cfg.d_model))
    perm = _neox_perm(dh) if cfg.positional == "rope" and not rotary_adjacent_pairs else None
    for i, block in enumerate(model.blocks):
        p = f"blocks.{i}."
        w = rearrange(block.attn.qkv.weight, "(three h dh) m -> three h m dh", three=3, h=h)
        b = rearrange(block.attn.qkv.bias, "(three h dh) -> three h dh", three=3, h=h)
        for j, name in enumerate("QKV"):
            wj, bj = w[j], b[j]
            if perm is not None and name != "V":
                wj, bj = wj[..., perm], bj[..., perm]
            sd[p + f"attn.W_{name}"], sd[p + f"attn.b_{name}"] = wj.clone(), bj.clone()
        sd[p + "attn.W_O"] = rearrange(block.attn.out.weight, "m (h dh) -> h dh m", h=h).clone()
        sd[p + "attn.b_O"] = block.attn.out.bias.clone()
        lns = [("ln1", block.ln1)] + ([("ln2", block.ln2)] if block.mlp is not None else [])
        for name, ln in lns:
            if ln.ln is not None:
                sd[p + f"{name}.w"], sd[p + f"{name}.b"] = ln.ln.weight.clone(), ln.ln.bias.clone()
        if block.mlp is not None:
            sd[p + "mlp.W_in"] = block.mlp.fc_in.weight.T.clone()
            sd[p + "mlp.b_in"] = block.mlp.fc_in.bias.clone()
            sd[p + "mlp.W_out"] = block.mlp.fc_out.weight.T.clone()
            sd[p + "mlp.b_out"] = block.mlp.fc_out.bias.clone()
    if model.ln_final.ln is not None:
        sd["ln_final.w"], sd["ln_final.b"] = model.ln_final.ln.weight.clone(), model.ln_final.ln.bias.clone()
    return {k: v.detach().contiguous() for k, v in sd.items()}


def tokenizer_from_vocab(vocab):
    """A HF ``PreTrainedTokenizerFast`` over ``vocab.tokens``: whitespace-separated token strings
    → ids, so TL's ``to_tokens("<bos> t1 t2")``, ``to_str_tokens`` and ``detect_head`` work.

    Raises ``ValueError`` if a token string contains whitespace (it could not round-trip); encoding a
    word outside the vocab raises tokenizers' "Missing [UNK] token" error.
    """
    require_lens()
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    bad = [t for t in vocab.tokens if not t or any(c.isspace() for c in t)]
    if bad:
        raise ValueError(f"vocab tokens {bad[:5]} contain whitespace; a whitespace-split tokenizer cannot "
                         "represent them (pass vocab=None and feed TL token ids)")
    # no unknown-token id: a string outside the vocab fails ("Missing [UNK] token"), never maps to 0
    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(vocab.tokens)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # pad (id 0) doubles as eos; no bos, so TL prepends nothing and never asks a hub for one
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=vocab.tokens[0], eos_token=vocab.tokens[0])


def to_hooked_transformer(model, vocab=None, rotary_adjacent_pairs: bool = True):
    """A ``transformer_lens.HookedTransformer`` computing exactly what ``model`` computes.

    ``model``: a minitf ``Transformer`` (its device and dtype are kept). ``vocab``: a
    ``minitf.Vocab``; if given, the TL model gets a tokenizer over its token strings.
    Weights are loaded as they are: no LayerNorm folding, centring or other TL processing.
    Raises ``ConfigError`` (conv_kernel > 0, d_input > 0, attention="linear"), ``ImportError`` (no lens extra).
    """
    HookedTransformer, HookedTransformerConfig = require_lens()
    param = next(model.parameters())
    cfg = HookedTransformerConfig(**tl_config_dict(model.cfg, rotary_adjacent_pairs), device=str(param.device),
                                  dtype=param.dtype)
    with warnings.catch_warnings():  # TL 3.x: "HookedTransformer is deprecated" (see docs/interop.md)
        warnings.simplefilter("ignore", DeprecationWarning)
        hooked = HookedTransformer(cfg, tokenizer=tokenizer_from_vocab(vocab) if vocab is not None else None)
    state = hooked.state_dict()  # TL's own buffers (mask, rotary tables) stay as TL built them
    ours = tl_state_dict(model, rotary_adjacent_pairs)
    unknown = sorted(set(ours) - set(state))
    if unknown:  # a TL release renamed a parameter: fail loudly rather than leave TL's random init
        raise RuntimeError(f"this TransformerLens has no parameters {unknown[:4]}; use transformer-lens>=3.0,<4")
    state.update(ours)
    hooked.load_state_dict(state, strict=True)
    expected = {n for n, _ in hooked.named_parameters()}
    if expected - set(ours):
        raise RuntimeError(f"TL parameters {sorted(expected - set(ours))[:4]} have no minitf counterpart")
    return hooked.eval()


def from_hooked_transformer(hooked, tie_embeddings: bool | None = None):
    """A minitf ``Transformer`` from a ``HookedTransformer`` whose architecture minitf has.

    ``tie_embeddings``: None ties them when W_U equals W_Eᵀ exactly. A "standard" TL model whose
    W_pos is all zero becomes positional='none'. NeoX-style rotary (rotary_adjacent_pairs=False)
    is un-permuted. Raises ``ConfigError`` listing every unsupported setting (and what is supported).
    """
    require_lens()
    from minitf.model import Transformer

    c, sd = hooked.cfg, {k: v.detach() for k, v in hooked.state_dict().items()}
    problems = []

    def need(ok, what):
        if not ok:
            problems.append(what)

    need(c.attention_dir == "causal", f"attention_dir={c.attention_dir!r}")
    need(c.attn_only or (c.act_fn == "gelu" and not c.gated_mlp), f"act_fn={c.act_fn!r}, gated_mlp={c.gated_mlp}")
    need(c.normalization_type in ("LN", None), f"normalization_type={c.normalization_type!r}")
    need(c.normalization_type is None or (c.eps == 1e-5 and not c.final_rms), f"eps={c.eps}, final_rms={c.final_rms}")
    need(c.positional_embedding_type in ("standard", "rotary"), f"positional_embedding_type={c.positional_embedding_type!r}")
    if c.positional_embedding_type == "rotary":
        need(c.rotary_dim == c.d_head and float(c.rotary_base) == ROPE_BASE
             and not (c.use_NTK_by_parts_rope or c.use_yarn_rope or c.rotary_scaling_factor != 1.0),
             f"rotary_dim={c.rotary_dim}, rotary_base={c.rotary_base} or rotary scaling")
    need(c.d_model == c.n_heads * c.d_head, f"d_model={c.d_model} != n_heads*d_head")
    need(c.n_key_value_heads in (None, c.n_heads), f"n_key_value_heads={c.n_key_value_heads}")
    need(c.use_attn_scale and math.isclose(float(c.attn_scale), math.sqrt(c.d_head)), f"attn_scale={c.attn_scale}")
    need(c.d_vocab_out == c.d_vocab, f"d_vocab_out={c.d_vocab_out} != d_vocab={c.d_vocab}")
    for flag in ("parallel_attn_mlp", "use_local_attn", "use_qk_norm", "use_normalization_before_and_after",
                 "use_attention_sinks"):
        need(not getattr(c, flag, False), f"{flag}=True")
    need(not (c.num_experts or 0), "mixture of experts")
    for cap in ("attn_scores_soft_cap", "output_logits_soft_cap", "clip_qkv"):
        need((getattr(c, cap, None) or -1) <= 0, f"{cap}={getattr(c, cap, None)}")
    need(not getattr(c, "use_logn_attn", False), "use_logn_attn=True")
    need(bool((sd["unembed.b_U"] == 0).all()), "unembed.b_U != 0 (minitf's unembed has no bias)")
    if problems:
        raise ConfigError(f"minitf cannot express this HookedTransformer ({'; '.join(problems)}); {SUPPORTED}")

    w_e, w_u = sd["embed.W_E"], sd["unembed.W_U"]
    equal = w_u.shape == w_e.T.shape and torch.equal(w_u, w_e.T)
    if tie_embeddings and not equal:
        raise ConfigError("tie_embeddings=True but this model's W_U is not W_E transposed; pass "
                          "tie_embeddings=None or False")
    tie_embeddings = equal if tie_embeddings is None else tie_embeddings
    if c.positional_embedding_type == "rotary":
        positional = "rope"
    else:
        positional = "none" if not bool(sd["pos_embed.W_pos"].any()) else "learned"
    cfg = ModelConfig(n_layers=c.n_layers, d_model=c.d_model, n_heads=c.n_heads, d_head=c.d_head,
                      d_mlp=0 if c.attn_only else c.d_mlp, vocab_size=c.d_vocab, n_ctx=c.n_ctx,
                      positional=positional, layer_norm=c.normalization_type == "LN",
                      tie_embeddings=tie_embeddings).validate()
    model = Transformer(cfg).to(device=w_e.device, dtype=w_e.dtype)
    unperm = None
    if positional == "rope" and not c.rotary_adjacent_pairs:
        unperm = torch.argsort(_neox_perm(c.d_head))
    ours = {"embed.weight": w_e, "unembed.weight": w_u.T}
    if positional == "learned":
        ours["pos_embed.weight"] = sd["pos_embed.W_pos"]
    for i in range(c.n_layers):
        p = f"blocks.{i}."
        ws, bs = [], []
        for name in "QKV":
            w, b = sd[p + f"attn.W_{name}"], sd[p + f"attn.b_{name}"]
            if unperm is not None and name != "V":
                w, b = w[..., unperm], b[..., unperm]
            ws.append(w)
            bs.append(b)
        ours[p + "attn.qkv.weight"] = rearrange(torch.stack(ws), "three h m dh -> (three h dh) m")
        ours[p + "attn.qkv.bias"] = rearrange(torch.stack(bs), "three h dh -> (three h dh)")
        ours[p + "attn.out.weight"] = rearrange(sd[p + "attn.W_O"], "h dh m -> m (h dh)")
        ours[p + "attn.out.bias"] = sd[p + "attn.b_O"]
        for name in (["ln1"] + ([] if c.attn_only else ["ln2"])) if cfg.layer_norm else []:
            ours[p + f"{name}.ln.weight"], ours[p + f"{name}.ln.bias"] = sd[p + f"{name}.w"], sd[p + f"{name}.b"]
        if not c.attn_only:
            ours[p + "mlp.fc_in.weight"], ours[p + "mlp.fc_in.bias"] = sd[p + "mlp.W_in"].T, sd[p + "mlp.b_in"]
            ours[p + "mlp.fc_out.weight"], ours[p + "mlp.fc_out.bias"] = sd[p + "mlp.W_out"].T, sd[p + "mlp.b_out"]
    if cfg.layer_norm:
        ours["ln_final.ln.weight"], ours["ln_final.ln.bias"] = sd["ln_final.w"], sd["ln_final.b"]
    model.load_state_dict(ours, strict=True)
    return model.eval()


def save_for_lens(model, out_dir, vocab=None, rotary_adjacent_pairs: bool = True) -> list[str]:
    """Write ``tl_config.json`` (HookedTransformerConfig kwargs), ``tl_state_dict.pt``
    (``torch.save`` of the HookedTransformer's state dict, TL's own convention) and, with a vocab,
    the tokenizer as HF's ``save_pretrained`` writes it (``tokenizer.json``, ``tokenizer_config.json``:
    ``AutoTokenizer.from_pretrained(out_dir)`` reads it offline) into ``out_dir``. Returns the paths written."""
    from minitf.fileio import atomic_write_bytes, atomic_write_json

    hooked = to_hooked_transformer(model, vocab, rotary_adjacent_pairs)
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, TL_CONFIG), os.path.join(out_dir, TL_STATE_DICT)]
    atomic_write_json(paths[0], tl_config_dict(model.cfg, rotary_adjacent_pairs))
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in hooked.state_dict().items()}, buffer)
    atomic_write_bytes(paths[1], buffer.getvalue())
    if vocab is not None:  # HF's own format: AutoTokenizer.from_pretrained(out_dir) reads it offline
        paths += [p for p in hooked.tokenizer.save_pretrained(out_dir) if os.path.exists(p)]
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minitf.interop",
                                     description="Convert a minitf run folder into files TransformerLens loads "
                                                 "without minitf (see docs/interop.md).")
    parser.add_argument("run_dir", help="a minitf run folder (config.json, model.safetensors, vocab.json)")
    parser.add_argument("--out", required=True, help="folder for tl_config.json, tl_state_dict.pt, tokenizer*.json")
    parser.add_argument("--rotary-halves", action="store_true",
                        help="rotary models: GPT-NeoX-style halves (TL's default) instead of adjacent pairs")
    args = parser.parse_args(argv)
    try:
        from minitf.checkpoint import load

        model, vocab = load(args.run_dir)
        try:
            tokenizer_vocab = vocab if not any(c.isspace() for t in vocab.tokens for c in t) else None
            paths = save_for_lens(model, args.out, tokenizer_vocab, not args.rotary_halves)
        except ImportError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    except MinitfError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
