"""Any laptop: where Triton has no wheels (macOS, Windows) minitf installs without it and every
other part works; asking for the triton backend says why it is unavailable."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def without_triton(tmp_path, *args):
    # sitecustomize runs at start-up: a None entry in sys.modules makes `import triton` fail and
    # importlib.util.find_spec("triton") return None, as on a machine where it is not installed
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['triton'] = None\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(tmp_path)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def test_model_runs_without_triton(tmp_path):
    code = ("import torch, minitf\n"
            "from minitf.attention import triton_available\n"
            "assert not triton_available()\n"
            "m = minitf.Transformer(minitf.ModelConfig(vocab_size=10, n_ctx=8))\n"
            "print(tuple(m(torch.zeros(1, 5, dtype=torch.long)).shape))\n")
    r = without_triton(tmp_path, "-c", code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "(1, 5, 10)"


def test_short_cli_run_without_triton(tmp_path):
    out = tmp_path / "run"
    r = without_triton(tmp_path, "train.py", "induction", "--out", str(out), "--set", "steps=4", "--set",
                       "segment_len=5", "--set", "min_segment_len=3", "--set", "n_symbols=8")
    assert r.returncode == 0, r.stderr
    assert (out / "report.json").exists()


def test_asking_for_triton_without_it_is_one_clear_line(tmp_path):
    r = without_triton(tmp_path, "train.py", "induction", "--out", str(tmp_path / "x"), "--set", "attn_impl=triton")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "needs the triton package, which is not installed" in r.stderr
    assert not (tmp_path / "x").exists()
