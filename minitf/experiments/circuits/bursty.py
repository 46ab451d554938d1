"""``bursty``: the in-context vs in-weights trade-off (Chan et al. 2022; Reddy 2023; Singh et al. 2023).

Trains on bursty (item, label) sequences and tracks, over training, ICL accuracy on
holdout classes (2-way, arbitrary labels), IWL accuracy (query class absent from context),
and the induction-head scores; at the end also what the labels in the demonstrations do —
random labels (Min et al. 2022), flipped and semantically-unrelated labels (Wei et al. 2023) —
and ICL with the induction heads ablated. ``--sweep`` runs a p_bursty × n_classes grid, draws
the ICL/IWL phase diagram and the flipped-label follow rate against the ICL-vs-IWL balance.
"""
import glob
import json
import os

import numpy as np
import torch

from minitf.config import ModelConfig, TrainConfig
from minitf.evaluate import answer_logprobs, kway_correct, mean_interval, proportion
from minitf.experiments.base import Experiment, RunContext
from minitf.fileio import atomic_write_json
from minitf.probes import ablate_heads, all_scores, repeated_random_tokens, select_heads
from minitf.report import format_table
from toy_tasks.bursty import EVAL_MODES, BurstyTask

EVAL_SEQUENCES = 400


class BurstyExperiment(Experiment):
    """``bursty``: one phase on ``BurstyTask`` sequences, tracking ICL accuracy (holdout classes,
    arbitrary labels) vs IWL accuracy and the induction scores (Chan et al. 2022); ``--sweep``
    runs p_bursty ∈ {0, 0.5, 0.9} × n_classes ∈ {64, 512}."""

    name = "bursty"
    description = "bursty few-shot classification: ICL on holdout classes vs IWL (Chan et al. 2022)"
    task_cls = BurstyTask
    sweep_grid = {"p_bursty": (0.0, 0.5, 0.9), "n_classes": (64, 512)}

    def default_model(self, task) -> ModelConfig:
        """2-layer attention-only, d_model 64, 4 heads of 16, vocab_size = the task's vocab,
        n_ctx = seq_len − 1."""
        return ModelConfig(n_layers=2, d_model=64, n_heads=4, d_head=16, d_mlp=0,
                           vocab_size=len(self.vocab(task)), n_ctx=task.seq_len - 1)

    def default_train(self) -> TrainConfig:
        """3000 steps of 64 sequences, lr 3e-3, 50 warmup steps, evaluations every 250 steps,
        checkpoints every 1000, a loss row every 25."""
        return TrainConfig(steps=3000, batch_size=64, lr=3e-3, warmup=50, eval_every=250, checkpoint_every=1000,
                           log_every=25)

    def max_seq_len(self, task) -> int:
        """``task.seq_len`` = 1 + 2·(n_pairs + 1) tokens."""
        return task.seq_len

    def run(self, ctx: RunContext) -> dict:
        """One phase, ``train``: ``task.sample`` with, at every evaluation, ``icl_acc`` / ``iwl_acc``
        (accuracy in [0, 1]), ``scores`` (``all_scores`` on repeated random items after ``<bos>``)
        and ``label_attention``. Then, on 400 sequences per mode: report keys ``results``
        ({icl, iwl, flipped, unrelated}: ``proportion`` records), ``scores`` (per-head
        [layer][head] lists, with ``label_attention``) and ``ablation`` (see ``ablation``)."""
        task, vocab = ctx.task, ctx.vocab
        evals = {m: task.evaluation(m, ctx.eval_rng(i), EVAL_SEQUENCES) for i, m in enumerate(EVAL_MODES)}
        items = vocab.encode([task.item(c, e) for c in range(task.n_classes) for e in range(task.exemplars)])
        segment = (ctx.model_cfg.n_ctx - 1) // 2
        probe = repeated_random_tokens(ctx.eval_rng(9), items, 64, segment, bos_id=vocab.index["<bos>"])

        def accuracy(model, mode):
            lp = answer_logprobs(model, evals[mode], vocab)
            return proportion(kway_correct(lp, evals[mode], vocab), 1 / len(evals[mode][0].candidates))

        def track(model, step):
            return {"icl_acc": accuracy(model, "icl")["acc"], "iwl_acc": accuracy(model, "iwl")["acc"],
                    "follow_rate": accuracy(model, "flipped")["acc"],
                    "scores": all_scores(model, probe, segment, start=1),
                    "label_attention": label_attention(model, evals["icl"], vocab)}

        model = ctx.new_model()
        ctx.train(model, task.sample, evaluate=track)
        model.eval()
        results = {m: accuracy(model, m) for m in EVAL_MODES}
        results["flipped"]["follow_rate"] = results["flipped"]["acc"]  # answers that follow the context
        labels = {"relabel_fraction": task.relabel_fraction, "follow_rate": results["flipped"]["acc"],
                  # Min et al.: what random demonstration labels cost on classes the weights know
                  "random_label_cost_trained": results["true_labels_trained"]["acc"]
                  - results["random_labels_trained"]["acc"], "sul": results["sul"]}
        scores = all_scores(model, probe, segment, start=1)
        scores["label_attention"] = label_attention(model, evals["icl"], vocab)
        curve = [{"step": r["step"], "follow_rate": r["eval"]["follow_rate"], "icl": r["eval"]["icl_acc"],
                  "iwl": r["eval"]["iwl_acc"]} for r in ctx.history("train") if "follow_rate" in r.get("eval", {})]
        return {"results": results, "scores": scores, "follow_rate_curve": curve, "labels": labels,
                "ablation": ablation(model, scores["label_attention"], lambda: accuracy(model, "icl")["acc"],
                                     seed=ctx.train_cfg.seed)}

    def summary(self, report: dict) -> str:
        """A table of the four evaluations (acc, 95% CI, chance, n), the induction heads and the
        ICL accuracy with all of them and with each single head ablated."""
        rows = [[m, r["acc"], f"[{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]", r["chance"], r["n"]]
                for m, r in report["results"].items()]
        out = format_table(["eval", "acc", "95% CI", "chance", "n"], rows, title=f"bursty — {report['architecture']}")
        a = report["ablation"]
        single = ", ".join(f"{k} {v:.2f}" for k, v in a["single_heads"].items())
        if "labels" in report:
            lab = report["labels"]
            out += (f"\n\nlabels (relabel_fraction {lab['relabel_fraction']}): flipped follow rate "
                    f"{lab['follow_rate']:.3f}; random-label cost on trained classes "
                    f"{lab['random_label_cost_trained']:+.3f}; SUL (label tokens) {lab['sul']['acc']:.3f}")
        out += (f"\n\ninduction heads (query → labels after earlier copies of the query item, ≥ 0.5 of "
                f"attention, any layer): {a['heads']}; ICL {a['icl_acc_before']:.3f} → {a['icl_acc']:.3f} with all "
                f"of them ablated" + (f", → {a['random_icl_acc']:.3f} with random heads {a['random_heads']} ablated"
                                      if "random_heads" in a else "")
                + f"\nICL with one head ablated: {single}")
        return out

    def plots_sweep(self, grid_keys) -> bool:
        """``--sweep``'s grid, and any ``--grid`` over p_bursty, n_classes and relabel_fraction."""
        return bool(grid_keys) and set(grid_keys) <= {"p_bursty", "n_classes", "relabel_fraction"}

    def sweep_plot(self, out: str, grid: list[dict]) -> None:
        """``out/phase_diagram.png``: ICL and IWL accuracy over the p_bursty × n_classes grid (when
        both vary); ``out/follow_rate.json`` (``follow_rate_sweep`` and ``label_sweep``, see those)
        and ``out/follow_rate.png``."""
        from minitf.experiments.circuits.plots import plot_follow_rate, plot_phase_diagram

        if grid and all("p_bursty" in g and "n_classes" in g for g in grid):
            plot_phase_diagram(out, grid)
        rows = follow_rate_sweep(out)
        atomic_write_json(os.path.join(out, "follow_rate.json"), {"follow_rate_sweep": rows,
                                                                   **label_sweep(out)})
        plot_follow_rate(out, rows)


