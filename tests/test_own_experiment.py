"""Your own experiment (issue 20 part 2): a user's Experiment subclass in a file outside the
package runs with everything the built-in ones get — --set, --seeds, --resume, --ensemble,
the run folder, the report and the plots."""
import json
import os
import subprocess
import sys

import pytest

import minitf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REF = "tests/example_experiment.py:FirstTokenExperiment"


def cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("own") / "run"
    r = cli(REF, "--out", str(out), "--seed", "1")
    assert r.returncode == 0, r.stderr
    return out


def test_a_users_experiment_trains_and_reports(trained):
    report = json.loads((trained / "report.json").read_text())
    assert report["experiment"] == "first_token" and report["seed"] == 1
    # a 1-layer model learns to look up position 1 by its learned position embedding
    assert report["results"]["first_token"]["acc"] >= 0.9
    for name in ("config.json", "vocab.json", "metrics.jsonl", "model.safetensors", "loss.png"):
        assert (trained / name).exists(), name
    saved = json.loads((trained / "config.json").read_text())
    assert saved["experiment_ref"] == REF and saved["experiment_config"] == {"eval_prompts": 200}
    model, vocab = minitf.load(trained)
    assert model.to_string(model.to_tokens("<bos> t3 t1")[0]) == "<bos> t3 t1"


def test_history_survives_a_kill_and_resume(trained, tmp_path):
    """``ctx.history``: the evaluations during training, the same after a SIGKILL and --resume
    (the rows before the kill come from the run folder, the rest from the resumed trainer)."""
    from minitf import checkpoint

    out = tmp_path / "killed"
    env = dict(os.environ, MINITF_KILL_AT_WRITE="5")  # config, vocab, then mid-way through the checkpoints
    p = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), REF, "--out", str(out), "--seed", "1"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300, env=env)
    assert p.returncode == -9, p.stderr
    state = checkpoint.load_trainer_state(str(out / checkpoint.TRAINER_STATE))
    assert 0 < state["step"] < 150  # killed after an evaluation, before the end
    r = cli("--resume", str(out))
    assert r.returncode == 0, r.stderr
    ref = json.loads((trained / "report.json").read_text())["learning_curve"]
    assert [row["step"] for row in ref] == [50, 100, 150]
    assert json.loads((out / "report.json").read_text())["learning_curve"] == ref


def test_resume_set_and_seeds_work_on_it(trained, tmp_path):
    r = cli("--resume", str(trained))
    assert r.returncode == 0 and "finished" in r.stdout
    out = tmp_path / "seeds"
    r = cli(REF, "--seeds", "2", "--out", str(out), "--set", "steps=20", "--set", "eval_prompts=40")
    assert r.returncode == 0, r.stderr
    merged = json.loads((out / "report.json").read_text())
    assert merged["seeds"] == [0, 1] and merged["results"]["first_token"]["n"] == 80


def test_ensemble_and_module_path_form(tmp_path):
    r = cli("example_experiment:FirstTokenExperiment", "--ensemble", "2", "--out", str(tmp_path / "ens"),
            "--set", "steps=10", cwd=os.path.join(ROOT, "tests"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "ens" / "seed1" / "report.json").exists()


@pytest.mark.parametrize("ref,needle", [
    ("no_such_module:Thing", "cannot import 'no_such_module'"),
    ("tests/example_experiment.py:Nope", "has no Experiment subclass named 'Nope'"),
    ("tests/missing.py:X", "does not exist"),
])
def test_bad_experiment_paths_are_one_line(ref, needle, tmp_path):
    r = cli(ref, "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_settings_and_task_without_validate_run(tmp_path):
    """docs/experiments.md says validate() is optional; leaving it out was an AttributeError."""
    from dataclasses import dataclass, fields

    from minitf import runs
    from minitf.errors import ConfigError

    spec = __import__("importlib.util").util.spec_from_file_location("example_experiment",
                                                                      os.path.join(ROOT, "tests", "example_experiment.py"))
    example = __import__("importlib.util").util.module_from_spec(spec)
    spec.loader.exec_module(example)

    @dataclass
    class Settings:  # no validate()
        eval_prompts: int = 16

    @dataclass
    class Task(example.FirstTokenTask):  # the example's task, with validate() removed
        validate = None

    class NoValidate(example.FirstTokenExperiment):
        config_cls = Settings
        task_cls = Task

    assert not callable(Task().validate) and not hasattr(Settings(), "validate")
    report = runs.run(NoValidate(), out=str(tmp_path / "run"), overrides=["steps=3", "eval_prompts=8"], quiet=True)
    assert report["results"]["first_token"]["n"] == 8
    assert [f.name for f in fields(Settings)] == ["eval_prompts"]
    with pytest.raises(ConfigError, match="eval_prompts must be in"):  # the common numeric rule still applies
        runs.run(NoValidate(), out=str(tmp_path / "bad"), overrides=[f"eval_prompts={2 ** 70}"], quiet=True)
    assert not (tmp_path / "bad").exists()
