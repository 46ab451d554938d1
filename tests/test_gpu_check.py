"""bench/gpu_check.sh --dry-run: the GPU check's steps on CPU at tiny sizes, so the script cannot rot
(~90 s: 4 kernel-test shards in the interpreter, the benchmark's numerics, two tiny experiments);
its time-boxing; and the benchmark's FLOP and peak arithmetic."""
import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "bench", "gpu_check.sh")
STEPS = ["environment", "kernel tests (cpu)", "attention benchmark", "train.py headline", "train.py induction",
         "bench/train_step.py"]


def run_check(out, **env):
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "MINITF_KERNEL_DEVICE")} | env
    env.setdefault("PYTHON", sys.executable)  # the interpreter running the tests, venv activated or not
    return subprocess.run(["bash", SCRIPT, "--dry-run"], capture_output=True, text=True, timeout=400, cwd=ROOT,
                          env={**env, "OUT": str(out)})


def summary(stdout):
    """{step: status} from the summary lines after the '== gpu_check summary' header."""
    lines = stdout.split("== gpu_check summary", 1)[1].splitlines()[1:]
    found = (re.match(r"(.{28}) (ok|failed|timed out|skipped) ", line) for line in lines)
    return {m.group(1).strip(): m.group(2) for m in found if m}


@pytest.mark.slow
def test_dry_run_runs_every_step_and_writes_results(tmp_path):
    r = run_check(tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert summary(r.stdout) == {**{s: "ok" for s in STEPS[:-1]}, "bench/train_step.py": "skipped"}
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["dry_run"] is True
    assert [s["step"] for s in result["steps"]] == STEPS
    assert all(s["status"] == "ok" and s["exit_code"] == 0 for s in result["steps"][:-1])
    assert "no CUDA mode" in result["steps"][-1]["note"]
    env = result["environment"]
    assert env["torch"] and env["triton"] and env["device"] == "cpu" and "none" in env["gpu"]
    # the interpreter shards ran real tests (long sequences are CUDA-only, hence skipped here)
    assert result["kernel_tests"]["passed"] >= 10 and result["kernel_tests"]["failed"] == 0
    assert result["kernel_tests"]["errors"] == 0 and result["kernel_tests"]["skipped"] == 10
    bench = json.loads((tmp_path / "attention-cpu-interpreter.json").read_text())
    assert bench["meta"]["numerics_ok"] is True and len(bench["rows"]) == 3
    for name in ("headline", "induction"):
        assert result["train"][name]["exit_code"] == 0 and result["train"][name]["wall_s"] >= 1
        report = json.loads((tmp_path / f"{name}-report.json").read_text())
        assert report["experiment"] == name and report["wall_s"] > 0
    assert not list(tmp_path.glob("*.safetensors"))  # run folders stay out of the results


def test_each_step_is_time_boxed_and_the_rest_still_runs(tmp_path):
    r = run_check(tmp_path, GPU_CHECK_T_TESTS="1", GPU_CHECK_T_BENCH="1", GPU_CHECK_T_TRAIN="1")
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    assert summary(r.stdout) == {"environment": "ok", "kernel tests (cpu)": "timed out",
                                 "attention benchmark": "timed out", "train.py headline": "timed out",
                                 "train.py induction": "timed out", "bench/train_step.py": "skipped"}
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [s["status"] for s in result["steps"]][:5] == ["ok"] + ["timed out"] * 4


def test_unknown_argument_is_refused():
    r = subprocess.run(["bash", SCRIPT, "--gpu"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "unknown argument '--gpu'" in r.stderr


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_attention", os.path.join(ROOT, "bench", "attention.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name,peak", [("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0),
                                       ("NVIDIA H200", 989.0), ("NVIDIA A100-SXM4-80GB", 312.0),
                                       ("NVIDIA GeForce RTX 4090", None), ("", None)])
def test_peak_table(name, peak):
    assert load_bench().peak_tflops(name) == peak


def test_flop_counts():
    bench = load_bench()
    dense = bench.flops(2, 4, 1024, 64, False, "fwd")
    assert dense == 4 * 2 * 4 * 1024 * 1024 * 64
    assert bench.flops(2, 4, 1024, 64, True, "fwd") == dense / 2
    assert bench.flops(2, 4, 1024, 64, False, "bwd") == 2.5 * dense
    assert bench.flops(2, 4, 1024, 64, False, "fwd+bwd") == 3.5 * dense


def test_kernels_compile_for_sm90_without_a_gpu(tmp_path):
    """What the interpreter cannot check: Triton's compiler and ptxas accept the kernels (one fp16
    variant per kernel, the preferred tile, causal with a partial block) and each needs no more
    shared memory than the estimate the autotuner prunes by. ~10 s of CPU."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"} | {"TRITON_DEFAULT_FP_FUSION": "1"}
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "attention.py"), "--compile-only", "90", "--quick",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = json.loads((tmp_path / "compile-sm90.json").read_text())["rows"]
    assert [row["kernel"] for row in rows] == ["fwd", "dkdv", "dq"]
    assert all(row["ok"] and 0 < row["shared"] <= row["estimate"] for row in rows), rows