def label_attention(model, examples, vocab) -> list[list[float]]:
    """Per head: attention from the query item to the labels that follow its earlier copies.

    The induction score *in the task's own format* (item, label, ..., query item → label):
    prefix-matching on repeated random items measures the same circuit on sequences the
    model never saw and can miss it (measured: ≤ 0.09 for heads that put 1.00 here)."""
    ids = torch.tensor([vocab.encode(e.tokens[: e.answer_pos]) for e in examples])
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(ids, names_filter=lambda n: n in names)
    mask = torch.zeros(ids.shape)  # 1 at labels whose preceding item equals the query item
    for row, e in enumerate(examples):
        query = e.tokens[e.answer_pos - 1]
        for pos in range(2, e.answer_pos - 1, 2):
            mask[row, pos] = float(e.tokens[pos - 1] == query)
    return [(cache[n][:, :, -1] * mask[:, None]).sum(-1).mean(0).tolist() for n in names]


def ablation(model, label_attn, icl_acc, threshold: float = 0.5, seed: int = 0) -> dict:
    """ICL accuracy with every induction head (label attention ≥ threshold in any layer; else
    the top one) zero-ablated together, with as many random other heads ablated (the control,
    ``random_heads`` / ``random_icl_acc``), and with each single head ablated."""
    heads = select_heads(label_attn, threshold=threshold, min_layer=0)
    out = {"heads": heads, "icl_acc_before": icl_acc(), "single_heads": {}}
    with ablate_heads(model, [tuple(h) for h in heads]):
        out["icl_acc"] = icl_acc()
    others = [[layer, h] for layer, row in enumerate(label_attn) for h in range(len(row)) if [layer, h] not in heads]
    if len(others) >= len(heads):
        rng = np.random.default_rng([seed, 4242])
        out["random_heads"] = [others[i] for i in rng.choice(len(others), len(heads), replace=False)]
        with ablate_heads(model, [tuple(h) for h in out["random_heads"]]):
            out["random_icl_acc"] = icl_acc()
    for layer, row in enumerate(label_attn):
        for h in range(len(row)):
            with ablate_heads(model, [(layer, h)]):
                out["single_heads"][f"L{layer}H{h}"] = icl_acc()
    return out


