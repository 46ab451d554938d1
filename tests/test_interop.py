"""minitf ↔ TransformerLens, checked by TransformerLens's own code (docs/interop.md).

Skipped only when transformer_lens is not importable (CI installs the ``lens`` extra);
the ImportError test runs either way.
"""
import html
import html.parser
import importlib.util
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from minitf.config import ModelConfig
from minitf.errors import ConfigError
from minitf.model import Transformer

HAVE_TL = importlib.util.find_spec("transformer_lens") is not None
needs_tl = pytest.mark.skipif(not HAVE_TL, reason='transformer_lens is not installed: pip install -e ".[lens]"')
FIXTURE = os.path.join(os.path.dirname(__file__), "data", "induction_run")
ATOL = RTOL = 1e-5


def randomized(cfg: ModelConfig, seed: int = 0) -> Transformer:
    """A model with O(1) activations and non-trivial LayerNorm gains and biases (not the init's)."""
    torch.manual_seed(seed)
    model = Transformer(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("ln.weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5)
    return model


COMBOS = [dict(d_mlp=d_mlp, layer_norm=ln, positional=pos, tie_embeddings=tie)
          for d_mlp, ln, pos, tie in itertools.product((0, 48), (True, False), ("learned", "rope", "none"),
                                                       (False, True))]


def combo_id(c):
    return (f"{'mlp' if c['d_mlp'] else 'attn_only'}-{'ln' if c['layer_norm'] else 'no_ln'}-"
            f"{c['positional']}-{'tied' if c['tie_embeddings'] else 'untied'}")


def small_cfg(**kw) -> ModelConfig:
    return ModelConfig(n_layers=2, d_model=32, n_heads=4, d_head=8, vocab_size=23, n_ctx=16, **kw)


def test_without_the_extra_every_entry_point_names_it(monkeypatch):
    from minitf import interop, viz

    monkeypatch.setitem(sys.modules, "transformer_lens", None)  # import now raises ImportError
    monkeypatch.setitem(sys.modules, "circuitsvis", None)
    model = Transformer(small_cfg())
    calls = [lambda: interop.to_hooked_transformer(model), lambda: interop.from_hooked_transformer(object()),
             lambda: viz.attention_html(model, torch.arange(5), 0)]
    for call in calls:
        with pytest.raises(ImportError, match=re.escape('pip install -e ".[lens]"')):
            call()


# rotary models both ways: TL's GPT-J-style adjacent pairs (minitf's own order) and GPT-NeoX halves
GRID = [(c, True) for c in COMBOS] + [(c, False) for c in COMBOS if c["positional"] == "rope"]


@needs_tl
@pytest.mark.parametrize("combo, rotary_adjacent_pairs", GRID,
                         ids=[combo_id(c) + ("" if adj else "-neox_halves") for c, adj in GRID])
def test_logits_match_both_ways(combo, rotary_adjacent_pairs):
    from minitf.interop import from_hooked_transformer, to_hooked_transformer

    model = randomized(small_cfg(**combo))
    tokens = torch.randint(0, 23, (4, 16), generator=torch.Generator().manual_seed(1))
    hooked = to_hooked_transformer(model, rotary_adjacent_pairs=rotary_adjacent_pairs)
    if combo["positional"] == "rope":
        assert hooked.cfg.rotary_adjacent_pairs == rotary_adjacent_pairs
    with torch.no_grad():
        ours, theirs = model(tokens), hooked(tokens)
    torch.testing.assert_close(theirs, ours, atol=ATOL, rtol=RTOL)
    back = from_hooked_transformer(hooked)
    for key in ("d_mlp", "layer_norm", "positional", "tie_embeddings", "n_ctx", "vocab_size", "n_heads"):
        assert getattr(back.cfg, key) == getattr(model.cfg, key), key
    expected = model.state_dict()
    assert back.state_dict().keys() == expected.keys()
    for key, value in back.state_dict().items():
        assert torch.equal(value, expected[key]), key  # exact: a relabelling, no arithmetic


def _hooked(cls, cfg):
    with warnings.catch_warnings():  # TL 3.x: "HookedTransformer is deprecated"
        warnings.simplefilter("ignore", DeprecationWarning)
        return cls(cfg)


@needs_tl
@pytest.mark.parametrize("positional", ["standard", "rotary"])
def test_a_model_built_by_transformer_lens_converts(positional):
    """TL's own init and TL's default (GPT-NeoX halves) rotary convention, not minitf's."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from minitf.interop import from_hooked_transformer

    cfg = HookedTransformerConfig(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, act_fn="gelu",
                                  d_vocab=23, n_ctx=16, normalization_type="LN", positional_embedding_type=positional,
                                  init_weights=True, seed=3, device="cpu")
    hooked = _hooked(HookedTransformer, cfg)
    with torch.no_grad():
        for name, p in hooked.named_parameters():  # TL inits biases to 0: make them matter
            if name.split(".")[-1].startswith("b_") and name != "unembed.b_U":
                p.add_(0.1 * torch.randn_like(p))
    model = from_hooked_transformer(hooked)
    assert model.cfg.positional == ("rope" if positional == "rotary" else "learned")
    tokens = torch.randint(0, 23, (3, 16))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), hooked(tokens), atol=ATOL, rtol=RTOL)


@needs_tl
def test_what_cannot_convert_is_one_clear_error():
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from minitf.interop import from_hooked_transformer, to_hooked_transformer

    with pytest.raises(ConfigError, match=r"causal conv \(conv_kernel=3\).*supported: attention-only"):
        to_hooked_transformer(Transformer(small_cfg(conv_kernel=3)))
    with pytest.raises(ConfigError, match=r"vector model \(d_input=3.*attention='linear'.*supported:"):
        to_hooked_transformer(Transformer(small_cfg(d_input=3, attention="linear")))
    cfg = HookedTransformerConfig(n_layers=1, d_model=32, n_heads=4, d_head=8, d_mlp=64, act_fn="relu",
                                  d_vocab=23, n_ctx=16, normalization_type="RMS", device="cpu")
    hooked = _hooked(HookedTransformer, cfg)
    with pytest.raises(ConfigError) as info:
        from_hooked_transformer(hooked)
    message = str(info.value)
    assert "act_fn='relu'" in message and "normalization_type='RMS'" in message and "supported:" in message
    with pytest.raises(ConfigError, match="tie_embeddings=True"):
        from_hooked_transformer(to_hooked_transformer(randomized(small_cfg())), tie_embeddings=True)


def _expected_tl(name, ours, tl_cache, hooked):
    """The TL activation that minitf's hook ``name`` must equal (the mapping in docs/interop.md)."""
    if name == "hook_pos_embed":
        return tl_cache[name][0]  # TL: (batch, pos, d_model); minitf: (pos, d_model)
    m = re.fullmatch(r"(blocks\.\d+\.)?(ln1|ln2|ln_final)\.hook_normalized", name)
    if m:
        if hooked.cfg.normalization_type == "LN":  # TL hooks x/scale, before its gain and bias
            ln = hooked.get_submodule(name.rsplit(".", 1)[0])
            return tl_cache[name] * ln.w + ln.b
        block = m.group(1) or ""  # no LayerNorm: minitf's hook sees the LN's input unchanged
        source = {"ln1": "hook_resid_pre", "ln2": "hook_resid_mid", "ln_final": None}[m.group(2)]
        if source is None:
            return tl_cache[f"blocks.{hooked.cfg.n_layers - 1}.hook_resid_post"]
        return _expected_tl(block + source, ours, tl_cache, hooked)
    if name.endswith("hook_resid_mid") and name not in tl_cache:  # attention-only: TL has no resid_mid
        return tl_cache[name.replace("hook_resid_mid", "hook_resid_post")]
    return tl_cache[name]


@needs_tl
@pytest.mark.parametrize("combo", [dict(d_mlp=0, layer_norm=True, positional="learned", tie_embeddings=False),
                                   dict(d_mlp=48, layer_norm=True, positional="rope", tie_embeddings=True),
                                   dict(d_mlp=48, layer_norm=False, positional="none", tie_embeddings=False)],
                         ids=combo_id)
def test_every_minitf_hook_equals_transformer_lens(combo):
    from minitf.interop import to_hooked_transformer

    model = randomized(small_cfg(**combo), seed=2)
    hooked = to_hooked_transformer(model)
    tokens = torch.randint(0, 23, (2, 12))
    _, ours = model.run_with_cache(tokens)
    _, theirs = hooked.run_with_cache(tokens)
    assert ours, "no activations cached"
    for name, act in ours.items():
        torch.testing.assert_close(act, _expected_tl(name, ours, theirs, hooked), atol=ATOL, rtol=RTOL,
                                   msg=lambda m, name=name: f"{name}: {m}")


def _no_repeat_probe(vocab, n_seq: int, segment: int, seed: int = 0):
    """<bos> + a segment of distinct symbols + the same segment (TL's token-equality patterns
    then mark exactly minitf's probe positions)."""
    rng = np.random.default_rng(seed)
    symbols = [i for i, t in enumerate(vocab.tokens) if t.startswith("t")]
    segs = np.stack([rng.permutation(symbols)[:segment] for _ in range(n_seq)])
    bos = vocab.index["<bos>"]
    return torch.as_tensor(np.concatenate([np.full((n_seq, 1), bos), segs, segs], axis=1))


@needs_tl
def test_head_detector_ranks_heads_as_minitf_probes():
    """TL's detect_head ("mul" measure) vs minitf.probes on a trained induction run.

    On sequences without repeated symbols inside a segment both scores measure the same
    attention entries; TL divides by all n query rows, minitf by the rows it scores, so
    TL = minitf · (scored rows / n) exactly. On minitf's own probe (random draws, repeats
    inside segments) TL's induction pattern also marks the other earlier occurrences: the
    values differ by definition (docs/interop.md) but the top heads agree.
    """
    from transformer_lens.head_detector import detect_head

    import minitf
    from minitf.interop import to_hooked_transformer
    from minitf.probes import all_scores, prefix_matching_score, previous_token_score, repeated_random_tokens

    model, vocab = minitf.load(FIXTURE)
    hooked = to_hooked_transformer(model, vocab)
    segment = 40
    tokens = _no_repeat_probe(vocab, 12, segment)
    n = tokens.shape[1]
    strings = [" ".join(vocab.decode(row)) for row in tokens]
    tl_prev = detect_head(hooked, strings, "previous_token_head").numpy()
    tl_ind = detect_head(hooked, strings, "induction_head").numpy()
    prev = previous_token_score(model, tokens)
    ind = prefix_matching_score(model, tokens, segment, start=1)
    np.testing.assert_allclose(tl_prev, prev * (n - 1) / n, atol=1e-5)
    np.testing.assert_allclose(tl_ind, ind * segment / n, atol=1e-5)
    # a trained circuit: previous-token heads in layer 0, induction heads in layer 1
    assert np.unravel_index(tl_prev.argmax(), tl_prev.shape)[0] == 0 and tl_prev.max() > 0.2
    assert np.unravel_index(tl_ind.argmax(), tl_ind.shape)[0] == 1 and tl_ind.max() > 0.2

    symbols = [i for i, t in enumerate(vocab.tokens) if t.startswith("t")]
    probe = repeated_random_tokens(np.random.default_rng(1), symbols, 12, segment, bos_id=vocab.index["<bos>"])
    scores = all_scores(model, probe, segment, start=1)
    strings = [" ".join(vocab.decode(row)) for row in probe]
    for head_name, key in (("previous_token_head", "previous_token"), ("induction_head", "prefix_matching")):
        tl = detect_head(hooked, strings, head_name).numpy()
        ours = np.asarray(scores[key])
        # the two strongest heads of each kind, in order, and the same heads above half the best
        assert list(np.argsort(-tl, axis=None)[:2]) == list(np.argsort(-ours, axis=None)[:2]), head_name
        assert np.array_equal(tl > tl.max() / 2, ours > ours.max() / 2), head_name
    # measured (tests/data/induction_run): previous-token L0H1, L0H2 (minitf 0.75, TL 0.74), L0H0;
    # induction L1H1, L1H2, L1H0 (minitf 0.67 / 0.59 / 0.57, TL 0.52 / 0.46 / 0.45)


@needs_tl
@pytest.mark.parametrize("side", ["left", "right"])
def test_random_ids_and_a_padding_mask_match_transformer_lens(side):
    """A loaded model (vocab attached) runs random ids with <pad> (id 0) anywhere, as TL's head
    detector draws them, and with an attention_mask gives TL's masked logits at real positions."""
    import minitf
    from minitf.interop import to_hooked_transformer

    model, vocab = minitf.load(FIXTURE)
    hooked = to_hooked_transformer(model, vocab)
    tokens = torch.randint(0, len(vocab), (4, 24))
    tokens[:, [2, 9]] = 0
    mask = torch.ones_like(tokens)
    for row, n_pad in enumerate((0, 3, 7, 1)):
        if side == "left":
            mask[row, :n_pad] = 0
        else:
            mask[row, tokens.shape[1] - n_pad:] = 0
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), hooked(tokens), atol=ATOL, rtol=RTOL)
        ours, theirs = model(tokens, attention_mask=mask), hooked(tokens, attention_mask=mask)
    real = mask.bool()
    torch.testing.assert_close(ours[real], theirs[real], atol=ATOL, rtol=RTOL)


