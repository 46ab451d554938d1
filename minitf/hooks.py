"""Named hook points, TransformerLens style.

Every interesting activation in the model passes through a ``HookPoint`` (an identity
module). A hook function ``fn(activation, hook) -> activation | None`` may read the
activation or return a replacement — that is how caching, ablation and patching work
without touching the model's code.
"""
import contextlib
import difflib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from minitf.errors import InputError

HookFn = Callable[[torch.Tensor, "HookPoint"], torch.Tensor | None]
NameFilter = str | Callable[[str], bool] | list[str] | None


class HookPoint(nn.Module):
    """Identity module that exposes an activation under a stable dotted name."""

    def __init__(self):
        super().__init__()
        self.name = ""  # filled in by name_hook_points() once the module tree exists

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @property
    def active(self) -> bool:
        """True while some hook is attached (e.g. attention then materializes its pattern)."""
        return bool(self._forward_hooks)


def name_hook_points(model: nn.Module) -> None:
    """Give every HookPoint of ``model`` its dotted module path as ``name`` (done once, by the model)."""
    for name, module in model.named_modules():
        if isinstance(module, HookPoint):
            module.name = name


def hook_points(model: nn.Module) -> dict[str, HookPoint]:
    """``{name: HookPoint}`` of every hook point that exists (and so fires) in this model."""
    return {m.name: m for m in model.modules() if isinstance(m, HookPoint)}


def _matcher(names: NameFilter, points: dict[str, "HookPoint"]) -> Callable[[str], bool]:
    """A name test for ``names``: None (every point), a callable (taken as is), a name or a list
    of names. Every *name* must be a hook point of this model: a typo raises at once."""
    if names is None:
        return lambda name: True
    if callable(names):
        return names
    wanted = [names] if isinstance(names, str) else list(names)
    for name in wanted:
        if not isinstance(name, str):
            raise InputError(f"hook names must be strings or a filter function (got {name!r})")
        if name not in points:
            near = difflib.get_close_matches(name, list(points), n=3, cutoff=0.6)
            hint = f"did you mean {', '.join(near)}?" if near else f"available: {', '.join(sorted(points))}"
            raise InputError(f"no hook point named {name!r} in this model; {hint}")
    chosen = set(wanted)
    return lambda name: name in chosen


@contextlib.contextmanager
def hooks(model: nn.Module, fwd_hooks: list[tuple[NameFilter, HookFn]]) -> Iterator[None]:
    """Attach ``(names, fn)`` pairs for the duration of the block.

    ``names`` is a hook name, a list of names, or a filter function ``name -> bool``.
    ``fn(activation, hook)`` may return a replacement activation. Raises ``InputError``
    before attaching anything if a name (or any name of a list) is not a hook point of this
    model, naming the nearest valid names; a filter function may match zero or more.
    """
    points = hook_points(model)
    matchers = [(_matcher(names, points), fn) for names, fn in fwd_hooks]
    handles = []
    try:
        for match, fn in matchers:
            for name, point in points.items():
                if match(name):
                    handles.append(point.register_forward_hook(_wrap(fn)))
        yield
    finally:
        for h in handles:
            h.remove()


def _wrap(fn: HookFn):
    def forward_hook(module, inputs, output):
        return fn(output, module)

    return forward_hook


class ActivationCache(dict):
    """Activations by hook name (dict-like), with a TL-style ``cache["pattern", 0]`` shortcut."""

    _SHORT = {
        "pattern": "attn.hook_pattern", "q": "attn.hook_q", "k": "attn.hook_k",
        "v": "attn.hook_v", "z": "attn.hook_z", "attn_out": "hook_attn_out",
        "resid_pre": "hook_resid_pre", "resid_post": "hook_resid_post",
        "conv_out": "hook_conv_out", "post": "mlp.hook_post",
    }

    def __getitem__(self, key):
        if isinstance(key, tuple):
            short, layer = key
            key = f"blocks.{layer}.{self._SHORT.get(short, short)}"
        return super().__getitem__(key)


def run_with_cache(model: nn.Module, tokens: torch.Tensor, names_filter: NameFilter = None,
                   detach: bool = True, attention_mask: torch.Tensor | None = None):
    """Run the model and return ``(logits, ActivationCache)`` of the hook points selected.

    ``names_filter``: None (every hook point), a name, a list of names, or a function
    ``name -> bool``; an unknown name raises ``InputError``. The logits are those of
    ``model(tokens)`` up to float rounding: caching ``hook_pattern`` makes attention take the
    explicit softmax path (the pattern must be the one that produced the output) where the plain
    forward uses a fused kernel; the two agree to ≤ 1e-5 absolute in float32
    (tests/test_model.py checks it). Filter out the patterns for bit-identical logits.
    ``attention_mask`` (batch, seq), 1 = real token, is passed to the forward (padding; see
    ``Transformer.forward``): the cached activations at padding positions are meaningless."""
    cache = ActivationCache()

    def save(act, hook):
        cache[hook.name] = act.detach() if detach else act

    match = _matcher(names_filter, hook_points(model))
    with hooks(model, [(match, save)]):
        logits = model(tokens) if attention_mask is None else model(tokens, attention_mask)
    return logits, cache
