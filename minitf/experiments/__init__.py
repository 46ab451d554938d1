"""Named experiments. Each is data + model config + training phases + evals + a report."""
from minitf.experiments.base import Experiment, run_experiment
from minitf.experiments.induction import InductionExperiment

EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (InductionExperiment(),)}
DEFAULT_EXPERIMENT = "induction"

__all__ = ["EXPERIMENTS", "DEFAULT_EXPERIMENT", "Experiment", "run_experiment"]
