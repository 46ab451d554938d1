"""End to end: the default induction run forms an induction circuit (slow, still run in CI)."""
import pytest

from minitf.experiments import EXPERIMENTS, run_experiment


@pytest.mark.slow
def test_induction_second_repeat_collapses(tmp_path):
    report = run_experiment(EXPERIMENTS["induction"], out=str(tmp_path / "run"), seed=0, quiet=True)
    # measured: first ≈ 4.13 nats (ln 62), second ≈ 0.02 after 600 steps
    assert report["loss_first_repeat"] > 3.9
    assert report["loss_second_repeat"] <= 0.2 * report["loss_first_repeat"]
