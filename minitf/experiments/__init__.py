"""Named experiments. Each is data + configs + training phases + evals + a report; the
contract they follow (and a user's own experiment follows) is ``minitf.experiments.base``."""
from minitf.experiments.base import Experiment, RunContext
from minitf.experiments.bayes.ginc import GincExperiment
from minitf.experiments.bayes.metalearn import MetaLearnExperiment
from minitf.experiments.circuits.bursty import BurstyExperiment
from minitf.experiments.circuits.induction import InductionExperiment
from minitf.experiments.facts.headline import HeadlineExperiment, ReversalExperiment, SyllogismExperiment
from minitf.experiments.facts.semantic import SemanticExperiment
from minitf.experiments.regression.icl_gd import ICLGDExperiment
from minitf.experiments.regression.regression import RegressionExperiment

EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (
    HeadlineExperiment(), ReversalExperiment(), SyllogismExperiment(), InductionExperiment(),
    BurstyExperiment(), SemanticExperiment(), RegressionExperiment(),
    ICLGDExperiment(), MetaLearnExperiment(), GincExperiment())}
DEFAULT_EXPERIMENT = "headline"

__all__ = ["EXPERIMENTS", "DEFAULT_EXPERIMENT", "Experiment", "RunContext"]
