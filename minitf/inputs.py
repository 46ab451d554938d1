"""What a model accepts, checked before any compute (``Transformer.check_tokens`` and ``generate``
call these), and sampling in a safe dtype.

Every check raises one ``InputError`` naming the problem and the fix. The contract:

- token ids: an int64/int32 (batch, seq) tensor, ids in 0..vocab_size−1, seq ≤ n_ctx. Id 0
  (``<pad>``) is an ordinary token unless ``attention_mask`` says it pads: ids are never read as
  padding (random-token probes draw id 0 anywhere).
- vectors (a vector model, d_input > 0): float (batch, seq, d_input) in the model's dtype, finite.
- zero positions: seq 0 is allowed and gives (batch, 0, …) outputs; only ``generate``, which
  needs a last position to continue from, refuses an empty prompt.
- ``attention_mask``: (batch, seq) of 0/1, 1 = real token (HF / TransformerLens convention).
"""
import math
import numbers

import torch

from minitf.errors import InputError


def check_ids(tokens, cfg) -> None:
    """Token ids for a token model with config ``cfg`` (module docstring)."""
    if not isinstance(tokens, torch.Tensor) or tokens.dtype not in (torch.int64, torch.int32):
        got = tokens.dtype if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        hint = ("; float (batch, seq, d) vectors need a vector model: set d_input=d"
                if isinstance(tokens, torch.Tensor) and tokens.is_floating_point() else "")
        raise InputError(f"tokens must be an integer tensor of token ids (got {got}){hint}")
    if tokens.dim() != 2:
        raise InputError(f"tokens must have shape (batch, seq) (got {tuple(tokens.shape)}); "
                         "add a batch dimension with tokens[None]")
    if tokens.shape[1] > cfg.n_ctx:
        raise InputError(f"sequence length {tokens.shape[1]} exceeds the model's context "
                         f"n_ctx={cfg.n_ctx}; truncate the input or train with a larger n_ctx")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= cfg.vocab_size):
        bad = int(tokens.max()) if int(tokens.max()) >= cfg.vocab_size else int(tokens.min())
        raise InputError(f"token id {bad} is out of vocab (valid ids are 0..{cfg.vocab_size - 1})")


def check_vectors(x, cfg, dtype) -> None:
    """Inputs of a vector model with config ``cfg`` whose parameters are ``dtype``."""
    d = cfg.d_input
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(f"this is a vector model (d_input={d}): inputs must be a float tensor "
                         f"(batch, seq, {d}) (got {got}); token ids need a token model (d_input=0)")
    if x.dim() != 3 or x.shape[-1] != d:
        raise InputError(f"inputs must have shape (batch, seq, d_input={d}) (got {tuple(x.shape)})"
                         + ("; add a batch dimension with x[None]" if x.dim() == 2 and x.shape[-1] == d else ""))
    if x.dtype != dtype:
        raise InputError(f"inputs are {x.dtype} but the model is {dtype}; convert with x.to({dtype})")
    if x.shape[1] > cfg.n_ctx:
        raise InputError(f"sequence length {x.shape[1]} exceeds the model's context n_ctx={cfg.n_ctx}; "
                         "truncate the input or train with a larger n_ctx")
    if not bool(torch.isfinite(x).all()):
        raise InputError("inputs hold NaN or inf values")


