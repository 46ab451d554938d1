"""``metalearn``: in-context learning models as meta-learners (Wu et al., ICLR 2025).

Tasks: ``toy_tasks.metalearn`` (binary few-shot classification; families ``pairwise``,
``prototype``, ``amortization``, their mixture, a test-only ``unknown`` family, and shifted test
sets). For every training distribution in ``train_on`` the run trains minitf's transformer as an
in-context learner (phase ``icl_<train_on>``) and the classic meta-learners of
``minitf.meta_learners`` (``matchnet_…``, ``protonet_…``, ``cnp_…``), all through
``RunContext.train`` on the same batches (same seed ⇒ same stream per phase index).

Tokens: each support example is one vector ``[x, onehot(y)]``, the query ``[x_q, 0, 0]`` last; a
vector model (``d_input = d + 2``, no positions: the support is a set) reads the query's label
at the last position. Loss: ``masked_loss`` with float targets ±1 at the query, i.e. squared
error (the transformer's scalar read-out regresses E[±1 label]; the meta-learners output
``p(1) − p(0)``, so for them it is 4 × the Brier score); the prediction is the sign. A training
batch shares one support size k, drawn uniformly from 1…K (K = ``n_support``).

Evaluation: ``eval_tasks`` fresh tasks per test set, support sizes 1…K in equal shares (so an
accuracy is the mean over k, as the paper reports), the same tasks for every learner and the
Bayes-optimal learner (``optimal``). ``results[train_on][test_on][learner] = {"acc", "ci95",
"chance", "n"}`` (95% Wilson interval); ``curves`` the same by bins of k; ``targets`` the issue's
checks with pass flags (``targets``). Source: Wu, Wang, Yao, "Why in-context learning models are
good few-shot learners?", ICLR 2025 (code ovo67/Uni_ICL).
"""
import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from minitf import meta_learners
from minitf.config import ModelConfig, TrainConfig, check_list
from minitf.data import Batch, Vocab
from minitf.evaluate import proportion
from minitf.experiments.base import Experiment, RunContext, require_d_input, verdict
from minitf.report import format_table
from toy_tasks.metalearn import FAMILIES, MetaLearnTask, pairwise_normal, tokens

TRAIN_ON = FAMILIES + ("mixture", "unknown")
LEARNERS = ("icl",) + meta_learners.KINDS
CLASSIC = meta_learners.LEARNERS  # the tied (paper-faithful) classic learners the targets are about
MATCHED = {"pairwise": "matchnet", "prototype": "protonet", "amortization": "cnp"}
TRAIN_EVAL_TASKS = 512  # tasks of the cheap evaluation during training


@dataclass
class MetaLearnSettings:
    # training distributions (each trains every learner): families, mixture, and unknown (not in the default)
    train_on: tuple[str, ...] = ("pairwise", "prototype", "amortization", "mixture")
    # learners to train (the Bayes-optimal one is always scored): icl, the tied classics, the wide ablation
    learners: tuple[str, ...] = ("icl", "matchnet", "protonet", "cnp", "matchnet_wide", "protonet_wide", "cnp_wide")
    meta_steps: int = 1000  # training steps of each wide classic meta-learner (the transformer uses `steps`)
    tied_steps: int = 2000  # training steps of each tied (paper-faithful) classic learner: tiny, so long is cheap
    meta_lr: float = 3e-3  # peak learning rate of the classic meta-learners
    # the _wide learners' MLP widths (hidden and embedding); 0 = d (MatchNet, ProtoNet), d + 4 (CNP)
    meta_width: int = 32
    eval_tasks: int = 3000  # fresh tasks per test set (support sizes 1..n_support in equal shares)
    shifted: bool = True  # also test on each family with shifted inputs (shift_scale, shift_on)
    curve_bins: int = 6  # bins of the support size in `curves` and curves.png
    bayes_steps: int = 200  # Markov-chain steps of the pairwise / prototype Bayes learners

    def train_list(self) -> list[str]:
        return list(check_list("train_on", self.train_on, allowed=TRAIN_ON))

    def learner_list(self) -> list[str]:
        return list(check_list("learners", self.learners, allowed=LEARNERS))

    def validate(self):
        self.train_list(), self.learner_list()
        for name in ("meta_steps", "tied_steps", "curve_bins", "bayes_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (got {getattr(self, name)})")
        if self.meta_width < 0:
            raise ValueError(f"meta_width must be >= 0, 0 meaning the paper's widths (got {self.meta_width})")
        if not self.meta_lr > 0:
            raise ValueError(f"meta_lr must be > 0 (got {self.meta_lr})")
        if self.eval_tasks < 2:
            raise ValueError(f"eval_tasks must be >= 2 for an interval (got {self.eval_tasks})")
        return self


