"""bench/scaling.py runs (a tiny configuration, no timing asserted), and its committed results
carry the measurements docs/scaling.md quotes."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_scaling_benchmark_runs():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "scaling.py"), "--steps", "2", "--runs", "2",
                        "--skip", "ddp", "--skip", "ray", "--set", "segment_len=5", "--set", "min_segment_len=3",
                        "--set", "n_symbols=8", "--no-write"],
                       capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    result = json.loads(r.stdout[r.stdout.index("\n{") + 1:])
    assert set(result["sweep"]) == {"sequential_processes", "seeds_workers_1", "ensemble_2"}


def test_committed_results_have_every_measurement():
    with open(os.path.join(ROOT, "bench", "results", "scaling-cpu.json")) as f:
        result = json.load(f)
    assert set(result["ddp"]) == {"one_process_1_thread", "one_process_2_threads", "ddp_2_processes_1_thread"}
    for record in result["ddp"].values():
        assert record["tokens_per_s"] > 0 and record["speedup"] > 0
    assert set(result["sweep"]) == {"sequential_processes", "seeds_workers_1", "seeds_workers_2_ray", "ensemble_8"}
    seq = result["sweep"]["sequential_processes"]["wall_s"]
    for record in result["sweep"].values():
        assert abs(record["speedup_vs_sequential"] - seq / record["wall_s"]) < 0.01
