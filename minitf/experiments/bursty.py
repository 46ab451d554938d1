"""``bursty``: the in-context vs in-weights trade-off (Chan et al. 2022; Reddy 2023; Singh et al. 2023).

Trains on bursty (item, label) sequences and tracks, over training, ICL accuracy on
holdout classes (2-way, arbitrary labels), IWL accuracy (query class absent from context),
and the induction-head scores; at the end also flipped labels and unrelated labels, and
ICL with the top induction head ablated. ``--sweep`` runs a p_bursty × n_classes grid and
draws the ICL/IWL phase diagram.
"""
import os

import numpy as np

from minitf.config import ModelConfig, TrainConfig
from minitf.evaluate import answer_logprobs, kway_correct, proportion
from minitf.experiments.base import Experiment, RunContext, run_experiment
from minitf.experiments.induction import top_head
from minitf.probes import ablate_heads, all_scores, repeated_random_tokens
from minitf.report import format_table
from toy_tasks.bursty import EVAL_MODES, BurstyTask

EVAL_SEQUENCES = 400
SWEEP = {"p_bursty": (0.0, 0.5, 0.9), "n_classes": (64, 512)}


class BurstyExperiment(Experiment):
    name = "bursty"
    description = "bursty few-shot classification: ICL on holdout classes vs IWL (Chan et al. 2022)"
    task_cls = BurstyTask

    def default_model(self, task) -> ModelConfig:
        return ModelConfig(n_layers=2, d_model=64, n_heads=4, d_head=16, d_mlp=0,
                           vocab_size=len(self.vocab(task)), n_ctx=task.seq_len - 1)

    def default_train(self) -> TrainConfig:
        return TrainConfig(steps=1500, batch_size=64, lr=3e-3, warmup=50, eval_every=100, checkpoint_every=500,
                           log_every=25)

    def max_seq_len(self, task) -> int:
        return task.seq_len

    def run(self, ctx: RunContext) -> dict:
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
                    "scores": all_scores(model, probe, segment, start=1)}

        model = ctx.new_model()
        ctx.train(model, task.sample, evaluate=track)
        model.eval()
        results = {m: accuracy(model, m) for m in EVAL_MODES}
        scores = all_scores(model, probe, segment, start=1)
        head = top_head(scores["prefix_matching"], min_layer=1)
        ablation = None
        if head is not None:
            with ablate_heads(model, [tuple(head)]):
                ablated = accuracy(model, "icl")["acc"]
            ablation = {"heads": [head], "icl_acc": ablated, "icl_acc_before": results["icl"]["acc"]}
        return {"results": results, "scores": scores, "ablation": ablation}

    def summary(self, report: dict) -> str:
        rows = [[m, r["acc"], f"[{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]", r["chance"], r["n"]]
                for m, r in report["results"].items()]
        out = format_table(["eval", "acc", "95% CI", "chance", "n"], rows, title=f"bursty — {report['architecture']}")
        if report["ablation"]:
            a = report["ablation"]
            out += (f"\n\nablating the top induction head L{a['heads'][0][0]}H{a['heads'][0][1]}: ICL "
                    f"{a['icl_acc_before']:.3f} → {a['icl_acc']:.3f}")
        return out

    def sweep(self, out: str, seed: int | None, overrides: list[str], overwrite: bool) -> dict:
        """Run the p_bursty × n_classes grid; writes sweep.json and phase_diagram.png in ``out``."""
        from minitf.fileio import atomic_write_json

        os.makedirs(out, exist_ok=True)
        grid = []
        for p in SWEEP["p_bursty"]:
            for k in SWEEP["n_classes"]:
                run_dir = os.path.join(out, f"p{p}-K{k}")
                report = run_experiment(self, out=run_dir, seed=seed, overwrite=overwrite, quiet=True,
                                        overrides=[*overrides, f"p_bursty={p}", f"n_classes={k}"])
                grid.append({"p_bursty": p, "n_classes": k, "icl": report["results"]["icl"]["acc"],
                             "iwl": report["results"]["iwl"]["acc"]})
                print(f"p_bursty={p} K={k}: ICL {grid[-1]['icl']:.3f}  IWL {grid[-1]['iwl']:.3f}", flush=True)
        atomic_write_json(os.path.join(out, "sweep.json"), {"grid": grid})
        plot_phase_diagram(out, grid)
        return {"grid": grid}


def plot_phase_diagram(out: str, grid: list[dict]) -> None:
    import matplotlib.pyplot as plt

    ps, ks = sorted({g["p_bursty"] for g in grid}), sorted({g["n_classes"] for g in grid})
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    for ax, key in zip(axes, ("icl", "iwl")):
        arr = np.array([[next(g[key] for g in grid if g["p_bursty"] == p and g["n_classes"] == k) for k in ks]
                        for p in ps])
        im = ax.imshow(arr, vmin=0, vmax=1, origin="lower", cmap="magma")
        ax.set_xticks(range(len(ks)), [str(k) for k in ks])
        ax.set_yticks(range(len(ps)), [str(p) for p in ps])
        ax.set_xlabel("n_classes K")
        ax.set_ylabel("p_bursty")
        ax.set_title(f"{key.upper()} accuracy")
        for (i, j), v in np.ndenumerate(arr):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="c")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "phase_diagram.png"), dpi=90)
    plt.close(fig)

