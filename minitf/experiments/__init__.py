"""Named experiments. Each is data + model config + training phases + evals + a report."""
from minitf.experiments.base import Experiment, run_experiment
from minitf.experiments.bursty import BurstyExperiment
from minitf.experiments.induction import InductionExperiment
from minitf.experiments.relational import RelationalExperiment, ReversalExperiment, SyllogismExperiment
from minitf.experiments.semantic import SemanticExperiment

EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (
    RelationalExperiment(), ReversalExperiment(), SyllogismExperiment(), InductionExperiment(),
    BurstyExperiment(), SemanticExperiment())}
DEFAULT_EXPERIMENT = "headline"

__all__ = ["EXPERIMENTS", "DEFAULT_EXPERIMENT", "Experiment", "run_experiment"]
