"""docs/config.md documents every --set key: generated from the dataclasses, never drifting."""
import os
import subprocess
import sys

from minitf.configdoc import render

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_config_doc_matches_the_dataclasses():
    with open(os.path.join(ROOT, "docs", "config.md")) as f:
        assert f.read() == render(), "docs/config.md is stale: python -m minitf.configdoc > docs/config.md"


def test_every_key_has_a_meaning():
    rows = [line.split("|") for line in render().splitlines() if line.startswith("| `")]
    assert rows and not [r[1] for r in rows if not r[4].strip()]


def test_show_config_prints_every_key_with_its_value():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "headline", "--show-config",
                        "--set", "phase2_steps=7"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "phase2_steps = 7" in r.stdout and "d_model = 128" in r.stdout and "n_entities = 550" in r.stdout
