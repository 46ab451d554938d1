"""Your own facts (issue 20 part 1): `train.py reversal --facts FILE` runs the headline's
conditions on a user's relational facts, and the reversal curse shows on them."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FACTS = os.path.join(ROOT, "examples", "facts", "family.json")


def cli(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=900)


@pytest.mark.slow
def test_reversal_curse_on_a_users_facts(tmp_path):
    # the reversal split alone, as in test_headline_e2e (800 + 3×150 steps): the user's 26 facts
    # replace the 200 generated new facts; their people are entities of phase-1 episodes
    out = tmp_path / "run"
    r = cli("reversal", "--facts", FACTS, "--out", str(out), "--set", "steps=800", "--set", "phase2_steps=150",
            "--set", "eval_every=400", "--set", "recall=false", "--set", "identity_fraction=0")
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "report.json").read_text())
    res = report["results"]
    assert report["n_new_facts"] == 26
    assert res["in_weights"]["forward_top1"]["acc"] >= 0.8  # the trained direction is learned
    assert res["in_weights"]["reversal_top1"]["acc"] <= 0.1  # the curse: reversed, almost never top-1
    assert res["in_context"]["reversal_top1"]["acc"] >= res["in_weights"]["reversal_top1"]["acc"] + 0.5
    saved = json.loads((out / "config.json").read_text())["task"]
    assert saved["facts_file"] == FACTS and len(saved["facts_sha256"]) == 64


def test_a_bad_facts_file_is_one_line_before_any_work(tmp_path):
    bad = tmp_path / "facts.json"
    bad.write_text(json.dumps({"inverses": {"parent_of": "child_of"},
                               "facts": [["ann", "parent_of", "bob"], ["bob", "sibling_of", "cid"]]}))
    r = cli("headline", "--facts", str(bad), "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "facts[1]" in r.stderr and str(bad) in r.stderr
    assert not (tmp_path / "x").exists()


def test_a_changed_facts_file_is_refused_on_resume(tmp_path):
    import shutil

    facts = tmp_path / "facts.json"
    shutil.copy(FACTS, facts)
    out = tmp_path / "run"
    r = cli("reversal", "--facts", str(facts), "--out", str(out), "--set", "steps=2", "--set", "phase2_steps=1",
            "--set", "d_model=32", "--set", "d_head=8", "--set", "batch_size=4", "--set", "checkpoint_every=1")
    assert r.returncode == 0, r.stderr
    (out / "report.json").unlink()  # as if killed
    data = json.loads(facts.read_text())
    data["facts"].pop()
    facts.write_text(json.dumps(data))
    r = cli("--resume", str(out))
    assert r.returncode == 2 and "sha256" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
