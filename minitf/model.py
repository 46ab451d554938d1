"""A decoder-only transformer, top to bottom in one file.

tokens → embed (+ learned positions) → n_layers × Block → final LayerNorm → unembed → logits
vectors → read_in (+ learned positions) → n_layers × Block → final LayerNorm → read_out → (…, 1)
        [a vector model, cfg.d_input > 0: in-context regression (Garg et al. 2022)]

Block (pre-LN):  resid += conv(resid)              [optional, conv_kernel > 0]
                 resid += attn(ln1(resid))
                 resid += mlp(ln2(resid))          [absent when d_mlp == 0]

Every activation a probe might want passes a HookPoint named as in TransformerLens
(``blocks.0.attn.hook_pattern``, ``blocks.1.hook_resid_post``, ...), so caching,
ablation and patching need no model surgery (see ``minitf.hooks``).
"""
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from minitf.attention import attention, backend_problem
from minitf.config import ModelConfig
from minitf.errors import ConfigError, InputError
from minitf.hooks import HookPoint, hooks, name_hook_points, run_with_cache
from minitf.inputs import check_attention_mask, check_generate, check_ids, check_vectors, sample_next


class LayerNorm(nn.Module):
    """Pre-LN normalization; an identity (with the same hook) when layer_norm=False."""

    def __init__(self, d_model: int, enabled: bool):
        super().__init__()
        self.ln = nn.LayerNorm(d_model) if enabled else None
        self.hook_normalized = HookPoint()

    def forward(self, x):
        return self.hook_normalized(self.ln(x) if self.ln is not None else x)


class CausalConv(nn.Module):
    """Channel-mixing Conv1d over the sequence, left-padded so position t sees only ≤ t.

    Mixing the previous tokens into each position ("smeared keys", Olsson et al. 2022)
    hands attention a previous-token feature for free; in docs/headline.md it is what made
    in-context binding learnable in ~1000 steps. A depthwise conv did not work.
    """

    def __init__(self, d_model: int, kernel: int):
        super().__init__()
        self.kernel = kernel
        self.conv = nn.Conv1d(d_model, d_model, kernel_size=kernel)

    def forward(self, x, real=None):  # x: (batch, pos, d_model); real: (batch, pos) bool or None
        if x.shape[1] == 0:  # no positions: nothing to convolve (Conv1d refuses an input shorter than its kernel)
            return x.new_zeros(x.shape)
        if real is not None:  # padding reads as the zeros left of the sequence, as without padding
            x = x * real[..., None].to(x.dtype)
        x = F.pad(rearrange(x, "b p d -> b d p"), (self.kernel - 1, 0))
        return rearrange(self.conv(x), "b d p -> b p d")


def rotary(x, base: float = 10000.0, positions=None):
    """Rotary position embedding on (batch, head, pos, d_head): rotate feature pairs by pos·θ_i.
    ``positions`` (batch, pos): each token's position (padding shifts them); None: 0..pos-1."""
    d, n = x.shape[-1], x.shape[-2]
    freqs = base ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)
    if positions is None:
        angles = torch.arange(n, device=x.device, dtype=torch.float32)[:, None] * freqs[None, :]
    else:
        angles = positions[:, None, :, None].to(torch.float32) * freqs
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.flatten(-2)