def to_batch(b: dict, k: int) -> Batch:
    """Tasks ``b`` (``MetaLearnTask.sample``) with their first k support examples → a float Batch:
    inputs ``(n, k + 1, d + 2)``, targets ±1 and mask 1 at the query (the last position) only."""
    inputs = torch.from_numpy(tokens(b["xs"][:, :k], b["ys"][:, :k], b["xq"])).float()
    targets, mask = torch.zeros(inputs.shape[:2]), torch.zeros(inputs.shape[:2])
    targets[:, -1] = torch.from_numpy(2.0 * b["yq"] - 1.0).float()
    mask[:, -1] = 1.0
    return Batch(inputs, targets, mask)


def make_sample(task: MetaLearnTask, family: str):
    """``sample(rng, n) -> Batch`` for the trainer: one support size k ~ U{1..K} per batch."""
    def sample(rng, n):
        k = int(rng.integers(1, task.n_support + 1))
        return to_batch(task.sample(rng, n, family), k)

    return sample


def eval_set(task: MetaLearnTask, rng, n: int, test_on: str) -> dict:
    """``n`` tasks of ``test_on`` (a family, ``unknown``, ``mixture`` or ``<family>_shift``) with ``k (n,)``:
    support sizes 1..K in equal shares."""
    family, shift = (test_on[:-6], True) if test_on.endswith("_shift") else (test_on, False)
    b = task.sample(rng, n, family, shift=shift)
    b["k"] = 1 + np.arange(n) % task.n_support
    b["name"] = family
    return b


@torch.no_grad()
def predict(model, b: dict) -> np.ndarray:
    """The model's ŷ ``(n,)`` (the sign is its answer) on eval tasks ``b``, one pass per support size."""
    device = next(model.parameters()).device
    out = np.zeros(len(b["k"]))
    for k in np.unique(b["k"]):
        rows = b["k"] == k
        sub = {key: b[key][rows] for key in ("xs", "ys", "xq", "yq")}
        out[rows] = model(to_batch(sub, int(k)).inputs.to(device))[:, -1, 0].double().cpu().numpy()
    return out


def bayes_predict(task: MetaLearnTask, b: dict, steps: int) -> np.ndarray | None:
    """P(y_q = 1) ``(n,)`` of the family's Bayes-optimal learner (None: the pairwise family with the
    "max" rule has none here)."""
    out = np.zeros(len(b["k"]))
    for k in np.unique(b["k"]):
        rows = b["k"] == k
        xs, ys, xq = b["xs"][rows, :k], b["ys"][rows, :k], b["xq"][rows]
        fam = b["name"]
        if fam == "pairwise":
            if task.pairwise_rule != "sum":
                return None
            out[rows] = meta_learners.bayes_pairwise(xs, ys, xq, pairwise_normal(b["protos"][rows]), steps, int(k))
        elif fam == "prototype":
            out[rows] = meta_learners.bayes_prototype(xs, ys, xq, b["centres"][rows], task.point_std, steps,
                                                      seed=int(k))
        elif fam == "amortization":
            out[rows] = meta_learners.bayes_amortization(xs, ys, xq, task.point_std)
        else:
            out[rows] = meta_learners.bayes_unknown(xs, ys, xq)
    return out


def record(correct: np.ndarray) -> dict:
    """``{"acc", "ci95", "chance", "n"}`` (95% Wilson interval; chance ½: two balanced classes)."""
    return proportion(list(correct), 0.5)


