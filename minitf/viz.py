"""Interactive attention views with circuitsvis (github.com/TransformerLensOrg/CircuitsVis).

``attention_html(model, tokens, layer, vocab)`` renders every head of one layer as
circuitsvis's ``attention_heads`` view (Elhage et al. 2021's pattern plots, hover a token to
see where it attends) and returns a complete, self-contained HTML page: circuitsvis's
JavaScript bundle is inlined (≈1.3 MB), not loaded from a CDN, so the file opens offline in
any browser and in a notebook (``IPython.display.HTML(html)``).

Token strings are untrusted text (any word of a user's facts file is a token): the data is
embedded script-safely (``script_safe_json``: ``<``, ``>``, ``&``, U+2028 and U+2029 written as
JSON escapes), so a token ``</script>``, ``<!--`` or ``</SCRIPT >`` is shown as written and never
ends or changes the page's script element.

Needs the ``lens`` extra: ``pip install -e ".[lens]"`` (circuitsvis); without it
``ImportError`` names the extra.
"""
import html as html_lib
import json
import os

import torch

from minitf.errors import InputError

LENS_INSTALL = 'pip install -e ".[lens]"'


def _require_circuitsvis():
    try:
        import circuitsvis.attention
    except ImportError as e:
        raise ImportError(f"minitf.viz needs circuitsvis, which is not installed: {LENS_INSTALL} "
                          "(the 'lens' extra)") from e
    return circuitsvis.attention


def _token_strings(ids: list[int], vocab) -> list[str]:
    if vocab is None:
        return [str(i) for i in ids]
    tokens = vocab.tokens if hasattr(vocab, "tokens") else list(vocab)
    bad = [i for i in ids if not 0 <= i < len(tokens)]
    if bad:
        raise InputError(f"token id {bad[0]} is not in the vocab ({len(tokens)} tokens)")
    return [str(tokens[i]) for i in ids]


def script_safe_json(value) -> str:
    """``json.dumps(value)`` that can stand inside an HTML ``<script>`` element: ``<``, ``>``,
    ``&``, U+2028 and U+2029 are written as ``\\u003c``-style escapes (the same value to a JSON or
    JavaScript parser), so no string in ``value`` can close the element (``</script>``), open an
    HTML comment (``<!--``) or end a JavaScript line."""
    text = json.dumps(value)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    return text


def _script_safe_view(src: str, element: str) -> str:
    """circuitsvis's page fragment ``src`` with the props of ``CircuitsVis.render(id, element,
    {props})`` (raw ``json.dumps``, unsafe inside a script) re-encoded by ``script_safe_json``."""
    call = f"CircuitsVis.{element},"
    at = src.rfind(call)
    if at < 0:
        raise RuntimeError(f"circuitsvis's page has no {call!r}: this circuitsvis version renders differently; "
                           f"{LENS_INSTALL} installs a supported one")
    start = at + len(call)
    start += len(src[start:]) - len(src[start:].lstrip())
    props, end = json.JSONDecoder().raw_decode(src, start)
    return src[:start] + script_safe_json(props) + src[end:]


@torch.no_grad()
def attention_patterns(model, tokens: torch.Tensor, layer: int) -> torch.Tensor:
    """(head, query, key) attention probabilities of ``layer`` for one sequence.

    ``model``: a minitf ``Transformer`` or a TransformerLens ``HookedTransformer`` (both cache
    ``blocks.{layer}.attn.hook_pattern``). ``tokens``: (seq,) or (1, seq) token ids.
    Raises ``InputError`` for a batch of several sequences or a layer out of range.
    """
    tokens = torch.as_tensor(tokens)
    if tokens.dim() == 2 and tokens.shape[0] == 1:
        tokens = tokens[0]
    if tokens.dim() != 1 or tokens.numel() == 0:
        raise InputError(f"attention_html shows one sequence: tokens must have shape (seq,) or (1, seq) "
                         f"(got {tuple(tokens.shape)})")
    n_layers = model.cfg.n_layers
    if not 0 <= layer < n_layers:
        raise InputError(f"layer {layer} does not exist: the model has layers 0..{n_layers - 1}")
    name = f"blocks.{layer}.attn.hook_pattern"
    device = next(model.parameters()).device
    _, cache = model.run_with_cache(tokens[None].long().to(device), names_filter=name)
    return cache[name][0].float().cpu()


def attention_html(model, tokens, layer: int, vocab=None, path=None) -> str:
    """A self-contained HTML page showing every head's attention pattern in ``layer``.

    ``tokens``: (seq,) or (1, seq) token ids (tensor or list). ``vocab``: a ``minitf.Vocab``
    (or a list of token strings) to label the axes; None labels them by id. ``path``: if
    given, the page is also written there (atomically). Returns the HTML.

    Raises ``InputError`` (bad tokens or layer), ``ImportError`` (no lens extra).
    Source: circuitsvis ``attention.attention_heads``; heads are named ``L{layer}H{head}``.
    """
    cv = _require_circuitsvis()
    tokens = torch.as_tensor(tokens)
    pattern = attention_patterns(model, tokens, layer)  # validates shape and layer
    ids = tokens.reshape(-1).tolist()
    strings = _token_strings(ids, vocab)
    names = [f"L{layer}H{h}" for h in range(pattern.shape[0])]
    view = cv.attention_heads(attention=pattern, tokens=strings, attention_head_names=names)
    title = f"attention, layer {layer} ({len(names)} heads, {len(ids)} tokens)"
    # local_src inlines the JS bundle; str(view) would load it from a CDN (needs the internet)
    body = _script_safe_view(view.local_src, "AttentionHeads")
    page = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html_lib.escape(title)}</title>\n</head>\n<body>\n"
            f"<h3>{html_lib.escape(title)}</h3>\n{body}\n</body>\n</html>\n")
    if path is not None:
        from minitf.fileio import atomic_write_bytes

        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        atomic_write_bytes(path, page.encode("utf-8"))
    return page
