"""bench/train_step.py runs from a clean clone, and its committed results carry the issue's keys."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_train_step_benchmark_runs():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "train_step.py"), "--configs", "S",
                        "--rounds", "1", "--steps", "2", "--repeats", "1", "--no-write"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ratio" in r.stdout and "same allocator" in r.stdout and "ensemble K=8 (S)" in r.stdout, r.stdout
    assert "ceiling" in r.stdout and "process per core" in r.stdout and "minitf bf16" in r.stdout, r.stdout


def test_committed_results_have_the_ratios():
    with open(os.path.join(ROOT, "bench", "results", "train_step-cpu.json")) as f:
        results = json.load(f)
    for key in ("ratio_S", "ratio_M", "bf16_ratio_S", "bf16_ratio_M", "bf16_ratio_L", "ensemble_ratio_K8", "ensemble_ceiling_K8", "ensemble_core_parallel_ceiling"):
        assert results[key] > 0, key
    e = results["ensemble_S_K8"]
    assert abs(e["ceiling_ratio"] - e["one_model_wide_batch_tokens_per_s"] / e["sequential_model_tokens_per_s"]) < 1e-9
    c = results["one_process_per_core_S"]
    assert abs(c["ratio"] - c["one_process_per_core_tokens_per_s"] / c["one_process_tokens_per_s"]) < 1e-9
    for name in ("S", "M"):
        r = results[name]
        assert abs(r["ratio"] - r["minitf_tokens_per_s"] / r["reference_tokens_per_s"]) < 1e-9
        assert abs(r["ratio"] - r["same_allocator_ratio"] * r["allocator_speedup"]) < 1e-9
        assert abs(r["bf16_ratio"] - r["minitf_bf16_tokens_per_s"] / r["reference_tokens_per_s"]) < 1e-9