class MetaLearnExperiment(Experiment):
    name = "metalearn"
    description = ("ICL as a meta-learner: transformer vs matching/prototypical networks/CNP and Bayes on three "
                   "task families, their mixture, an unknown family and shifts (Wu et al. 2025)")
    task_cls = MetaLearnTask
    config_cls = MetaLearnSettings
    # data streams follow this order: the wide learners keep the streams the first classic learners
    # had (same seed ⇒ the same numbers as before under their new names); the tied ones come after
    phases = (tuple(f"{learner}_{t}" for t in TRAIN_ON for learner in ("icl",) + meta_learners.WIDE)
              + tuple(f"{learner}_{t}" for t in TRAIN_ON for learner in meta_learners.LEARNERS))
    main_model = ("icl_mixture",) + tuple(f"icl_{t}" for t in TRAIN_ON)  # minitf.load(run): the transformer
    artifacts = ("matrix.png", "curves.png")

    def default_model(self, task) -> ModelConfig:
        return ModelConfig(n_layers=2, d_model=64, n_heads=4, d_head=16, d_mlp=128, vocab_size=1,
                           n_ctx=task.n_support + 1, positional="none", d_input=task.d + 2, init_std=0.05)

    def default_train(self) -> TrainConfig:
        return TrainConfig(steps=1500, batch_size=128, lr=2e-3, warmup=100, weight_decay=0.0, grad_clip=1.0,
                           eval_every=500, checkpoint_every=500, log_every=50)

    def vocab(self, task) -> Vocab:
        return Vocab([])  # vector inputs

    def max_seq_len(self, task) -> int:
        return task.n_support + 2  # K support tokens + the query, plus the one the runner subtracts

    def test_sets(self, task: MetaLearnTask, cfg: MetaLearnSettings) -> list[str]:
        return list(FAMILIES) + ["unknown"] + ([f"{f}_shift" for f in FAMILIES] if cfg.shifted else [])

    def check(self, task, config, model_cfg) -> None:
        """Raises ``ValueError`` unless the model reads d + 2 numbers per token (``d_input``)."""
        require_d_input(model_cfg, task.d + 2, "d + 2")

    def run(self, ctx: RunContext) -> dict:
        task, cfg = ctx.task, ctx.config
        self.check(task, cfg, ctx.model_cfg)  # again here: run() may be called without the runner
        meta_cfg = {steps: dataclasses.replace(ctx.train_cfg, steps=steps, lr=cfg.meta_lr, eval_every=0,
                                               checkpoint_every=steps) for steps in (cfg.meta_steps, cfg.tied_steps)}
        tests = {name: eval_set(task, ctx.eval_rng(i), cfg.eval_tasks, name)
                 for i, name in enumerate(self.test_sets(task, cfg))}
        optimal = {name: bayes_predict(task, b, cfg.bayes_steps) for name, b in tests.items()}
        results, curves = {}, {}
        for train_on in cfg.train_list():
            small = eval_set(task, ctx.eval_rng(100 + TRAIN_ON.index(train_on)), TRAIN_EVAL_TASKS, train_on)

            def evaluate(model, step, small=small):
                return {"acc": float(((predict(model, small) > 0) == small["yq"]).mean())}

            preds = {}
            for learner in cfg.learner_list():
                if learner == "icl":
                    model, train_cfg = ctx.new_model(), None
                else:
                    torch.manual_seed(ctx.train_cfg.seed)
                    width = cfg.meta_width or (task.d + 4 if learner == "cnp_wide" else task.d)
                    model = meta_learners.build(learner, task.d, width, width).to(ctx.train_cfg.device)
                    train_cfg = meta_cfg[cfg.tied_steps if learner in CLASSIC else cfg.meta_steps]
                ctx.train(model, make_sample(task, train_on), phase=f"{learner}_{train_on}", evaluate=evaluate,
                          train_cfg=train_cfg)
                model.eval()
                preds[learner] = {name: predict(model, b) > 0 for name, b in tests.items()}
            for name, p in optimal.items():
                if p is not None:
                    preds.setdefault("optimal", {})[name] = p > 0.5
            results[train_on] = {name: {lrn: record(preds[lrn][name] == b["yq"]) for lrn in preds}
                                 for name, b in tests.items()}
            for row in results[train_on].values():  # regret to the Bayes learner on the same tasks
                if "optimal" in row:
                    for lrn, rec in row.items():
                        rec["regret"] = row["optimal"]["acc"] - rec["acc"]
            curves[train_on] = {name: {lrn: binned(preds[lrn][name] == b["yq"], b["k"], cfg.curve_bins)
                                       for lrn in preds} for name, b in tests.items()}
        return {"results": results, "curves": curves, "test_on": list(tests), "n_support": task.n_support,
                "d": task.d, "eval_tasks": cfg.eval_tasks, "targets": targets(results)}

    def summary(self, report: dict) -> str:
        lines = []
        for train_on, row in report["results"].items():
            learners = list(next(iter(row.values())))
            table = [[t] + [row[t][lrn]["acc"] for lrn in learners] for t in row]
            lines.append(format_table(["test_on"] + learners, table, title=f"trained on {train_on}: accuracy "
                                      f"(mean over k = 1..{report['n_support']}, {report['eval_tasks']} tasks)"))
        lines.append(describe_targets(report["targets"]))
        return "\n\n".join(lines)

    def plots(self, run_dir: str, report: dict) -> None:
        from minitf.experiments.bayes.plots import plot_curves, plot_losses, plot_matrix

        plot_matrix(run_dir, report)
        plot_curves(run_dir, report)
        plot_losses(run_dir)


