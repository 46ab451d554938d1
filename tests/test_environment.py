"""Every run records what its numbers depend on besides its configs (config.json → environment)."""
import json

import torch

from minitf.environment import environment
from minitf.runs import run


def test_config_json_records_torch_threads_cpu_and_commit(tmp_path):
    run("induction", out=str(tmp_path / "run"), quiet=True,
        overrides=["steps=2", "eval_every=0", "checkpoint_every=0", "n_layers=1", "d_model=16", "d_head=4"])
    env = json.loads((tmp_path / "run" / "config.json").read_text())["environment"]
    assert env["torch"] == torch.__version__ and env["intra_op_threads"] == torch.get_num_threads()
    assert set(env) >= {"numpy", "python", "cpu", "commit", "dirty", "omp_num_threads", "inter_op_threads"}
    assert env["cpu"] and (env["commit"] is None or len(env["commit"]) == 40)


def test_environment_follows_the_thread_setting():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert environment()["intra_op_threads"] == 1
    finally:
        torch.set_num_threads(before)