def follow_rate_sweep(out: str) -> list[dict]:
    """Wei et al. (2023)'s flipped-label curve, from every finished bursty run under ``out``: one
    row per run and evaluation step, ``{"setting": {p_bursty, n_classes, fresh_fraction, relabel_fraction,
    step}, "follow_rate",
    "icl", "iwl"}`` (rates in [0, 1]; ``follow_rate``: flipped-label answers that follow the
    context). Training steps, burstiness and the number of classes all move a model between
    ICL- and IWL-dominant, the from-scratch analogue of Wei's model scale."""
    rows = []
    for path in sorted(glob.glob(os.path.join(out, "**", "report.json"), recursive=True)):
        with open(path) as f:
            report = json.load(f)
        if report.get("experiment") != "bursty" or "follow_rate_curve" not in report:
            continue
        with open(os.path.join(os.path.dirname(path), "config.json")) as f:
            task = json.load(f)["task"]
        for point in report["follow_rate_curve"]:
            rows.append({"setting": {"p_bursty": task["p_bursty"], "n_classes": task["n_classes"],
                                     "fresh_fraction": task["fresh_fraction"],
                                     "relabel_fraction": task.get("relabel_fraction", 0.0), "step": point["step"]},
                         **{k: point[k] for k in ("follow_rate", "icl", "iwl")}})
    return rows


def label_sweep(out: str) -> dict:
    """The label study over ``relabel_fraction`` from every finished bursty run under ``out``:
    ``{"label_sweep": [{"relabel_fraction", "n_runs", "follow_rate", "random_label_cost_trained",
    "sul"}], "label_targets": {...}}``, each figure the mean over the runs (seeds) of that
    fraction with a 95% t-interval (``[lo, hi]``; a single run: the value twice). Targets: the
    follow rate rises monotonically with the fraction and is ≥ 0.5 at the largest (≥ 0.3); the
    random-label cost on trained classes rises with it (Min et al.'s "small cost" and Wei et
    al.'s "following flips" as two ends of one knob). Empty when no run has ``labels``."""
    by_fraction = {}
    for path in sorted(glob.glob(os.path.join(out, "**", "report.json"), recursive=True)):
        with open(path) as f:
            report = json.load(f)
        if report.get("experiment") == "bursty" and "labels" in report:
            by_fraction.setdefault(report["labels"]["relabel_fraction"], []).append(report["labels"])
    if not by_fraction:
        return {}

    def mean_ci(values):
        mean, half = mean_interval(values)
        return {"mean": mean, "ci95": [mean - half, mean + half]}

    rows = [{"relabel_fraction": frac, "n_runs": len(labs),
             "follow_rate": mean_ci([lab["follow_rate"] for lab in labs]),
             "random_label_cost_trained": mean_ci([lab["random_label_cost_trained"] for lab in labs]),
             "sul": mean_ci([lab["sul"]["acc"] for lab in labs])} for frac, labs in sorted(by_fraction.items())]
    follow = [r["follow_rate"]["mean"] for r in rows]
    cost = [r["random_label_cost_trained"]["mean"] for r in rows]
    targets = {"pass": {"follow_rate_rises": len(rows) > 1 and all(b > a for a, b in zip(follow, follow[1:])),
                        "follow_rate_ge_0.5_at_0.3": rows[-1]["relabel_fraction"] >= 0.3 and follow[-1] >= 0.5,
                        "random_label_cost_rises": len(rows) > 1 and all(b > a for a, b in zip(cost, cost[1:]))}}
    return {"label_sweep": rows, "label_targets": targets}