def binned(correct: np.ndarray, ks: np.ndarray, n_bins: int) -> dict:
    """Accuracy by support-size bin: ``{"k_range": [[lo, hi], ...], "acc": [...], "n": [...]}``."""
    edges = np.unique(np.linspace(ks.min(), ks.max() + 1, n_bins + 1).astype(int))
    out = {"k_range": [], "acc": [], "n": []}
    for lo, hi in zip(edges[:-1], edges[1:]):
        rows = (ks >= lo) & (ks < hi)
        if rows.any():
            out["k_range"].append([int(lo), int(hi) - 1])
            out["acc"].append(float(correct[rows].mean()))
            out["n"].append(int(rows.sum()))
    return out


def _acc(results, train_on, test_on, learner):
    return results.get(train_on, {}).get(test_on, {}).get(learner, {}).get("acc")


def targets(results: dict) -> dict:
    """The issue's checks, each with its figures and a pass flag (absent where a needed model was
    not trained): single family, mixture, unknown family, shift."""
    out = {"single_family": {}, "mixture": {}, "shift": {}}
    for f in FAMILIES:
        icl, matched = _acc(results, f, f, "icl"), _acc(results, f, f, MATCHED[f])
        others = {m: _acc(results, f, f, m) for m in MATCHED.values() if m != MATCHED[f]}
        optimal = _acc(results, f, f, "optimal")
        if icl is not None and matched is not None and None not in others.values():
            v = {"icl": icl, "matched": MATCHED[f], "matched_acc": matched, "mismatched": others,
                 "pass": {"icl_ge_matched_minus_0.03": icl >= matched - 0.03,
                          "icl_gt_each_mismatched_plus_0.05": all(icl > o + 0.05 for o in others.values())}}
            if optimal is not None:  # judged by regret to the Bayes learner (its ceiling is the Bayes accuracy)
                regret = {m: optimal - a for m, a in {"icl": icl, MATCHED[f]: matched, **others}.items()}
                wide = {m: optimal - a for m in meta_learners.WIDE if (a := _acc(results, f, f, m)) is not None}
                v.update(optimal=optimal, regret=regret, regret_wide=wide,
                         mismatched_ceiling=optimal - max(others.values()))
                v["pass"].update({"matched_lowest_regret": regret[MATCHED[f]] < min(regret[m] for m in others),
                                  "icl_regret_le_matched_plus_0.01": regret["icl"] <= regret[MATCHED[f]] + 0.01})
            out["single_family"][f] = v
        singles = {m: _acc(results, f, f, m) for m in LEARNERS}
        mixed = {m: _acc(results, "mixture", f, m) for m in LEARNERS}
        singles = {m: a for m, a in singles.items() if a is not None and mixed[m] is not None}
        mixed = {m: mixed[m] for m in singles}
        if {"icl", *CLASSIC} <= set(singles):
            best = max(singles.values())
            drops = {m: singles[m] - mixed[m] for m in singles}  # = the growth of the regret (same tasks, same Bayes)
            out["mixture"][f] = {"icl_mixture": mixed["icl"], "best_single": best, "drop": drops,
                                 "pass": {"icl_ge_best_single_minus_0.03": mixed["icl"] >= best - 0.03,
                                          "classic_drop_more": all(drops[m] > drops["icl"] for m in CLASSIC)}}
        shifted = {m: (_acc(results, f, f, m), _acc(results, f, f"{f}_shift", m)) for m in ("icl", "optimal")}
        if all(a is not None and b is not None for a, b in shifted.values()):
            drop = {m: a - b for m, (a, b) in shifted.items()}
            out["shift"][f] = {"drop": drop, "pass": {"icl_drops_more": drop["icl"] > drop["optimal"]}}
    for train_on in ("unknown", "mixture"):  # trained on the family itself; trained on the mixture
        unknown = {m: a for m in LEARNERS if (a := _acc(results, train_on, "unknown", m)) is not None}
        if {"icl", *CLASSIC} <= set(unknown):
            out.setdefault("unknown", {})[train_on] = {
                "acc": unknown, "optimal": _acc(results, train_on, "unknown", "optimal"),
                "pass": {"icl_above_every_classic": all(unknown["icl"] > unknown[m] for m in CLASSIC)}}
    if out["mixture"]:
        shared = set.intersection(*(set(v["drop"]) for v in out["mixture"].values()))
        mean = {m: float(np.mean([v["drop"][m] for v in out["mixture"].values()])) for m in LEARNERS if m in shared}
        out["mixture_mean_drop"] = {"drop": mean, "pass": {"classic_drop_more": all(
            mean[m] > mean["icl"] for m in CLASSIC)}}
    return out


