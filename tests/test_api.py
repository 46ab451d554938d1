"""The API a TransformerLens / nanoGPT user reaches for (issue 21): strings in and out, loading
any phase or weights file, run_with_hooks, per-head weight views."""
import os
import subprocess
import sys

import pytest
import torch

import minitf
from minitf.errors import CheckpointNotFoundError, InputError
from minitf.model import Transformer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_vocab_encode_accepts_strings_and_decode_accepts_tensors():
    vocab = minitf.Vocab(["<bos>", "a", "b", "c"])
    assert vocab.encode("<bos> a  b\tc") == vocab.encode(["<bos>", "a", "b", "c"]) == [1, 2, 3, 4]
    assert vocab.decode(torch.tensor([1, 2])) == ["<bos>", "a"]
    assert vocab.decode(torch.tensor([[1, 2], [3, 4]])) == [["<bos>", "a"], ["b", "c"]]
    assert vocab.decode([[1], [4]]) == [["<bos>"], ["c"]]
    for bad in ([7], torch.tensor([-1]), [1.5], torch.zeros(1, 1, 1, dtype=torch.long)):
        with pytest.raises(InputError):
            vocab.decode(bad)
    with pytest.raises(InputError, match="'zz' is not in the vocab"):
        vocab.encode("a zz")


def test_to_tokens_needs_a_vocab_and_round_trips(tiny_cfg):
    model = Transformer(tiny_cfg)
    with pytest.raises(InputError, match="needs the model's vocab"):
        model.to_tokens("a b")
    model.vocab = minitf.Vocab([f"w{i}" for i in range(tiny_cfg.vocab_size - 1)])
    tokens = model.to_tokens("w1 w2 w3")
    assert tokens.shape == (1, 3) and model.to_string(tokens[0]) == "w1 w2 w3"
    assert model.to_string(tokens) == ["w1 w2 w3"]


def test_per_head_weight_views_match_the_forward(tiny_cfg):
    torch.manual_seed(0)
    model = Transformer(tiny_cfg).eval()
    attn = model.blocks[0].attn
    h, d, dh = tiny_cfg.n_heads, tiny_cfg.d_model, tiny_cfg.d_head
    assert attn.W_Q.shape == attn.W_K.shape == attn.W_V.shape == (h, d, dh) and attn.W_O.shape == (h, dh, d)
    _, cache = model.run_with_cache(torch.randint(0, tiny_cfg.vocab_size, (2, 5)))
    q = model.blocks[0].ln1(cache["blocks.0.hook_resid_pre"])
    b_q = attn.qkv.bias[:d].view(h, dh)
    expected = torch.einsum("bpd,hde->bphe", q, attn.W_Q) + b_q
    assert torch.allclose(expected, cache["q", 0], atol=1e-5)
    z = torch.randn(2, 5, h, dh)
    assert torch.allclose(torch.einsum("bphe,hed->bpd", z, attn.W_O) + attn.out.bias,
                          attn.out(z.flatten(-2)), atol=1e-5)
    with torch.no_grad():  # views: editing them edits the model
        attn.W_V[0].zero_()
    assert attn.qkv.weight[2 * d:2 * d + dh].abs().sum() == 0


def test_run_with_hooks_applies_hooks_for_one_pass_only(tiny_cfg):
    model = Transformer(tiny_cfg).eval()
    tokens = torch.randint(0, tiny_cfg.vocab_size, (1, 6))
    plain = model(tokens)
    zeroed = model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.attn.hook_z", lambda z, hook: torch.zeros_like(z))])
    assert not torch.allclose(plain, zeroed)
    assert torch.equal(model(tokens), plain)


@pytest.fixture(scope="module")
def two_phase_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "run"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "reversal", "--out", str(out),
                        "--set", "steps=2", "--set", "phase2_steps=1", "--set", "d_model=32", "--set", "d_head=8",
                        "--set", "batch_size=4", "--set", "recall=false", "--set", "identity_fraction=0"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    return out


def test_load_a_phase_a_weights_file_and_a_device(two_phase_run):
    last, vocab = minitf.load(two_phase_run)
    phase1, _ = minitf.load(two_phase_run, phase="phase1", device="cpu")
    self_aug, _ = minitf.load(two_phase_run / "model-phase2_self.safetensors")
    assert torch.equal(last.embed.weight, self_aug.embed.weight)  # the run's weights = its last phase
    assert not torch.equal(last.embed.weight, phase1.embed.weight)
    assert last.vocab == vocab and last.to_string(last.to_tokens("<bos> ."))[0] == "<bos> ."
    with pytest.raises(CheckpointNotFoundError, match="phases saved: phase1, phase2, phase2_oracle, phase2_self"):
        minitf.load(two_phase_run, phase="phase3")
