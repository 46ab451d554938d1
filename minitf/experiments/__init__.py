"""Named experiments. Each is data + configs + training phases + evals + a report; the
contract they follow (and a user's own experiment follows) is ``minitf.experiments.base``."""
from minitf.experiments.base import Experiment, RunContext
from minitf.experiments.bursty import BurstyExperiment
from minitf.experiments.ginc import GincExperiment
from minitf.experiments.headline import HeadlineExperiment, ReversalExperiment, SyllogismExperiment
from minitf.experiments.icl_gd import ICLGDExperiment
from minitf.experiments.induction import InductionExperiment
from minitf.experiments.metalearn import MetaLearnExperiment
from minitf.experiments.regression import RegressionExperiment
from minitf.experiments.semantic import SemanticExperiment

EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (
    HeadlineExperiment(), ReversalExperiment(), SyllogismExperiment(), InductionExperiment(),
    BurstyExperiment(), SemanticExperiment(), RegressionExperiment(),
    ICLGDExperiment(), MetaLearnExperiment(), GincExperiment())}
DEFAULT_EXPERIMENT = "headline"

__all__ = ["EXPERIMENTS", "DEFAULT_EXPERIMENT", "Experiment", "RunContext"]
