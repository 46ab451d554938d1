"""Every file name of a run folder, in one place.

A run folder holds only what minitf wrote plus whatever the user keeps there; ``own_files``
tells the two apart, so ``--overwrite`` replaces minitf's artifacts and nothing else.

| name                     | written by                | contents                                        |
|--------------------------|---------------------------|-------------------------------------------------|
| config.json              | the runner, at creation   | experiment name + model / train / task configs  |
| vocab.json               | the runner, at creation   | token strings in id order                       |
| metrics.jsonl            | the trainer               | one JSON row per logged step or evaluation      |
| model.safetensors        | the trainer               | latest weights (config in the metadata)         |
| model-<phase>.safetensors| the trainer, phase end    | the weights at the end of each phase            |
| trainer_state.pt         | the trainer               | weights + optimizer + RNG + step, for --resume  |
| loss.png, <experiment's> | the runner / experiment   | plots                                           |
| report.json              | the runner, last          | the results; its presence marks a finished run  |
| sweep.json               | the sweep runner          | one row per grid cell                           |
| .lock                    | the process writing       | the writer's pid; flock-ed while a run writes   |
"""
import fnmatch
import os

CONFIG = "config.json"
VOCAB = "vocab.json"
METRICS = "metrics.jsonl"
WEIGHTS = "model.safetensors"
TRAINER_STATE = "trainer_state.pt"
REPORT = "report.json"
LOSS_PLOT = "loss.png"
SWEEP = "sweep.json"
TMP_PREFIX = ".tmp-"  # atomic writes go through temp files named like this
LOCK = ".lock"  # flock-ed by the one process writing the run folder (minitf.fileio.lock_run_folder)

RUN_FILES = (CONFIG, VOCAB, METRICS, WEIGHTS, TRAINER_STATE, REPORT, LOSS_PLOT)
_PATTERNS = ("model-*.safetensors", TMP_PREFIX + "*")


def phase_weights(phase: str) -> str:
    """File name of the weights saved at the end of ``phase``."""
    return f"model-{phase}.safetensors"


def own_files(folder: str, extra: tuple[str, ...] = ()) -> list[str]:
    """Names in ``folder`` that minitf writes (``extra``: an experiment's own plots), sorted."""
    if not os.path.isdir(folder):
        return []
    names = set(RUN_FILES) | set(extra) | {SWEEP}
    return sorted(n for n in os.listdir(folder)
                  if n in names or any(fnmatch.fnmatch(n, p) for p in _PATTERNS))