@needs_tl
def test_cli_output_loads_with_transformer_lens_alone(tmp_path):
    """The docs/interop.md snippet: TL + transformers only, no minitf import."""
    import minitf
    from minitf.interop import main, to_hooked_transformer

    assert main([FIXTURE, "--out", str(tmp_path)]) == 0
    assert sorted(os.listdir(tmp_path)) >= ["tl_config.json", "tl_state_dict.pt", "tokenizer.json"]
    code = f"""
import json, sys, torch
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformers import AutoTokenizer
out = {str(tmp_path)!r}
cfg = HookedTransformerConfig(**json.load(open(out + "/tl_config.json")))
model = HookedTransformer(cfg, tokenizer=AutoTokenizer.from_pretrained(out))
model.load_state_dict(torch.load(out + "/tl_state_dict.pt", weights_only=True))
assert not any(m.startswith("minitf") for m in sys.modules), "minitf was imported"
tokens = model.to_tokens("<bos> t1 t2 t3 t1 t2")
torch.save((tokens, model(tokens)), out + "/logits.pt")
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, env=env)
    tokens, logits = torch.load(tmp_path / "logits.pt", weights_only=True)
    model, vocab = minitf.load(FIXTURE)
    with pytest.raises(Exception, match="UNK"):  # a word outside the vocab is an error, not id 0
        to_hooked_transformer(model, vocab).to_tokens("t1 nope")
    assert tokens[0].tolist() == vocab.encode("<bos> t1 t2 t3 t1 t2".split())
    with torch.no_grad():
        torch.testing.assert_close(logits, model(tokens), atol=ATOL, rtol=RTOL)


class _Structure(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.scripts, self._in_script = [], [], False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data):
        if self._in_script:
            self.scripts.append(data)


def _attention_page(tmp_path):
    import minitf
    from minitf.viz import attention_html, attention_patterns

    model, vocab = minitf.load(FIXTURE)
    tokens = torch.tensor(vocab.encode("<bos> t5 t9 t2 t7 t5 t9 t2 t7".split()))
    path = tmp_path / "attention.html"
    page = attention_html(model, tokens, 1, vocab, path=str(path))
    return page, path, vocab.decode(tokens), attention_patterns(model, tokens, 1)


@needs_tl
def test_attention_html_is_a_self_contained_circuitsvis_page(tmp_path):
    """Structure and data: what a browser needs, checked without one (CI has none; see docs)."""
    page, path, strings, pattern = _attention_page(tmp_path)
    assert path.read_text(encoding="utf-8") == page
    assert page.startswith("<!DOCTYPE html>") and "unpkg.com" not in page  # offline: JS inlined
    parser = _Structure()
    parser.feed(page)
    divs = [a["id"] for t, a in parser.tags if t == "div" and a.get("id", "").startswith("circuits-vis-")]
    assert len(divs) == 1
    script = max(parser.scripts, key=len)
    assert len(script) > 100_000 and "CircuitsVis" in script  # the bundle itself
    call = re.search(r'CircuitsVis\.render\(\s*"(circuits-vis-[^"]+)",\s*CircuitsVis\.AttentionHeads,\s*(\{.*\})\s*\)',
                     script, re.DOTALL)
    assert call and call.group(1) == divs[0]
    props = json.loads(call.group(2))
    assert props["tokens"] == strings and props["attentionHeadNames"] == ["L1H0", "L1H1", "L1H2", "L1H3"]
    attention = np.asarray(props["attention"])
    assert attention.shape == (4, len(strings), len(strings))
    np.testing.assert_allclose(attention, pattern.numpy(), atol=1e-6)
    np.testing.assert_allclose(attention.sum(-1), 1.0, atol=1e-5)


@needs_tl
@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="no chromium on PATH (Debian: apt-get install -y chromium); the page's structure "
                           "is checked by test_attention_html_is_a_self_contained_circuitsvis_page")
def test_attention_html_renders_in_headless_chromium(tmp_path):
    """circuitsvis draws with React + canvas: the head selector, the zoomed head, painted canvases."""
    page, path, _, _ = _attention_page(tmp_path)
    # after rendering, count each canvas's painted pixels into an attribute --dump-dom shows
    probe = ("<script>setTimeout(() => document.body.setAttribute('data-painted', JSON.stringify("
             "[...document.querySelectorAll('canvas')].map(c => c.getContext('2d')"
             ".getImageData(0, 0, c.width, c.height).data.filter((v, i) => i % 4 == 3 && v > 0).length))), 2000)"
             "</script></body>")
    path.write_text(page.replace("</body>", probe), encoding="utf-8")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000"]
    dom = subprocess.run(["chromium", *flags, "--dump-dom", path.as_uri()], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    rendered = re.sub(r"<script.*?</script>", "", dom, flags=re.DOTALL)  # what React put in the page
    for text in ("Head Selector", "L1H0", "L1H1", "L1H2", "L1H3", "L1H0 Zoomed"):
        assert text in rendered, f"{text!r} not rendered"
    painted = json.loads(html.unescape(re.search(r'data-painted="([^"]*)"', dom).group(1)))
    assert len(painted) == 5 and min(painted) > 1000, painted  # 4 thumbnails + the zoomed head