class Attention(nn.Module):
    """Multi-head causal self-attention: (batch, pos, d_model) → (batch, pos, d_model).

    Hooks: hook_q / hook_k / hook_v (batch, pos, head, d_head), hook_pattern (batch, head,
    query, key), hook_z (batch, pos, head, d_head). The backend is ``cfg.attn_impl`` (see
    ``minitf.attention``) unless ``Transformer.use_attention`` overrides it.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        # One fused QKV matmul: fewer, larger ops is what makes tiny models fast on CPU.
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)
        self.hook_q, self.hook_k, self.hook_v = HookPoint(), HookPoint(), HookPoint()
        self.hook_pattern = HookPoint()  # (batch, head, query, key) probabilities (linear: unnormalised scores)
        self.hook_z = HookPoint()  # per-head outputs before the output projection
        self.impl: str | None = None  # a runtime override of cfg.attn_impl (Transformer.use_attention)

    def forward(self, x, real=None, positions=None):
        q, k, v = rearrange(self.qkv(x), "b p (three h d) -> three b p h d",
                            three=3, h=self.cfg.n_heads)
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)  # (batch, pos, head, d_head)
        q, k, v = (rearrange(t, "b p h d -> b h p d") for t in (q, k, v))
        if self.cfg.positional == "rope":
            q, k = rotary(q, positions=positions), rotary(k, positions=positions)
        # Only a hooked pattern forces the materializing path; otherwise the fused backend runs.
        pattern_hook = self.hook_pattern if self.hook_pattern.active else None
        z = attention(q, k, v, causal=True, impl=self.impl or self.cfg.attn_impl, pattern_hook=pattern_hook,
                      kind=self.cfg.attention, key_mask=real)
        z = self.hook_z(rearrange(z, "b h p d -> b p h d"))
        return self.out(rearrange(z, "b p h d -> b p (h d)"))

    # Per-head weights as views of the fused parameters, TransformerLens shapes and x @ W
    # convention; editing a view edits the model.
    def _w_in(self, which: int) -> torch.Tensor:
        d = self.cfg.d_model
        w = self.qkv.weight[which * d:(which + 1) * d]  # (h·d_head, d_model), rows head-major
        return rearrange(w, "(h dh) d -> h d dh", h=self.cfg.n_heads)

    @property
    def W_Q(self) -> torch.Tensor:
        """(head, d_model, d_head): q = x @ W_Q[h] (+ b_Q)."""
        return self._w_in(0)

    @property
    def W_K(self) -> torch.Tensor:
        """(head, d_model, d_head)."""
        return self._w_in(1)

    @property
    def W_V(self) -> torch.Tensor:
        """(head, d_model, d_head)."""
        return self._w_in(2)

    @property
    def W_O(self) -> torch.Tensor:
        """(head, d_head, d_model): out = Σ_h z[h] @ W_O[h] (+ b_O)."""
        return rearrange(self.out.weight, "d (h dh) -> h dh d", h=self.cfg.n_heads)

    def head_weights(self):
        """(W_V, W_O) per head: (head, d_model, d_head) and (head, d_head, d_model)."""
        return self.W_V, self.W_O


class MLP(nn.Module):
    """GELU MLP: (batch, pos, d_model) → (batch, pos, d_model); hook_pre / hook_post are
    (batch, pos, d_mlp), before and after the GELU."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc_in = nn.Linear(cfg.d_model, cfg.d_mlp)
        self.fc_out = nn.Linear(cfg.d_mlp, cfg.d_model)
        self.hook_pre, self.hook_post = HookPoint(), HookPoint()

    def forward(self, x):
        return self.fc_out(self.hook_post(F.gelu(self.hook_pre(self.fc_in(x)))))