def check_attention_mask(mask, shape, conv: bool = False) -> None:
    """``mask`` must be a (batch, seq) = ``shape`` tensor of 0/1 values (bool, int or float),
    1 = real token. With a causal conv (``conv``) each row's real tokens must also be contiguous
    (left or right padding): the conv mixes neighbouring positions, so a pad between two real
    tokens would stand where the earlier real token should."""
    if not isinstance(mask, torch.Tensor):
        raise InputError(f"attention_mask must be a tensor (got {type(mask).__name__}); "
                         "build it with torch.tensor(rows) or (tokens != pad_id).long()")
    if tuple(mask.shape) != tuple(shape):
        raise InputError(f"attention_mask has shape {tuple(mask.shape)} but the input is {tuple(shape)}: "
                         "it needs one 0/1 entry per token, (batch, seq)")
    if mask.is_complex() or (mask.numel() and not bool(((mask == 0) | (mask == 1)).all())):
        raise InputError("attention_mask must hold only 0 (padding) and 1 (real token)")
    real = mask.bool()
    if conv and real.shape[1] > 2:
        runs = (real[:, 1:] & ~real[:, :-1]).sum(-1) + real[:, 0].long()  # runs of real tokens per row
        if bool((runs > 1).any()):
            row = int((runs > 1).nonzero()[0])
            raise InputError(f"row {row} of attention_mask has padding between real tokens: this model's causal "
                             "conv (conv_kernel > 0) mixes neighbouring positions, so pad only on the left or "
                             "the right of each row")


def check_generate(tokens, max_new_tokens, temperature, attention_mask, n_ctx: int) -> None:
    """``generate``'s own arguments (the tokens and mask passed ``check_tokens`` already)."""
    if tokens.shape[1] == 0:
        raise InputError(f"generate needs a prompt of at least one token (got shape {tuple(tokens.shape)}): "
                         "nothing precedes the first new token; start the prompt with <bos>")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, numbers.Integral) or max_new_tokens < 0:
        raise InputError(f"max_new_tokens must be an integer >= 0 (got {max_new_tokens!r})")
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or not 0 <= temperature < math.inf:
        raise InputError(f"temperature must be a finite number >= 0, 0 meaning greedy (got {temperature!r})")
    if tokens.shape[1] + max_new_tokens > n_ctx:
        raise InputError(f"prompt ({tokens.shape[1]}) + max_new_tokens ({max_new_tokens}) exceeds n_ctx={n_ctx}")
    if attention_mask is not None:
        real = attention_mask.bool()
        if not bool(real.any(-1).all()):
            row = int((~real.any(-1)).nonzero()[0])
            raise InputError(f"row {row} of attention_mask has no real token: generate needs a prompt of at "
                             "least one token in every row; start each prompt with <bos>")
        if not bool(real[:, -1].all()):
            row = int((~real[:, -1]).nonzero()[0])
            raise InputError(f"row {row} of the prompt ends in padding (attention_mask 0 in the last column): "
                             "generate appends after the last column, so pad prompts on the left")


def sample_next(logits: torch.Tensor, temperature: float, generator=None) -> torch.Tensor:
    """One id per row of ``logits`` (batch, vocab) drawn from softmax(logits / temperature), T > 0.

    Computed in float32 (float64 for float64 logits), never in the model's float16 / bfloat16:
    a float16 logit of 10 / 1e-4 overflows to inf (and softmax to NaN) in float16, not in
    float32. Where even that overflows (a tiny T, e.g. 1e-40) the shifted (logits − max) / T in float64
    is used: the limit, the argmax (ties drawn evenly). For float32 logits at ordinary
    temperatures this is exactly ``softmax(logits / T)`` as before. ``FloatingPointError`` if a
    row holds NaN or +inf, or no finite logit (then there is no distribution to draw from).
    """
    x = logits if logits.dtype == torch.float64 else logits.float()
    top = x.max(-1, keepdim=True).values
    if bool(torch.isnan(x).any()) or not bool(torch.isfinite(top).all()):
        raise FloatingPointError("generate: the model's logits hold NaN or +inf, or a row has no finite logit, "
                                 "so there is no distribution to sample; check the weights and any hooks attached")
    scaled = x / temperature
    if not bool(torch.isfinite(scaled.max(-1).values).all()):
        scaled = (x.double() - top.double()) / temperature
    return torch.multinomial(torch.softmax(scaled, dim=-1), 1, generator=generator)[:, 0]