def describe_targets(t: dict) -> str:
    """One line per check: its figures and met / missed."""
    lines = ["targets:"]
    for f, v in t["single_family"].items():
        mism = ", ".join(f"{m} {a:.3f}" for m, a in v["mismatched"].items())
        lines.append(f"  {f}: icl {v['icl']:.3f} vs matched {v['matched']} {v['matched_acc']:.3f} "
                     f"({verdict(v['pass']['icl_ge_matched_minus_0.03'])}); mismatched {mism} "
                     f"({verdict(v['pass']['icl_gt_each_mismatched_plus_0.05'])})")
        if "regret" in v:
            reg = ", ".join(f"{m} {r:+.3f}" for m, r in {**v["regret"], **v["regret_wide"]}.items())
            lines.append(f"    regret to Bayes ({v['optimal']:.3f}): {reg}; matched lowest of the tied "
                         f"classics {verdict(v['pass']['matched_lowest_regret'])}; icl ≤ matched + 0.01 "
                         f"{verdict(v['pass']['icl_regret_le_matched_plus_0.01'])}")
    for f, v in t["mixture"].items():
        drops = ", ".join(f"{m} {d:+.3f}" for m, d in v["drop"].items())
        lines.append(f"  mixture on {f}: icl {v['icl_mixture']:.3f} vs best single {v['best_single']:.3f} "
                     f"({verdict(v['pass']['icl_ge_best_single_minus_0.03'])}); drops {drops} "
                     f"({verdict(v['pass']['classic_drop_more'])})")
    if "mixture_mean_drop" in t:
        v = t["mixture_mean_drop"]
        lines.append("  regret growth from single family to mixture (mean over families): "
                     + ", ".join(f"{m} {d:+.3f}" for m, d in v["drop"].items())
                     + f" (every tied classic grows more than icl: {verdict(v['pass']['classic_drop_more'])})")
    for train_on, v in t.get("unknown", {}).items():
        accs = ", ".join(f"{m} {a:.3f}" for m, a in v["acc"].items())
        lines.append(f"  unknown family, trained on {train_on}: {accs}; optimal {v['optimal']:.3f} "
                     f"(icl above every classic: {verdict(v['pass']['icl_above_every_classic'])})")
    for f, v in t["shift"].items():
        lines.append(f"  shift {f}: drop icl {v['drop']['icl']:+.3f}, optimal {v['drop']['optimal']:+.3f} "
                     f"(icl drops more: {verdict(v['pass']['icl_drops_more'])})")
    return "\n".join(lines)