class Block(nn.Module):
    """One pre-LN block (conv, attention, MLP, each added to the residual stream), hooks named
    as in TransformerLens: hook_resid_pre / hook_resid_mid / hook_resid_post and hook_attn_out
    (batch, pos, d_model); hook_conv_out and hook_mlp_out only where a conv / an MLP exists."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.hook_resid_pre = HookPoint()
        # Hook points exist only where they fire: no conv hook without a conv, no MLP hooks without an MLP.
        self.conv = CausalConv(cfg.d_model, cfg.conv_kernel) if cfg.conv_kernel else None
        self.hook_conv_out = HookPoint() if cfg.conv_kernel else None
        self.ln1 = LayerNorm(cfg.d_model, cfg.layer_norm)
        self.attn = Attention(cfg)
        self.hook_attn_out = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.ln2 = LayerNorm(cfg.d_model, cfg.layer_norm) if cfg.d_mlp else None
        self.mlp = MLP(cfg) if cfg.d_mlp else None
        self.hook_mlp_out = HookPoint() if cfg.d_mlp else None
        self.hook_resid_post = HookPoint()

    def forward(self, resid, real=None, positions=None):  # real, positions: padding (Transformer.forward)
        resid = self.hook_resid_pre(resid)
        if self.conv is not None:
            resid = resid + self.hook_conv_out(self.conv(resid, real))
        resid = resid + self.hook_attn_out(self.attn(self.ln1(resid), real, positions))
        resid = self.hook_resid_mid(resid)
        if self.mlp is not None:
            resid = resid + self.hook_mlp_out(self.mlp(self.ln2(resid)))
        return self.hook_resid_post(resid)


class Transformer(nn.Module):
    """The whole model: ``Transformer(cfg)(tokens)`` → logits (batch, seq, vocab_size), or for a
    vector model (``cfg.d_input > 0``) inputs (batch, seq, d_input) → (batch, seq, 1).

    Weights are initialised N(0, init_std²), biases 0. ``vocab`` (None until attached, e.g. by
    ``minitf.load``) enables ``to_tokens`` / ``to_string``. Raises ``ConfigError`` for an
    invalid config and ``InputError`` for bad inputs (see ``check_tokens``).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg.validate()
        # A vector model's read-in takes the embedding's place (same slot in the init order); a
        # token model creates exactly the modules it always did, so its init draws are unchanged.
        if cfg.d_input:
            self.embed, self.read_in = None, nn.Linear(cfg.d_input, cfg.d_model)
        else:
            self.embed, self.read_in = nn.Embedding(cfg.vocab_size, cfg.d_model), None
        self.hook_embed = HookPoint()  # the embedding's or the read-in's output
        self.pos_embed = nn.Embedding(cfg.n_ctx, cfg.d_model) if cfg.positional == "learned" else None
        self.hook_pos_embed = HookPoint() if self.pos_embed is not None else None
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_final = LayerNorm(cfg.d_model, cfg.layer_norm)
        if cfg.d_input:
            self.unembed, self.read_out = None, nn.Linear(cfg.d_model, 1)
        else:
            self.unembed, self.read_out = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False), None
        if cfg.tie_embeddings:
            self.unembed.weight = self.embed.weight
        self.apply(self._init)
        name_hook_points(self)
        # The token strings, when known (minitf.load and run contexts attach them): enables
        # to_tokens / to_string.
        self.vocab = None

    def _init(self, module):
        # One knob (init_std) for every weight matrix: it decides if/when induction heads form.
        if isinstance(module, (nn.Linear, nn.Embedding, nn.Conv1d)):
            nn.init.normal_(module.weight, std=self.cfg.init_std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None,
                check: bool = True) -> torch.Tensor:
        """tokens (batch, seq) int → logits (batch, seq, vocab); for a vector model (d_input > 0)
        float inputs (batch, seq, d_input) → predictions (batch, seq, 1). A sequence of 0 positions
        gives (batch, 0, …) outputs.

        ``attention_mask`` (batch, seq), 1 = real token, 0 = padding (as in HF / TransformerLens):
        no position attends to padding, learned and rotary positions count real tokens only (left
        padding shifts them so a row's real tokens have positions 0..n−1), and the conv reads
        padding as zeros; so the outputs at real positions equal the unpadded row's (fp32: within
        1e-5), on every backend (the Triton kernel takes no mask: a masked call runs sdpa). Outputs
        at padding positions are finite and meaningless. Without a mask (or with one of all ones)
        the computation is exactly the unmasked one. ``check=False`` skips the input checks (for
        callers that validated already, e.g. a vmapped ensemble)."""
        if check:
            self.check_tokens(tokens, attention_mask)
        real = None if attention_mask is None or bool(attention_mask.bool().all()) else attention_mask.bool()
        positions = None if real is None else (real.long().cumsum(-1) - 1).clamp(min=0)
        if self.read_in is not None:
            resid = self.hook_embed(self.read_in(tokens))
        else:
            resid = self.hook_embed(self.embed(tokens))
        if self.pos_embed is not None and real is None:
            arange = torch.arange(tokens.shape[1], device=tokens.device)
            resid = resid + self.hook_pos_embed(self.pos_embed(arange))[None]
        elif self.pos_embed is not None:  # padded: (batch, pos, d_model), each row counts its own real tokens
            resid = resid + self.hook_pos_embed(self.pos_embed(positions))
        for block in self.blocks:
            resid = block(resid, real, positions)
        head = self.read_out if self.read_out is not None else self.unembed
        return head(self.ln_final(resid))

    def run_with_cache(self, tokens, names_filter=None, attention_mask=None):
        """``(logits, cache)``; see ``minitf.hooks.run_with_cache`` (and its note on the logits)."""
        return run_with_cache(self, tokens, names_filter, attention_mask=attention_mask)

    def run_with_hooks(self, tokens, fwd_hooks=(), attention_mask=None):
        """Logits of a forward pass with ``fwd_hooks`` = [(name or filter, fn), ...] attached
        for this pass only (TransformerLens's name for ``with minitf.hooks(model, ...)``)."""
        with hooks(self, list(fwd_hooks)):
            return self(tokens, attention_mask)

    def use_attention(self, impl: str | None) -> "Transformer":
        """Run attention with backend ``impl`` ("naive", "sdpa", ...) instead of cfg.attn_impl,
        without changing the config (None: back to the config's). Returns the model."""
        if impl is not None and (why := backend_problem(impl, self.cfg.d_head)):
            raise ConfigError(why)
        for block in self.blocks:
            block.attn.impl = impl
        return self

    def to_tokens(self, text) -> torch.Tensor:
        """A whitespace-separated string (or list of token strings) → (1, seq) int64 ids on the
        model's device; needs an attached vocab (``minitf.load`` attaches it). No BOS is added:
        write ``<bos>`` yourself where the model was trained with one. An empty string gives a
        (1, 0) int64 tensor (the model maps it to (1, 0, vocab) logits; ``generate`` refuses it)."""
        vocab = self._need_vocab("to_tokens")
        return torch.tensor([vocab.encode(text)], dtype=torch.long, device=self.embed.weight.device)

    def to_string(self, tokens):
        """Ids → a space-joined string (1-D tensor or list) or a list of strings (2-D)."""
        vocab = self._need_vocab("to_string")
        if isinstance(tokens, torch.Tensor) and tokens.dim() == 2:
            return [" ".join(vocab.decode(row)) for row in tokens]
        return " ".join(vocab.decode(tokens))

    def _need_vocab(self, what: str):
        if self.vocab is None:
            raise InputError(f"{what} needs the model's vocab: load the model with minitf.load(run_dir), "
                             "or set model.vocab = minitf.Vocab(tokens)")
        return self.vocab

    @torch.no_grad()
    def generate(self, tokens: torch.Tensor, max_new_tokens: int, temperature: float = 0.0,
                 generator: torch.Generator | None = None, stop_token: int | list[int] | None = None,
                 attention_mask: torch.Tensor | None = None):
        """Continue ``tokens`` (batch, seq) by ``max_new_tokens`` (batch, seq + new) ids.

        ``temperature``: 0 = greedy (argmax); any finite T > 0 samples from softmax(logits / T),
        computed in float32 (float64 for a float64 model) whatever the model's dtype, so a float16
        model at T = 1e-4 samples almost surely the argmax instead of overflowing; a T so small that
        even float32 overflows gives the exact limit, the argmax (``minitf.inputs.sample_next``).
        T = 1 is the model's own distribution; large T tends to uniform. Pass a seeded ``generator`` to
        reproduce. Each row stops on its own at a ``stop_token`` (an id or a list of ids): later
        positions of that row repeat the stop token, and generation ends when every row has
        stopped. ``attention_mask`` (batch, seq): prompts of different lengths, padded on the
        left (new tokens are appended after the last column). Raises ``InputError`` for an empty
        prompt (seq 0, or a row with no real token), right padding, a negative or non-integer
        max_new_tokens, a temperature that is negative, inf or NaN, or a prompt + max_new_tokens
        longer than n_ctx; ``FloatingPointError`` if the model's logits are NaN or +inf.
        """
        if self.cfg.d_input:
            raise InputError("generate needs a token model; a vector model (d_input > 0) predicts a "
                             "scalar per position: call model(x)")
        self.check_tokens(tokens, attention_mask)
        check_generate(tokens, max_new_tokens, temperature, attention_mask, self.cfg.n_ctx)
        stops = [] if stop_token is None else [stop_token] if isinstance(stop_token, int) else list(stop_token)
        stop_ids = torch.tensor(stops, dtype=tokens.dtype, device=tokens.device)
        done = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
        last = torch.zeros(tokens.shape[0], dtype=tokens.dtype, device=tokens.device)
        for _ in range(max_new_tokens):
            logits = self(tokens, attention_mask, check=False)[:, -1]
            nxt = sample_next(logits, temperature, generator) if temperature > 0 else logits.argmax(-1)
            nxt = torch.where(done, last, nxt)  # a stopped row repeats its stop token
            tokens = torch.cat([tokens, nxt[:, None]], dim=1)
            if attention_mask is not None:
                attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(nxt), 1)], dim=1)
            if stops:
                stopped_now = torch.isin(nxt, stop_ids) & ~done
                last = torch.where(stopped_now, nxt, last)
                done |= stopped_now
                if bool(done.all()):
                    break
        return tokens

    def num_params(self) -> int:
        """Number of parameters (tied embeddings counted once)."""
        return sum(p.numel() for p in self.parameters())

    # -- input checks: bad input is one InputError naming the fix, raised before any compute ----
    def check_tokens(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None) -> None:
        """Reject bad input before any compute, with the fix in the message (``InputError``).

        Token model: int (batch, seq) ids < vocab_size. Vector model (``d_input > 0``): float
        (batch, seq, d_input) in the parameters' dtype, finite. Both: seq ≤ n_ctx (seq 0 is
        allowed), and ``attention_mask`` (optional) of 0/1 values with the shape (batch, seq).
        Token ids are never read as padding: id 0 (``<pad>``) anywhere is an ordinary token unless
        the mask says it pads.
        """
        if self.cfg.d_input:
            check_vectors(tokens, self.cfg, self.read_in.weight.dtype)
        else:
            check_ids(tokens, self.cfg)
        if attention_mask is not None:
            check_attention_mask(attention_mask, tokens.shape[:2], conv=bool(self.cfg.conv_kernel))
