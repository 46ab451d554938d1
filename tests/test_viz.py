"""minitf.viz: the attention page embeds token strings script-safely (untrusted text in a <script>)."""
import html.parser
import importlib.util
import json
import re

import pytest
import torch

from minitf.config import ModelConfig
from minitf.data import Vocab
from minitf.model import Transformer
from minitf.viz import script_safe_json

needs_cv = pytest.mark.skipif(importlib.util.find_spec("circuitsvis") is None,
                              reason='circuitsvis is not installed: pip install -e ".[lens]"')
HOSTILE = ["</script>", "<!--", "</SCRIPT >", "<script>", "-->", "</ScRiPt\t>", "a&amp;b", "x\u2028y", "p\u2029q",
           "<img src=x onerror=alert(1)>", "]]>", "\\u003c/script>"]


class Page(html.parser.HTMLParser):
    """Start/end tags and each script element's text, as a browser's tokenizer splits them."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.starts, self.ends, self.scripts, self.text, self._script = [], [], [], [], None

    def handle_starttag(self, tag, attrs):
        self.starts.append(tag)
        if tag == "script":
            self._script = []

    def handle_endtag(self, tag):
        self.ends.append(tag)
        if tag == "script" and self._script is not None:
            self.scripts.append("".join(self._script))
            self._script = None

    def handle_data(self, data):
        (self._script if self._script is not None else self.text).append(data)


@pytest.mark.parametrize("value", [HOSTILE, {"tokens": HOSTILE, "n": [1.5, -2]}, "</script><script>alert(1)</script>"])
def test_script_safe_json_is_the_same_value_with_no_markup_characters(value):
    text = script_safe_json(value)
    assert json.loads(text) == value
    assert not set(text) & {"<", ">", "&", "\u2028", "\u2029"}


@needs_cv
@pytest.mark.parametrize("hostile", [HOSTILE[:3], HOSTILE[3:8], HOSTILE[8:]])
def test_tokens_that_look_like_markup_never_break_the_script_element(tmp_path, hostile):
    from minitf.viz import attention_html

    vocab = Vocab(["<bos>", "t1", "t2"] + hostile)
    model = Transformer(ModelConfig(n_layers=2, d_model=32, n_heads=2, d_head=16, d_mlp=0, vocab_size=len(vocab),
                                    n_ctx=16)).eval()
    ids = torch.tensor([vocab.index["<bos>"], *[vocab.index[t] for t in hostile], vocab.index["t1"],
                        *[vocab.index[t] for t in hostile]])
    page = attention_html(model, ids, 1, vocab, path=str(tmp_path / "attention.html"))
    parser = Page()
    parser.feed(page)
    parser.close()
    # one script element, opened and closed once: no token ended it early or opened another
    assert parser.starts.count("script") == 1 and parser.ends.count("script") == 1
    assert [t for t in parser.starts if t not in ("html", "head", "meta", "title", "body", "h3", "div", "script")] == []
    script = parser.scripts[0]
    call = re.search(r'CircuitsVis\.render\(\s*"circuits-vis-[^"]+",\s*CircuitsVis\.AttentionHeads,'
                     r'\s*(\{.*\})\s*\)\s*$', script, re.DOTALL)
    assert call, "the render call is not whole inside the script element"
    props = json.loads(call.group(1))
    assert props["tokens"] == vocab.decode(ids)  # shown exactly as written
    assert not re.search(r"<!--|</?script", call.group(1), re.IGNORECASE)
    outside = "".join(parser.text)
    assert "CircuitsVis" not in outside and not any(t in outside for t in hostile if len(t) > 3)
    assert (tmp_path / "attention.html").read_text(encoding="utf-8") == page
